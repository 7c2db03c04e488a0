"""enquiries, the customer an approval card offered, match keys computed anew

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 23:00:00.000000

The company keys changed (a place and generic words keep the place: 北京大学; stray
punctuation, invisible characters, Latin region names): the stored keys and grams of
every lead and customer whose keys differ are written again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_BATCH = 2000
_KEYS = ("phone_key", "email_key", "company_full", "company_core", "contact_key")


def _rekey(kind: str, table: str, columns: str) -> None:
    from handlers.matching import index_values, update_keys_statement

    bind = op.get_bind()
    target = sa.Table(table, sa.MetaData(), *(sa.Column(n) for n in ("id", *_KEYS)))
    grams = sa.table("match_grams", sa.column("kind"), sa.column("object_id"),
                     sa.column("gram"))
    after = 0
    while True:
        rows = bind.execute(sa.text(
            f"SELECT id, {columns}, {', '.join(_KEYS)} FROM {table} WHERE id > :after "
            "ORDER BY id LIMIT :n"), {"after": after, "n": _BATCH}).all()
        if not rows:
            return
        width = len(rows[0]) - len(_KEYS)
        updates, gram_rows = index_values(kind, [row[:width] for row in rows])
        stored = {row[0]: tuple(row[width:]) for row in rows}
        changed = [u for u in updates
                   if tuple(u[f"k_{c}"] for c in _KEYS) != stored[u["k_id"]]]
        if changed:
            ids = [u["k_id"] for u in changed]
            bind.execute(update_keys_statement(target), changed)
            bind.execute(sa.delete(grams).where(grams.c.kind == kind,
                                                grams.c.object_id.in_(ids)))
            fresh = [g for g in gram_rows if g["object_id"] in set(ids)]
            if fresh:
                bind.execute(grams.insert(), fresh)
        after = rows[-1][0]


def upgrade() -> None:
    op.create_table(
        "enquiries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("object_id", sa.Integer(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enquiries")),
        sa.UniqueConstraint("external_id", name=op.f("uq_enquiries_external_id")),
    )
    with op.batch_alter_table("enquiries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enquiries_object_id"), ["object_id"],
                              unique=False)
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("customer_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_approvals_customer_id_customers"), "customers",
            ["customer_id"], ["id"])
    _rekey("lead", "leads", "company, contact, phone, landline, email")
    _rekey("customer", "customers", "company, contact, phone, email")


def downgrade() -> None:
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_approvals_customer_id_customers"),
                                 type_="foreignkey")
        batch_op.drop_column("customer_id")
    with op.batch_alter_table("enquiries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enquiries_object_id"))
    op.drop_table("enquiries")
