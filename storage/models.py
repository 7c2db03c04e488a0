"""SQLAlchemy 2 models: the roster, leads and their life, cards, inbound events, the outbox.

Owns the schema only; queries that mean something in the sales domain live in
storage/repo.py and in the handlers. Every timestamp is stored in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Member(Base):
    """A roster member: rep, manager, admin, service or marketing."""

    __tablename__ = "members"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    wecom_userid: Mapped[str | None] = mapped_column(String(64), unique=True)
    dingtalk_userid: Mapped[str | None] = mapped_column(String(64), unique=True)
    mobile: Mapped[str | None] = mapped_column(String(20))
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    industries: Mapped[list[Any]] = mapped_column(default=list)
    team: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(8), default="active")
    max_open_leads: Mapped[int | None] = mapped_column(Integer)
    channel: Mapped[str | None] = mapped_column(String(16))
    # Duty: "on" after /上班, "off" after /下班; both lapse at local midnight.
    duty: Mapped[str | None] = mapped_column(String(4))
    duty_at: Mapped[datetime | None]
    leave_until: Mapped[datetime | None]
    # The last chat activity counted as presence (written at most every few minutes).
    last_seen_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Presence(Base):
    """A sign that a rep was at work: /上班 ("on"), /下班 ("off"), a message ("active").

    Today's online time is computed from these rows (handlers.engine.online_minutes).
    """

    __tablename__ = "presence"
    __table_args__ = (Index("ix_presence_member_at", "member_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (Index("ix_leads_assignee_status", "assignee_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    company: Mapped[str] = mapped_column(String(200))
    contact: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(24))
    email: Mapped[str | None] = mapped_column(String(200))
    industry: Mapped[str | None] = mapped_column(String(32))
    urgency: Mapped[str | None] = mapped_column(String(8))
    source: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(String(12), default="new", index=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    origin: Mapped[str] = mapped_column(String(12), default="api")
    reroutes: Mapped[int] = mapped_column(default=0)
    lost_reason: Mapped[str | None] = mapped_column(Text)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    landline: Mapped[str | None] = mapped_column(String(24))
    employees: Mapped[int | None] = mapped_column(Integer)
    first_contact_at: Mapped[datetime | None]
    import_id: Mapped[int | None] = mapped_column(ForeignKey("lead_imports.id"), index=True)
    # Returns to the public pool (公海) so far: each one is routed again as `new`.
    pool_returns: Mapped[int] = mapped_column(default=0)
    # Match keys (handlers.matching keeps them current): blocking for duplicate checks.
    phone_key: Mapped[str | None] = mapped_column(String(24), index=True)
    email_key: Mapped[str | None] = mapped_column(String(200), index=True)
    company_full: Mapped[str | None] = mapped_column(String(200))
    company_core: Mapped[str | None] = mapped_column(String(200), index=True)
    contact_key: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    assigned_at: Mapped[datetime | None]
    accepted_at: Mapped[datetime | None]
    contacted_at: Mapped[datetime | None]
    last_activity_at: Mapped[datetime | None]


class LeadStatusChange(Base):
    """The lead's status history: every transition, who caused it, and why."""

    __tablename__ = "lead_status_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(12))
    to_status: Mapped[str] = mapped_column(String(12))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Assignment(Base):
    """One offer of a lead to a rep and how it ended."""

    __tablename__ = "assignments"
    __table_args__ = (
        Index("ix_assignments_member_state", "member_id", "state"),
        Index("ix_assignments_member_offered", "member_id", "offered_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    # offered → accepted | declined | expired | transferred | withdrawn;
    # accepted → sla_missed (no first contact within the SLA: taken back and re-routed)
    state: Mapped[str] = mapped_column(String(12), default="offered", index=True)
    method: Mapped[str] = mapped_column(String(16), default="round_robin")
    why: Mapped[str | None] = mapped_column(Text)
    # The engine's full breakdown: weights, every candidate's factors and score.
    scores: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("rules.id"), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    card_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"))
    # Set with the card before either is flushed: one INSERT each at commit.
    card: Mapped[Card | None] = relationship(lazy="raise")
    offered_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))


class Rule(Base):
    """An assignment rule, as the admin typed it and as parsed (handlers.rules).

    Deleting a rule keeps the row (`deleted_at`) so past assignments still name it.
    """

    __tablename__ = "rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    parsed: Mapped[dict[str, Any]] = mapped_column()
    enabled: Mapped[bool] = mapped_column(default=True)
    position: Mapped[int] = mapped_column(default=0)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None]


