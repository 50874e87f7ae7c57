"""Distillation: a student records its teacher and the unlabelled chats it learned the
teacher's labels on; an erasure records the store ids of the chats it removed, so a version
that learned one of them unlabelled is flagged too

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("modelversion") as batch:
        batch.add_column(sa.Column("teacher", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("pool_chat_ids", sa.JSON(), nullable=False, server_default="[]"))
    # erasures made before this did not keep chat ids: their annotations still flag versions
    with op.batch_alter_table("erasure") as batch:
        batch.add_column(sa.Column("chat_ids", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("erasure") as batch:
        batch.drop_column("chat_ids")
    with op.batch_alter_table("modelversion") as batch:
        batch.drop_column("pool_chat_ids")
        batch.drop_column("teacher")
