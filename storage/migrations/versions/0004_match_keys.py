"""match keys for duplicate detection

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 10:12:40.118263

Key columns on leads and customers, the company-core grams, customers.merged_into_id;
the keys of the rows already stored are computed here (handlers.matching.index_values).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_KEYS = (("phone_key", 24), ("email_key", 200), ("company_full", 200), ("company_core", 200),
         ("contact_key", 64))
_BATCH = 2000


def _add_keys(table: str) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        for name, length in _KEYS:
            batch_op.add_column(sa.Column(name, sa.String(length=length), nullable=True))
        for name, _ in _KEYS:
            batch_op.create_index(batch_op.f(f"ix_{table}_{name}"), [name], unique=False)


def _backfill(kind: str, table: str, columns: str) -> None:
    from handlers.matching import index_values, update_keys_statement

    bind = op.get_bind()
    target = sa.Table(table, sa.MetaData(), *(sa.Column(n) for n in ("id", *dict(_KEYS))))
    grams = sa.table("match_grams", sa.column("kind"), sa.column("object_id"),
                     sa.column("gram"))
    after = 0
    while True:
        rows = bind.execute(sa.text(
            f"SELECT id, {columns} FROM {table} WHERE id > :after ORDER BY id LIMIT :n"),
            {"after": after, "n": _BATCH}).all()
        if not rows:
            return
        updates, gram_rows = index_values(kind, rows)
        bind.execute(update_keys_statement(target), updates)
        if gram_rows:
            bind.execute(grams.insert(), gram_rows)
        after = rows[-1][0]


def upgrade() -> None:

    op.create_table(
        "match_grams",
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("object_id", sa.Integer(), nullable=False),
        sa.Column("gram", sa.String(length=8), nullable=False),
        sa.PrimaryKeyConstraint("kind", "object_id", "gram", name=op.f("pk_match_grams")),
    )
    with op.batch_alter_table("match_grams", schema=None) as batch_op:
        batch_op.create_index("ix_match_grams_gram", ["gram", "kind", "object_id"],
                              unique=False)

    _add_keys("leads")
    _add_keys("customers")
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("merged_into_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_customers_merged_into_id"), ["merged_into_id"],
                              unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_customers_merged_into_id_customers"), "customers",
            ["merged_into_id"], ["id"])

    _backfill("lead", "leads", "company, contact, phone, landline, email")
    _backfill("customer", "customers", "company, contact, phone, email")


def downgrade() -> None:

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_customers_merged_into_id_customers"),
                                 type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_customers_merged_into_id"))
        batch_op.drop_column("merged_into_id")
    for table in ("customers", "leads"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, _ in reversed(_KEYS):
                batch_op.drop_index(batch_op.f(f"ix_{table}_{name}"))
                batch_op.drop_column(name)

    with op.batch_alter_table("match_grams", schema=None) as batch_op:
        batch_op.drop_index("ix_match_grams_gram")
    op.drop_table("match_grams")
