"""/查客户: leads and customers found by phone, e-mail, company or contact, phones masked."""

from __future__ import annotations

from storage.models import Customer

ROSTER = [
    {"name": "李经理", "role": "manager"},
    {"name": "王芳", "role": "rep", "manager": "李经理"},
    {"name": "孙丽", "role": "service"},
]


async def _customers(chat) -> None:
    async with chat.rt.sessions() as session, session.begin():
        session.add_all([
            Customer(company="深圳示例科技有限公司", contact="张伟", phone="13800001234",
                     email="zhang@shili.example", owner_id=2),
            Customer(company="广州样本贸易有限公司", contact="李娜", phone="13900005678",
                     owner_id=2, status="merged"),
        ])


async def test_a_customer_and_a_lead_are_found_by_any_key_with_masked_phones(chat):
    await chat.add_members(*ROSTER)
    await _customers(chat)
    await chat.say("王芳", "新线索 示例科技发展 陈明 13700009999 高 工业 展会")
    expected_customer = "客户 #1 深圳示例科技有限公司 · 张伟 · 138****1234（负责人 王芳）"
    for keyword in ("+86 138-0000-1234", "ZHANG@shili.example", "张伟先生"):
        [reply] = await chat.say("孙丽", f"/查客户 {keyword}")
        assert reply.text.splitlines()[1:] == [expected_customer], keyword
    [reply] = await chat.say("孙丽", "/查客户 示例科技")
    assert reply.text.splitlines() == [
        "找到 2 条与「示例科技」相符的记录：", expected_customer,
        "线索 #1 示例科技发展 · 陈明 · 137****9999（已接受，王芳）"]
    assert "13800001234" not in reply.text


async def test_a_merged_away_customer_and_nothing_at_all_are_not_found(chat):
    await chat.add_members(*ROSTER)
    await _customers(chat)
    [reply] = await chat.say("王芳", "/查客户 13900005678")
    assert reply.text == "没有找到与「13900005678」相符的线索或客户。"
    [reply] = await chat.say("王芳", "/查客户")
    assert reply.text.startswith("用法：/查客户 关键词")


async def test_service_may_look_but_not_create(chat):
    await chat.add_members(*ROSTER)
    [refused] = await chat.say("孙丽", "新线索 杭州示例集团 李娜 13900001234 高 工业 展会")
    assert refused.text.startswith("「新线索」只对")
    [none] = await chat.say("孙丽", "/查客户 杭州示例集团")
    assert none.text.startswith("没有找到")


async def test_service_attaches_an_interaction_to_the_customer_it_found(chat):
    from sqlalchemy import select

    from storage.models import FollowUp

    await chat.add_members(*ROSTER)
    await _customers(chat)
    [reply] = await chat.say("孙丽", "记录 示例科技（深圳） 客户来电咨询保修")
    assert reply.text == "已把这次互动记录到客户 #1（深圳示例科技有限公司）。"
    [reply] = await chat.say("孙丽", "记录 客户#1 回访满意")
    assert reply.text == "已把这次互动记录到客户 #1（深圳示例科技有限公司）。"
    async with chat.rt.sessions() as session:
        rows = (await session.execute(select(FollowUp.customer_id, FollowUp.lead_id,
                                             FollowUp.kind, FollowUp.content))).all()
    assert rows == [(1, None, "interaction", "客户来电咨询保修"),
                    (1, None, "interaction", "回访满意")]
    # a customer merged away into none that exists takes none
    [reply] = await chat.say("孙丽", "记录 客户#2 来电")
    assert reply.text == "找不到客户 #2。客户编号可用 /查客户 查找。"


# ---- service and marketing name the customer an interaction is about ------------------------

SIDE_ROSTER = [*ROSTER, {"name": "周敏", "role": "marketing"}]


async def _interactions(chat) -> list[tuple]:
    from sqlalchemy import select

    from storage.models import FollowUp

    async with chat.rt.sessions() as session:
        return [tuple(r) for r in (await session.execute(
            select(FollowUp.customer_id, FollowUp.member_id, FollowUp.content)
            .order_by(FollowUp.id))).all()]


