"""selection rounds: strategy, options, model and stopping signal of each batch

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "selectionround",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("cycle_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("strategy", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("candidates", sa.Integer(), nullable=False),
        sa.Column("requested", sa.Integer(), nullable=False),
        sa.Column("chosen", sa.Integer(), nullable=False),
        sa.Column("stopping", sa.JSON(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("selectionround", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_selectionround_project_id"), ["project_id"], unique=False
        )
    with op.batch_alter_table("labeltask", schema=None) as batch_op:
        batch_op.add_column(sa.Column("round_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_labeltask_round_id"), ["round_id"], unique=False)
        batch_op.create_foreign_key(
            "fk_labeltask_round_id_selectionround", "selectionround", ["round_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("labeltask", schema=None) as batch_op:
        batch_op.drop_constraint("fk_labeltask_round_id_selectionround", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_labeltask_round_id"))
        batch_op.drop_column("round_id")
    with op.batch_alter_table("selectionround", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_selectionround_project_id"))
    op.drop_table("selectionround")
