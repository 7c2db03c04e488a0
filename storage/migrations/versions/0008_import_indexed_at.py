"""lead_imports.indexed_at (the grams of an import's leads come from the sweep); three
lead indexes no query uses


Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 00:00:00.000000

Imports published before this revision were indexed as they were published. Every index
of `leads` is written for each row an import publishes in its one step: leads are found
by phone_key, never by the phone as typed, nor by landline or company_full.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_UNUSED = ("phone", "landline", "company_full")


def upgrade() -> None:
    with op.batch_alter_table("lead_imports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE lead_imports SET indexed_at = updated_at WHERE state = 'published'")
    with op.batch_alter_table("leads", schema=None) as batch_op:
        for name in _UNUSED:
            batch_op.drop_index(batch_op.f(f"ix_leads_{name}"))


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        for name in _UNUSED:
            batch_op.create_index(batch_op.f(f"ix_leads_{name}"), [name], unique=False)
    with op.batch_alter_table("lead_imports", schema=None) as batch_op:
        batch_op.drop_column("indexed_at")
