"""lead imports

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 18:26:18.266640
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "lead_imports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("origin", sa.String(length=12), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["members.id"], name=op.f("fk_lead_imports_actor_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_imports")),
    )
    with op.batch_alter_table("lead_imports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lead_imports_state"), ["state"], unique=False)

    op.create_table(
        "lead_import_rows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("import_id", sa.Integer(), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("problem", sa.JSON(), nullable=True),
        sa.Column("raw", sa.JSON(), nullable=True),
        sa.Column("company", sa.String(length=200), nullable=True),
        sa.Column("contact", sa.String(length=64), nullable=True),
        sa.Column("phone", sa.String(length=24), nullable=True),
        sa.Column("landline", sa.String(length=24), nullable=True),
        sa.Column("email", sa.String(length=200), nullable=True),
        sa.Column("industry", sa.String(length=32), nullable=True),
        sa.Column("urgency", sa.String(length=8), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("first_contact_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("employees", sa.Integer(), nullable=True),
        sa.Column("external_id", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["lead_imports.id"],
            name=op.f("fk_lead_import_rows_import_id_lead_imports"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_import_rows")),
    )
    with op.batch_alter_table("lead_import_rows", schema=None) as batch_op:
        batch_op.create_index(
            "ix_lead_import_rows_import_status", ["import_id", "status"], unique=False
        )

    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("landline", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("employees", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("first_contact_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("import_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_leads_import_id"), ["import_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_leads_landline"), ["landline"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_leads_import_id_lead_imports"), "lead_imports", ["import_id"], ["id"]
        )


def downgrade() -> None:

    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_leads_import_id_lead_imports"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_leads_landline"))
        batch_op.drop_index(batch_op.f("ix_leads_import_id"))
        batch_op.drop_column("import_id")
        batch_op.drop_column("first_contact_at")
        batch_op.drop_column("employees")
        batch_op.drop_column("landline")

    with op.batch_alter_table("lead_import_rows", schema=None) as batch_op:
        batch_op.drop_index("ix_lead_import_rows_import_status")

    op.drop_table("lead_import_rows")
    with op.batch_alter_table("lead_imports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lead_imports_state"))

    op.drop_table("lead_imports")