async def test_an_interaction_on_a_merged_away_customer_goes_to_its_survivor(chat):
    people = await chat.add_members(*SIDE_ROSTER)
    async with chat.rt.sessions() as session, session.begin():
        survivor = Customer(company="深圳示例科技有限公司", contact="张伟",
                            phone="13800000101", owner_id=people["王芳"].id)
        session.add(survivor)
        await session.flush()
        middle = Customer(company="示例科技（深圳）有限公司", contact="张伟",
                          phone="13800000101", status="merged", merged_into_id=survivor.id)
        session.add(middle)
        await session.flush()
        # merged into #2 before #2 itself was merged into #1
        session.add(Customer(company="深圳示例科技有限责任公司", contact="张伟",
                             phone="13800000101", status="merged", merged_into_id=middle.id))
    [reply] = await chat.say("孙丽", "记录 客户#2 回访")
    assert reply.text == ("客户 #2 已合并到客户 #1，"
                          "已把这次互动记录到客户 #1（深圳示例科技有限公司）。")
    [reply] = await chat.say("周敏", "记录 客户3 寄出样品")
    assert reply.text == ("客户 #3 已合并到客户 #1，"
                          "已把这次互动记录到客户 #1（深圳示例科技有限公司）。")
    assert await _interactions(chat) == [(1, people["孙丽"].id, "回访"),
                                         (1, people["周敏"].id, "寄出样品")]


async def test_a_full_company_name_finds_its_customer_and_a_shared_core_asks_which(chat):
    people = await chat.add_members(*SIDE_ROSTER)
    async with chat.rt.sessions() as session, session.begin():
        session.add_all([
            Customer(company="深圳市星河示例电子有限公司", contact="陈明", phone="13800000201"),
            Customer(company="广州星河示例电子有限公司", contact="刘洋", phone="13800000202"),
        ])
    [reply] = await chat.say("孙丽", "记录 深圳市星河示例电子有限公司 回访一次")
    assert reply.text == "已把这次互动记录到客户 #1（深圳市星河示例电子有限公司）。"
    [reply] = await chat.say("周敏", "记录 星河示例电子（广州） 发了展会邀请")
    assert reply.text == "已把这次互动记录到客户 #2（广州星河示例电子有限公司）。"

    [reply] = await chat.say("孙丽", "记录 星河示例电子 客户来电")
    assert reply.text.splitlines() == [
        "有 2 位客户与「星河示例电子」相符，请写明客户编号：记录 客户#编号 内容",
        "客户 #1 深圳市星河示例电子有限公司 · 138****0201",
        "客户 #2 广州星河示例电子有限公司 · 138****0202",
    ]
    [reply] = await chat.say("孙丽", "记录 北京不存在示例 客户来电")
    assert reply.text == ("没有找到名称为「北京不存在示例」的客户。"
                          "请写客户编号：记录 客户#编号 内容（编号可用 /查客户 查找）。")
    assert await _interactions(chat) == [(1, people["孙丽"].id, "回访一次"),
                                         (2, people["周敏"].id, "发了展会邀请")]


async def test_a_customer_number_written_wrong_gets_the_usage_and_an_unknown_one_is_named(chat):
    await chat.add_members(*SIDE_ROSTER)
    await _customers(chat)
    usage = ("用法：记录 客户#编号 内容，例如：记录 客户#12 回访满意；"
             "也可写公司全称：记录 公司名 内容。客户编号可用 /查客户 查找。")
    for text in ("记录 客户 #1 回访", "记录 客户#1", "记录 客户1", "记录", "记录 回访满意"):
        [reply] = await chat.say("孙丽", text)
        assert reply.text == usage, text
    [reply] = await chat.say("周敏", "记录 客户#999 回访")
    assert reply.text == "找不到客户 #999。客户编号可用 /查客户 查找。"
    assert await _interactions(chat) == []


