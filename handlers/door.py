"""The two buttons of a "similar customer found" card: link (it is the record we have)
and create (it is someone else). Two cards carry them: the rep's card at lead entry
(`link:<draft id>`) and the manager's conversion card (`link:<approval id>:approval`);
each module decides, this one only sends the click to the right one.
"""

from __future__ import annotations

from bot.context import Context
from bot.router import Router
from handlers import conversion, entry

router = Router("door")
APPROVAL = "approval"


@router.action("link")
async def link(ctx: Context, object_id: str, option: str | None) -> None:
    if option == APPROVAL:
        await conversion.decide(ctx, object_id, "link")
    else:
        await entry.link_draft(ctx, object_id)


@router.action("create")
async def create(ctx: Context, object_id: str, option: str | None) -> None:
    if option == APPROVAL:
        await conversion.decide(ctx, object_id, "create")
    else:
        await entry.create_anyway(ctx, object_id)
