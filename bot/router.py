"""Routers: each capability module declares its commands, card actions and event kinds.

Nothing registers on import; bot.dispatch joins the routers in one explicit list.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.context import Context

CommandHandler = Callable[["Context", str], Awaitable[None]]
ActionHandler = Callable[["Context", str, "str | None"], Awaitable[None]]
EventHandler = Callable[["Context"], Awaitable[None]]

ALL_ROLES = frozenset({"rep", "manager", "admin", "service", "marketing"})
# The roles as the team says them.
ROLE_NAMES = {
    "rep": "销售", "manager": "经理", "admin": "管理员", "service": "客服",
    "marketing": "市场",
}


def is_number(text: str) -> bool:
    """A record number as typed (线索号, 编号): up to 9 digits, half- or full-width.

    Longer numbers cannot name a record and would overflow the database's integers.
    """
    text = unicodedata.normalize("NFKC", text)
    return text.isascii() and text.isdigit() and len(text) <= 9


@dataclass(slots=True)
class Command:
    names: tuple[str, ...]
    handler: CommandHandler
    roles: frozenset[str]
    usage: str
    summary: str
    # A role that uses the command its own way sees its own line in /帮助.
    role_summaries: dict[str, str] = field(default_factory=dict)

    def summary_for(self, role: str) -> str:
        return self.role_summaries.get(role, self.summary)


@dataclass
class Router:
    name: str
    commands: list[Command] = field(default_factory=list)
    actions: dict[str, ActionHandler] = field(default_factory=dict)
    kinds: dict[str, EventHandler] = field(default_factory=dict)
    replies: dict[str, CommandHandler] = field(default_factory=dict)

    def command(
        self, *names: str, roles: frozenset[str] | set[str] = ALL_ROLES, usage: str,
        summary: str, role_summaries: dict[str, str] | None = None,
    ) -> Callable[[CommandHandler], CommandHandler]:
        def register(handler: CommandHandler) -> CommandHandler:
            self.commands.append(Command(names, handler, frozenset(roles), usage, summary,
                                         dict(role_summaries or {})))
            return handler
        return register

    def action(self, *actions: str) -> Callable[[ActionHandler], ActionHandler]:
        def register(handler: ActionHandler) -> ActionHandler:
            for action in actions:
                self.actions[action] = handler
            return handler
        return register

    def on(self, *kinds: str) -> Callable[[EventHandler], EventHandler]:
        def register(handler: EventHandler) -> EventHandler:
            for kind in kinds:
                self.kinds[kind] = handler
            return handler
        return register

    def reply(self, kind: str) -> Callable[[CommandHandler], CommandHandler]:
        """Handles free text while the bot waits for this kind of answer from the member."""
        def register(handler: CommandHandler) -> CommandHandler:
            self.replies[kind] = handler
            return handler
        return register


_SPACES = re.compile(r"\s+")
_INVISIBLE = re.compile("[\u200b-\u200f\u2060\ufeff]")  # zero-width and direction marks
_MENTION = re.compile(r"^@\S+\s*")


def normalize_text(text: str, bot_names: tuple[str, ...] = ()) -> str:
    """NFKC (full-width to half-width), mentions of the bot removed, spaces collapsed."""
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text)).replace("\u3000", " ")
    for name in sorted(bot_names, key=len, reverse=True):
        text = text.replace("@" + name, " ")
    return _SPACES.sub(" ", text).strip()


def split_command(text: str) -> tuple[str, str]:
    """`/转派 12 王二` → ("转派", "12 王二"); the leading slash is optional."""
    text = text.lstrip("/").lstrip()
    word, _, rest = text.partition(" ")
    return word.lower(), rest.strip()