async def test_service_and_marketing_see_the_customer_form_in_their_help(chat):
    await chat.add_members(*SIDE_ROSTER)
    customer_form = "· 记录 客户#编号 内容：把一次互动记到客户名下（也可写公司全称或线索号）"
    for name in ("孙丽", "周敏"):
        [reply] = await chat.say(name, "/帮助")
        assert customer_form in reply.text.splitlines(), name
    [reply] = await chat.say("王芳", "/帮助")
    assert "· 记录 [公司或线索号] 内容：登记一次跟进" in reply.text.splitlines()
    assert "客户#编号" not in reply.text


async def test_a_name_part_made_only_of_common_grams_is_still_found(chat, monkeypatch):
    import handlers.lookup

    # In a big base every gram of 示例科技 is common; the rarest ones together still find it.
    monkeypatch.setattr(handlers.lookup, "COMMON_GRAM", 1)
    await chat.add_members(*ROSTER)
    async with chat.rt.sessions() as session, session.begin():
        session.add_all([
            Customer(company="深圳示例科技发展有限公司", contact="陈明", phone="13800000301"),
            Customer(company="广州示例科技服务有限公司", contact="刘洋", phone="13800000302"),
            Customer(company="示例电子科技有限公司", contact="周敏", phone="13800000303"),
        ])
    [reply] = await chat.say("孙丽", "/查客户 示例科技")
    assert reply.text.splitlines() == [
        "找到 2 条与「示例科技」相符的记录：",
        "客户 #2 广州示例科技服务有限公司 · 刘洋 · 138****0302（负责人 待分配）",
        "客户 #1 深圳示例科技发展有限公司 · 陈明 · 138****0301（负责人 待分配）"]


async def test_a_merged_away_customers_phone_finds_the_customer_it_was_merged_into(chat):
    await chat.add_members(*ROSTER)
    async with chat.rt.sessions() as session, session.begin():
        survivor = Customer(company="深圳示例科技有限公司", contact="张伟", phone="13800001234",
                            owner_id=2)
        session.add(survivor)
        await session.flush()
        session.add(Customer(company="深圳示例科技有限公司", contact="张伟",
                             phone="13600000111", owner_id=2, status="merged",
                             merged_into_id=survivor.id))
    [reply] = await chat.say("孙丽", "/查客户 136 0000 0111")
    assert reply.text.splitlines() == [
        "找到 1 条与「136 0000 0111」相符的记录：",
        "客户 #1 深圳示例科技有限公司 · 张伟 · 138****1234（负责人 王芳）"]
    [reply] = await chat.say("孙丽", "/查客户 示例科技")  # both hold it: the survivor once
    assert reply.text.splitlines()[0] == "找到 1 条与「示例科技」相符的记录："


async def test_the_exact_name_comes_before_names_that_only_hold_it(chat):
    await chat.add_members(*ROSTER)
    cities = "北京 上海 广州 天津 重庆 南京 杭州 成都 武汉 西安 苏州 长沙".split()
    async with chat.rt.sessions() as session, session.begin():
        session.add(Customer(company="华强样本电子有限公司", contact="陈明",
                             phone="13800000400"))
        session.add_all([Customer(company=f"华强样本电子有限公司{city}分公司", contact="刘洋",
                                  phone=f"138000004{n:02d}")
                         for n, city in enumerate(cities, start=1)])
    [reply] = await chat.say("孙丽", "/查客户 华强样本电子有限公司")
    lines = reply.text.splitlines()
    assert lines[1] == "客户 #1 华强样本电子有限公司 · 陈明 · 138****0400（负责人 待分配）"
    assert len(lines) == 12 and lines[-1].startswith("……还有更多记录")


async def test_a_queued_lead_says_waiting_once(chat):
    await chat.add_members(*ROSTER, {"name": "陈静", "role": "marketing"})
    await chat.say("王芳", "/下班")  # nobody on duty: the lead waits in the queue, no owner
    await chat.say("陈静", "新线索 杭州样本集团 李娜 13900001234 高 工业 展会")
    [reply] = await chat.say("孙丽", "/查客户 杭州样本集团")
    assert reply.text.splitlines()[1:] == ["线索 #1 杭州样本集团 · 李娜 · 139****1234（待分配）"]
