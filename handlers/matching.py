"""PLACEHOLDER for the duplicates branch's matcher: delete when handlers/matching.py lands.

It keeps the agreed signature of `scan_groups` and `Group` so that the merge review can be
built and tested meanwhile; it groups only customers with the same normalised phone AND
the same company once a few legal forms and region prefixes are stripped.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.phones import PhoneError, normalize_phone
from storage.models import Customer

# (customer a, customer b with a < b, reasons ⊂ {phone, email, company, strong}, 0-100)
Pair = tuple[int, int, list[str], int]
Progress = Callable[[int, int], None]

_LEGAL = re.compile(r"(股份有限公司|有限责任公司|有限公司)$")
_REGION = re.compile(r"^(深圳|广州|北京|上海)|[(（](深圳|广州|北京|上海)[)）]")


@dataclass(slots=True)
class Group:
    customer_ids: tuple[int, ...]  # sorted
    pairs: list[Pair] = field(default_factory=list)


def _company(name: str) -> str:
    text = unicodedata.normalize("NFKC", name).replace(" ", "")
    return _REGION.sub("", _LEGAL.sub("", text))


def _phone(raw: str | None) -> str | None:
    try:
        return normalize_phone(raw) if raw else None
    except PhoneError:
        return None


async def scan_groups(session: AsyncSession, *, progress: Progress | None = None) -> list[Group]:
    """The active customers (status != "merged") that share phone and company, in groups."""
    rows = (await session.execute(
        select(Customer.id, Customer.phone, Customer.company)
        .where(Customer.status != "merged").order_by(Customer.id))).all()
    buckets: dict[tuple[str, str], list[int]] = defaultdict(list)
    for done, (customer_id, phone, company) in enumerate(rows, start=1):
        number = _phone(phone)
        if number:
            buckets[(number, _company(company))].append(customer_id)
        if progress is not None:
            progress(done, len(rows))
    groups = []
    for ids in buckets.values():
        if len(ids) < 2:
            continue
        pairs: list[Pair] = [(a, b, ["company", "phone"], 90)
                             for n, a in enumerate(ids) for b in ids[n + 1:]]
        groups.append(Group(tuple(ids), pairs))
    return sorted(groups, key=lambda g: g.customer_ids)
