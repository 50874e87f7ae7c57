"""cycle runs record the lease they ran under (a run whose worker died is recognised);
loop state (automatic promotion paused by a manual rollback)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 10:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cyclerun") as batch:
        batch.add_column(
            sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True)
        )
    op.create_table(
        "loopstate",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("loopstate")
    with op.batch_alter_table("cyclerun") as batch:
        batch.drop_column("owner")
