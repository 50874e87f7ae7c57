"""label tasks and annotations carry the Label Studio instance they belong to; a chat may have
several tasks over time (skipped and re-queued, deleted, superseded by a changed text, moved by
a resync), one of them active

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 10:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = "state IN ('pending', 'pushed', 'annotated', 'skipped')"


def upgrade() -> None:
    with op.batch_alter_table("labeltask") as batch:
        batch.drop_constraint("uq_label_task", type_="unique")
        batch.add_column(
            sa.Column(
                "ls_instance",
                sqlmodel.sql.sqltypes.AutoString(length=128),
                nullable=False,
                server_default="",
            )
        )
        batch.add_column(sa.Column("state_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.create_index(
        "uq_label_task_active",
        "labeltask",
        ["chat_id", "project_id"],
        unique=True,
        sqlite_where=sa.text(ACTIVE),
        postgresql_where=sa.text(ACTIVE),
    )
    with op.batch_alter_table("annotation") as batch:
        batch.drop_constraint("uq_annotation_ls_id", type_="unique")
        batch.add_column(
            sa.Column(
                "ls_instance",
                sqlmodel.sql.sqltypes.AutoString(length=128),
                nullable=False,
                server_default="",
            )
        )
        batch.create_unique_constraint(
            "uq_annotation_instance_ls_id", ["ls_instance", "ls_annotation_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("annotation") as batch:
        batch.drop_constraint("uq_annotation_instance_ls_id", type_="unique")
        batch.drop_column("ls_instance")
        batch.create_unique_constraint("uq_annotation_ls_id", ["ls_annotation_id"])
    op.drop_index("uq_label_task_active", table_name="labeltask")
    with op.batch_alter_table("labeltask") as batch:
        batch.drop_column("state_at")
        batch.drop_column("ls_instance")
        batch.create_unique_constraint("uq_label_task", ["chat_id", "project_id"])
