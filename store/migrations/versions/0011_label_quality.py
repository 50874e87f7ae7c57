"""Label quality: a task asks one or several annotators (overlap), an annotation keeps its
lead time, and the consensus of a chat's several answers is stored with its quality

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("labeltask") as batch:
        batch.add_column(sa.Column("overlap", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("annotation") as batch:
        batch.add_column(sa.Column("lead_time", sa.Float(), nullable=True))
    op.create_table(
        "consensuslabel",
        sa.Column("chat_id", sa.Integer(), nullable=False),
        sa.Column("label", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("quality", sa.Float(), nullable=False),
        sa.Column("agreement", sa.Float(), nullable=False),
        sa.Column("votes", sa.Integer(), nullable=False),
        sa.Column("method", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("answers", sa.JSON(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("decided_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["chat_id"], ["chat.id"]),
        sa.PrimaryKeyConstraint("chat_id"),
    )


def downgrade() -> None:
    op.drop_table("consensuslabel")
    with op.batch_alter_table("annotation") as batch:
        batch.drop_column("lead_time")
    with op.batch_alter_table("labeltask") as batch:
        batch.drop_column("overlap")
