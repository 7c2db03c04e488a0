"""lead_import_rows: the match keys, computed once at the check, copied at publish

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 22:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_KEYS = (("phone_key", 24), ("email_key", 200), ("company_full", 200),
         ("company_core", 200), ("contact_key", 64))


def upgrade() -> None:
    # Rows staged before this revision have no keys; their leads get them from the
    # matcher's index_rows when published (handlers.lead_import).
    with op.batch_alter_table("lead_import_rows", schema=None) as batch_op:
        for name, length in _KEYS:
            batch_op.add_column(sa.Column(name, sa.String(length=length), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lead_import_rows", schema=None) as batch_op:
        for name, _ in reversed(_KEYS):
            batch_op.drop_column(name)