class Customer(Base):
    """A customer, created only by an approved conversion (or, later, a merge)."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    company: Mapped[str] = mapped_column(String(200))
    contact: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(24), index=True)
    email: Mapped[str | None] = mapped_column(String(200))
    industry: Mapped[str | None] = mapped_column(String(32))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    lead_id: Mapped[int | None] = mapped_column(Integer, index=True)
    # active, or merged: then merged_into_id names the customer it was merged into.
    status: Mapped[str] = mapped_column(String(12), default="active")
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    # Match keys (handlers.matching keeps them current): blocking for duplicate checks.
    phone_key: Mapped[str | None] = mapped_column(String(24), index=True)
    email_key: Mapped[str | None] = mapped_column(String(200), index=True)
    company_full: Mapped[str | None] = mapped_column(String(200), index=True)
    company_core: Mapped[str | None] = mapped_column(String(200), index=True)
    contact_key: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class MatchGram(Base):
    """The character bigrams of a lead's or customer's company core, for fuzzy blocking:
    records sharing a rare gram are compared (handlers.matching)."""

    __tablename__ = "match_grams"
    __table_args__ = (Index("ix_match_grams_gram", "gram", "kind", "object_id"),)

    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # lead | customer
    object_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gram: Mapped[str] = mapped_column(String(8), primary_key=True)


class Approval(Base):
    """A request a manager decides on a card (a lead's conversion into a customer)."""

    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_object", "kind", "object_id", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[int] = mapped_column(Integer)
    requester_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    # pending → approved | rejected | withdrawn
    state: Mapped[str] = mapped_column(String(10), default="pending")
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    # The similar customer the card offered to link to: a click links to this one.
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]


class Enquiry(Base):
    """A lead posted again for a lead or customer we have (a strong match at the door):
    nothing new is created, but the enquiry is kept and its owner told. Its external_id
    answers a repeated post like a lead's does."""

    __tablename__ = "enquiries"

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # lead | customer
    object_id: Mapped[int] = mapped_column(Integer, index=True)
    origin: Mapped[str] = mapped_column(String(16))
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class LeadImport(Base):
    """One spreadsheet import: checked, then written all at once, or cancelled."""

    __tablename__ = "lead_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    filename: Mapped[str] = mapped_column(String(255))
    origin: Mapped[str] = mapped_column(String(12), default="cli")  # cli | chat
    # checking → checked → writing → published | cancelled | failed
    state: Mapped[str] = mapped_column(String(12), default="checking", index=True)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # accepted, written, rejected, duplicates, warnings (counts)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    # When the published leads' company grams (for /查客户) were written: the sweep does it
    # after the import, off its path.
    indexed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LeadImportRow(Base):
    """The staging table: every checked row of an import, typed like a lead.

    Valid rows are published into `leads` with one INSERT … SELECT; rejected and duplicate
    rows keep their cells and the reason, for the report sent back to the importer.
    """

    __tablename__ = "lead_import_rows"
    __table_args__ = (Index("ix_lead_import_rows_import_status", "import_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    import_id: Mapped[int] = mapped_column(ForeignKey("lead_imports.id"))
    row_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(10))  # valid | rejected | duplicate
    problem: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    company: Mapped[str | None] = mapped_column(String(200))
    contact: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(24))
    landline: Mapped[str | None] = mapped_column(String(24))
    email: Mapped[str | None] = mapped_column(String(200))
    industry: Mapped[str | None] = mapped_column(String(32))
    urgency: Mapped[str | None] = mapped_column(String(8))
    source: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    owner_id: Mapped[int | None] = mapped_column(Integer)
    first_contact_at: Mapped[datetime | None]
    employees: Mapped[int | None] = mapped_column(Integer)
    external_id: Mapped[str | None] = mapped_column(String(128))
    # The match keys, computed once at the check and copied into the leads at publish.
    phone_key: Mapped[str | None] = mapped_column(String(24))
    email_key: Mapped[str | None] = mapped_column(String(200))
    company_full: Mapped[str | None] = mapped_column(String(200))
    company_core: Mapped[str | None] = mapped_column(String(200))
    contact_key: Mapped[str | None] = mapped_column(String(64))


class FollowUp(Base):
    """A follow-up or interaction, on a lead or (with no lead) on a customer."""

    __tablename__ = "follow_ups"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(16), default="note")
    content: Mapped[str] = mapped_column(Text)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_events.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Card(Base):
    """A card we sent: its neutral content, its state, and the platform handles to update it.

    `ref` is our platform idempotency key (WeCom task_id, DingTalk outTrackId).
    """

    __tablename__ = "cards"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[int | None] = mapped_column(Integer, index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(12), default="open")
    body: Mapped[dict[str, Any]] = mapped_column()
    response_code: Mapped[str | None] = mapped_column(String(256))
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class InboundEvent(Base):
    """Every inbound message or event, recorded before it is acknowledged.

    The unique (channel, key) pair makes repeated deliveries harmless across workers and
    restarts; `state` makes the table the work queue for the dispatcher.
    """

    __tablename__ = "inbound_events"
    __table_args__ = (UniqueConstraint("channel", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(24))
    sender: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column()
    # received → done | failed
    state: Mapped[str] = mapped_column(String(10), default="received", index=True)
    outcome: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]


