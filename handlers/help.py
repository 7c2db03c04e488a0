"""/帮助: the commands the sender's role may use, in the order the routers list them."""

from __future__ import annotations

from bot.context import Context
from bot.router import Router

router = Router("help")

T_HELP_HEAD = "{name}，您好！您可以这样和我说话："
T_HELP_TAIL = "命令前的「/」可写可不写。线索卡片上的按钮可以直接点。"


@router.command("帮助", "help", "?", "？", usage="/帮助", summary="/帮助：查看可用命令")
async def help_command(ctx: Context, args: str) -> None:
    lines = [T_HELP_HEAD.format(name=ctx.member.name)]
    for command in ctx.rt.dispatcher.commands_for(ctx.member.role):
        summary = command.summary_for(ctx.member.role)
        if summary:
            lines.append("· " + summary)
    lines.append(T_HELP_TAIL)
    await ctx.reply("\n".join(lines))
