"""新线索's tags card and /转化's approval card through the WeCom and the DingTalk fakes:
one story, run once per platform, each card updated in place."""

from __future__ import annotations

import pytest

from tests.fakes.dingtalk import loopback_only  # noqa: F401
from tests.test_parity import platform, roster_for  # noqa: F401

pytestmark = pytest.mark.usefixtures("loopback_only")


async def test_entry_and_conversion_cards_are_the_same_on_every_platform(
    platform, aiohttp_client, sqlite_url  # noqa: F811
):
    chat = await platform.start(aiohttp_client, sqlite_url)
    await chat.add_members(*roster_for(platform.name))

    async def act(name: str, text: str = "", key: str = "") -> str:
        """The member types `text` or clicks the button `key`; their last text after."""
        if key:
            [card] = [c for c in platform.cards(name) if key in c.keys]
            await platform.click(name, card, key)
        else:
            await platform.say(name, text)
        await chat.settle()
        texts = platform.texts(name)
        return texts[-1] if texts else ""

    await act("王芳", "新线索 张伟 深圳示例科技有限公司 13800001234 工业")
    [ask] = platform.cards("王芳")
    assert ask.title == "补全线索 #1 的标签" and ask.status is None
    assert ask.keys == ["tags:1:urgency=high", "tags:1:urgency=medium", "tags:1:urgency=low"]

    await act("王芳", key="tags:1:urgency=high")
    [ask] = platform.cards("王芳")  # the same card, now asking for the source
    assert ask.keys == ["tags:1:source=expo", "tags:1:source=sem", "tags:1:source=referral"]
    done = await act("王芳", key="tags:1:source=referral")
    assert done.startswith("线索 #1（深圳示例科技有限公司）已录入，归您跟进。")
    [ask] = platform.cards("王芳")
    assert (ask.status, ask.keys) == ("已补全：高 / 工业 / 转介绍", [])

    for n in range(3):
        await act("王芳", f"记录 1 第{n + 1}次沟通")
    assert await act("王芳", "/转化 1") == (
        "已提交线索 #1（深圳示例科技有限公司）的转化申请，等待 李经理 审批。")
    [approval] = platform.cards("李经理")
    assert approval.title == "转化审批：线索 #1"
    assert approval.keys == ["approve:1", "reject:1"]

    await act("李经理", key="approve:1")
    [approval] = platform.cards("李经理")
    assert (approval.status, approval.keys) == ("李经理 已于 12-02 10:00 同意，客户 #1", [])
    assert platform.texts("王芳")[-1] == (
        "您的线索 #1（深圳示例科技有限公司）已由 李经理 同意转化，客户编号 #1。")
