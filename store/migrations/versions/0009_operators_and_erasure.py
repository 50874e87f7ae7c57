"""Operator accounts with roles (the audit names them), erasures on request, and who made
and revoked each API key

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_name = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "operator",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", _name(length=64), nullable=False),
        sa.Column("role", _name(length=32), nullable=False),
        sa.Column("key_hash", _name(length=64), nullable=False),
        sa.Column("prefix", _name(length=16), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("created_by", _name(length=64), nullable=True),
        sa.Column("revoked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("revoked_by", _name(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_index(
        "uq_operator_active_name",
        "operator",
        ["name"],
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.create_table(
        "erasure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("actor", _name(length=64), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=True),
        sa.Column("reason", _name(), nullable=False),
        sa.Column("selector", _name(length=16), nullable=False),
        sa.Column("chats", sa.Integer(), nullable=False),
        sa.Column("annotations", sa.Integer(), nullable=False),
        sa.Column("predictions", sa.Integer(), nullable=False),
        sa.Column("label_studio_tasks", sa.Integer(), nullable=False),
        sa.Column("annotation_ids", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["operator_id"], ["operator.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "erasedsource",
        sa.Column("source_hash", _name(length=64), nullable=False),
        sa.Column("erasure_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["erasure_id"], ["erasure.id"]),
        sa.PrimaryKeyConstraint("source_hash"),
    )
    op.create_index("ix_erasedsource_erasure_id", "erasedsource", ["erasure_id"])
    with op.batch_alter_table("promotion") as batch:
        batch.add_column(sa.Column("operator_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_promotion_operator", "operator", ["operator_id"], ["id"])
    with op.batch_alter_table("apikey") as batch:
        batch.add_column(sa.Column("created_by", _name(length=64), nullable=True))
        batch.add_column(sa.Column("revoked_by", _name(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("apikey") as batch:
        batch.drop_column("revoked_by")
        batch.drop_column("created_by")
    with op.batch_alter_table("promotion") as batch:
        batch.drop_constraint("fk_promotion_operator", type_="foreignkey")
        batch.drop_column("operator_id")
    op.drop_index("ix_erasedsource_erasure_id", table_name="erasedsource")
    op.drop_table("erasedsource")
    op.drop_table("erasure")
    op.drop_index("uq_operator_active_name", table_name="operator")
    op.drop_table("operator")
