"""Each version's lineage records the revision of every annotation it learned, so a label
edited while a version trained counts as new for the next one

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # versions trained before this kept no revisions: an empty map (see VersionStore.learned)
    with op.batch_alter_table("modelversion") as batch:
        batch.add_column(
            sa.Column("annotation_revisions", sa.JSON(), nullable=False, server_default="{}")
        )


def downgrade() -> None:
    with op.batch_alter_table("modelversion") as batch:
        batch.drop_column("annotation_revisions")