class Outgoing(Base):
    """The outbox: one row per message to one recipient, written with the change behind it."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "state", "next_at"),
        Index("ix_outbox_recipient_sent", "recipient", "sent_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    # "member:<id>" for one-to-one, "group:<team>" for a team channel.
    recipient: Mapped[str] = mapped_column(String(80))
    # text | markdown | card | card_update
    kind: Mapped[str] = mapped_column(String(12))
    payload: Mapped[dict[str, Any]] = mapped_column()
    card_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"))
    card: Mapped[Card | None] = relationship(lazy="raise")
    dedupe_key: Mapped[str] = mapped_column(String(128), unique=True)
    # pending → sending → sent | failed | folded
    state: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]


class PendingReply(Base):
    """What the bot is waiting for from a member (a decline reason, a colleague's name)."""

    __tablename__ = "pending_replies"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AccessToken(Base):
    """Platform access tokens shared by every process (one refresh for all of them)."""

    __tablename__ = "access_tokens"

    app: Mapped[str] = mapped_column(String(128), primary_key=True)
    token: Mapped[str] = mapped_column(String(512))
    expires_at: Mapped[datetime]
    refreshed_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConfigValue(Base):
    """A live configuration value an admin set by command; it outranks the settings."""

    __tablename__ = "config_values"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column()
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Alert(Base):
    """An episode the admins were told about once (credentials, queue, engine)."""

    __tablename__ = "alerts"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    detail: Mapped[str | None] = mapped_column(Text)


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32), index=True)
    object_type: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[str | None] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class MergeScan(Base):
    """One duplicate scan (the monthly review or /合并扫描) and the figures it found.

    `groups` keeps the customer ids of every group it proposed (the remembered
    not-duplicates left out): what it found, as found. The duplicate rate "now" follows the
    proposals and merges decided since (handlers.merging.groups_now).
    """

    __tablename__ = "merge_scans"

    id: Mapped[int] = mapped_column(primary_key=True)
    trigger: Mapped[str] = mapped_column(String(12))  # monthly | command
    # The month a monthly review is for ("2026-12"): one review a month.
    period: Mapped[str | None] = mapped_column(String(7), unique=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    # running → done | failed
    state: Mapped[str] = mapped_column(String(8), default="running")
    active: Mapped[int] = mapped_column(default=0)  # active customers when scanned
    grouped: Mapped[int] = mapped_column(default=0)  # of those, in a duplicate group
    remembered: Mapped[int] = mapped_column(default=0)  # groups left out as not duplicates
    groups: Mapped[list[Any]] = mapped_column(default=list)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class MergeProposal(Base):
    """A group of customers proposed for merging, decided on the admins' cards."""

    __tablename__ = "merge_proposals"
    __table_args__ = (
        # One open proposal per group, whichever scan found it.
        Index("uq_merge_proposals_open", "signature", unique=True,
              sqlite_where=text("state = 'proposed'"),
              postgresql_where=text("state = 'proposed'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("merge_scans.id"), index=True)
    member_ids: Mapped[list[Any]] = mapped_column()  # sorted customer ids
    # SHA-256 of the sorted ids ("12,15,31"): a fixed size for any size of group.
    signature: Mapped[str] = mapped_column(String(64))
    survivor_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    reasons: Mapped[list[Any]] = mapped_column(default=list)  # phone, email, company, strong
    score: Mapped[int] = mapped_column(default=0)
    # The value each field will have on the survivor, as proposed.
    values: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # proposed → merged | notdup | superseded (a later scan found a changed group);
    # merged → undone
    state: Mapped[str] = mapped_column(String(10), default="proposed", index=True)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    decided_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotDuplicate(Base):
    """What an admin said is not one customer. `member_ids` is a flat list for a group
    turned down (不是重复: that group is not proposed again), or a list of parts for a
    split (/拆分: no record of one part is grouped with one of another)."""

    __tablename__ = "not_duplicates"

    id: Mapped[int] = mapped_column(primary_key=True)
    signature: Mapped[str] = mapped_column(String(64), unique=True)
    member_ids: Mapped[list[Any]] = mapped_column()
    proposal_id: Mapped[int | None] = mapped_column(ForeignKey("merge_proposals.id"))
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Merge(Base):
    """A merge as done: the survivor, the merged-away records' values, every moved row.

    Everything an undo needs: the survivor's fields before they were filled, each
    merged-away customer's values, and each moved row with the customer it came from.
    """

    __tablename__ = "merges"

    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int | None] = mapped_column(ForeignKey("merge_proposals.id"),
                                                    index=True)
    survivor_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    merged_ids: Mapped[list[Any]] = mapped_column()
    survivor_before: Mapped[dict[str, Any]] = mapped_column(default=dict)
    survivor_after: Mapped[dict[str, Any]] = mapped_column(default=dict)
    merged_before: Mapped[dict[str, Any]] = mapped_column(default=dict)  # id → values
    # Table name → [[row id, customer id it was moved from], …]: leads, follow_ups, and
    # whatever else comes to hang on a customer.
    moved: Mapped[dict[str, Any]] = mapped_column(default=dict)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    undone_at: Mapped[datetime | None]
    undone_by_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
