"""registry: modes, calibration, gate, audit, one production

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 18:44:46.321043
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "promotion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("previous", sa.Integer(), nullable=True),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("gate", sa.JSON(), nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("promotion", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_promotion_version"), ["version"], unique=False)

    with op.batch_alter_table("modelversion", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "mode",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                nullable=False,
                server_default="full",
            )
        )
        batch_op.add_column(
            sa.Column("temperature", sa.Float(), nullable=False, server_default="1.0")
        )
        batch_op.add_column(sa.Column("gate", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(
            sa.Column("checkpoint_deleted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index(
            "uq_modelversion_one_production",
            ["status"],
            unique=True,
            sqlite_where=sa.text("status = 'production'"),
            postgresql_where=sa.text("status = 'production'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("modelversion", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_modelversion_one_production",
            sqlite_where=sa.text("status = 'production'"),
            postgresql_where=sa.text("status = 'production'"),
        )
        batch_op.drop_column("checkpoint_deleted")
        batch_op.drop_column("gate")
        batch_op.drop_column("temperature")
        batch_op.drop_column("mode")

    with op.batch_alter_table("promotion", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_promotion_version"))

    op.drop_table("promotion")
