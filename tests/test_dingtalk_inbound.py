"""DingTalk robot messages and card clicks into Events: types (C09), @-mention residue
(C10), markdown actions, and frames with missing fields."""

from __future__ import annotations

import pytest

from bot.channels.dingtalk import FrameError, card_event, clean_text, message_event
from bot.router import normalize_text, split_command
from tests.fakes.dingtalk import CHATBOT_USER_ID, FakeDingTalk

fake = FakeDingTalk()


def command(text: str) -> tuple[str, str]:
    return split_command(normalize_text(text))


# ---- C09: audio and rich text -----------------------------------------------------------


def c09_audio(recognition: str) -> dict:
    return {"msgId": "msgEXAMPLE0002", "msgtype": "audio", "conversationType": "1",
            "senderStaffId": "manager1234", "robotCode": "dingEXAMPLE",
            "createAt": 1717200000000,
            "content": {"duration": 3600, "downloadCode": "DL_EXAMPLE",
                        "recognition": recognition}}


def test_c09_audio_carries_dingtalks_transcript_and_the_download_code():
    event = message_event(c09_audio("明天上午十点提醒我回访深圳示例科技"))
    assert (event.kind, event.sender, event.key) == ("voice", "manager1234", "msgEXAMPLE0002")
    assert event.text == "明天上午十点提醒我回访深圳示例科技"
    assert event.extra["asr"] == "dingtalk"
    assert event.media_id == "DL_EXAMPLE"
    assert event.extra["duration_ms"] == 3600
    assert event.created_at == 1717200000.0


def test_c09_audio_without_recognition_keeps_the_code_for_our_own_transcription():
    event = message_event(c09_audio(""))
    assert event.kind == "voice" and event.text == ""
    assert "asr" not in event.extra
    assert event.media_id == "DL_EXAMPLE"


def test_c09_audio_without_duration_is_still_audio():
    data = c09_audio("你好")
    del data["content"]["duration"]
    event = message_event(data)
    assert event.kind == "voice" and "duration_ms" not in event.extra


def test_c09_rich_text_joins_the_parts_in_order_and_keeps_the_picture():
    data = {"msgId": "msgEXAMPLE0003", "msgtype": "richText", "senderStaffId": "manager1234",
            "conversationType": "1", "content": {"richText": [
                {"text": "名片"}, {"type": "picture", "downloadCode": "DL_PIC"},
                {"text": "深圳示例科技有限公司 王经理 13800000000"}]}}
    event = message_event(data)
    assert event.kind == "text"
    assert event.text == "名片 深圳示例科技有限公司 王经理 13800000000"
    assert "13800000000" in event.text
    assert event.media_id == "DL_PIC" and event.extra["pictures"] == ["DL_PIC"]


def test_rich_text_of_pictures_only_is_an_image():
    data = {"msgId": "m4", "msgtype": "richText", "senderStaffId": "u1", "content": {
        "richText": [{"type": "picture", "downloadCode": "P1"},
                     {"type": "picture", "pictureDownloadCode": "P2"}]}}
    event = message_event(data)
    assert event.kind == "image" and event.extra["pictures"] == ["P1", "P2"]


def test_picture_and_file_arrive_by_download_code():
    picture = message_event({"msgId": "m5", "msgtype": "picture", "senderStaffId": "u1",
                             "content": {"downloadCode": "PIC1"}})
    assert (picture.kind, picture.media_id) == ("image", "PIC1")
    document = message_event({"msgId": "m6", "msgtype": "file", "senderStaffId": "u1",
                              "content": {"downloadCode": "FILE1", "fileName": "线索.xlsx",
                                          "fileId": "f1", "spaceId": "s1"}})
    assert (document.kind, document.media_id) == ("file", "FILE1")
    assert document.extra["file_name"] == "线索.xlsx"


def test_content_sent_as_json_text_is_read_too():
    event = message_event({"msgId": "m7", "msgtype": "picture", "senderStaffId": "u1",
                           "content": '{"downloadCode": "PIC2"}'})
    assert event.media_id == "PIC2"


def test_an_unknown_message_type_is_unsupported_not_dropped():
    event = message_event({"msgId": "m8", "msgtype": "interactiveCard", "senderStaffId": "u1"})
    assert event.kind == "unsupported" and event.extra["msg_type"] == "interactiveCard"
    missing = message_event({"msgId": "m9", "senderStaffId": "u1"})
    assert missing.kind == "unsupported"


# ---- C10: @-mention residue ---------------------------------------------------------------


@pytest.mark.parametrize("received", [
    " 查客户 示例科技",
    "查客户 示例科技 ",
    "@CRM 助手 /查客户 示例科技",
    "@李四 @CRM助手 /查客户 示例科技",
    "＠CRM助手 /查客户 示例科技",
    "@李四 @CRM助手 查客户 示例科技",
])
def test_c10_mention_residue_does_not_break_the_command(received):
    assert command(clean_text(received)) == ("查客户", "示例科技")


def test_c10_a_message_that_is_only_the_robots_mention_gets_help():
    event = message_event(fake.text("u1", " ", group="cidteam0001=="))
    assert event.kind == "text" and event.text == ""  # the dispatcher answers with /帮助


def test_c10_an_email_address_is_kept_intact():
    assert clean_text("记录 对方邮箱 sales@example.com") == "记录 对方邮箱 sales@example.com"


def test_a_message_of_only_a_colleagues_mention_is_kept_for_the_transfer_answer():
    assert clean_text(" @王二") == "@王二"


def test_mentions_of_colleagues_become_structured_the_robot_is_left_out():
    data = fake.text("wangfang", " 转给 @王二", at=["wanger"], group="cidteam0001==")
    assert {"dingtalkId": CHATBOT_USER_ID} in data["atUsers"]
    event = message_event(data)
    assert event.text == "转给 @王二" and event.is_group
    assert [(m.platform_id, m.name) for m in event.mentions] == [("wanger", "王二")]
    assert command(event.text) == ("转给", "@王二")


def test_mention_names_are_left_out_when_they_cannot_be_paired():
    data = fake.text("wangfang", "转给 @王 二", at=["wanger"])  # a display name with a space
    [mention] = message_event(data).mentions
    assert (mention.platform_id, mention.name) == ("wanger", "王")
    data = fake.text("wangfang", "转给 王二", at=["wanger"])
    [mention] = message_event(data).mentions
    assert (mention.platform_id, mention.name) == ("wanger", None)


# ---- markdown actions (no card template) ------------------------------------------------


def test_a_tapped_markdown_action_is_the_click_it_stands_for():
    event = message_event(fake.text("wangfang", "接受 (accept:12)"))
    assert (event.kind, event.action, event.card_ref) == ("card_action", "accept:12", None)
    full_width = message_event(fake.text("wangfang", "手头线索太多（decline:12:3）"))
    assert (full_width.kind, full_width.action) == ("card_action", "decline:12:3")


def test_text_that_only_looks_like_an_action_stays_text():
    for text in ("记录 (accept:12) 已联系", "好的 (hello:12)", "接受 12"):
        assert message_event(fake.text("wangfang", text)).kind == "text"


# ---- card callbacks -----------------------------------------------------------------------


def test_a_card_click_carries_the_key_from_params_action():
    event = card_event(fake.card_click("wangfang", "sbref1", "accept:12"), key="card:f1")
    assert (event.kind, event.sender, event.action, event.card_ref) == (
        "card_action", "wangfang", "accept:12", "sbref1")


def test_a_card_click_without_params_takes_the_first_action_id():
    data = fake.card_click("wangfang", "sbref1", action_ids=["decline:12", "other"])
    assert card_event(data, key="card:f2").action == "decline:12"


def test_a_card_click_with_unreadable_content_has_no_action():
    data = fake.card_click("wangfang", "sbref1", "accept:12") | {"content": "{not json"}
    event = card_event(data, key="card:f3")
    assert event.kind == "card_action" and event.action is None


# ---- frames with missing fields ---------------------------------------------------------


def test_a_message_without_a_sender_is_refused():
    with pytest.raises(FrameError, match="senderStaffId"):
        message_event({"msgId": "m10", "msgtype": "text", "text": {"content": "hi"}})
    with pytest.raises(FrameError, match="userId"):
        card_event({"outTrackId": "x"}, key="card:f4")


def test_a_message_without_msgid_uses_the_frames_id_and_none_is_refused():
    data = {"msgtype": "text", "senderStaffId": "u1", "text": {"content": "hi"}}
    assert message_event(data, fallback_key="frame-7").key == "frame-7"
    with pytest.raises(FrameError, match="msgId"):
        message_event(data)


def test_a_text_without_content_is_an_empty_text():
    event = message_event({"msgId": "m11", "msgtype": "text", "senderStaffId": "u1"})
    assert event.kind == "text" and event.text == ""


def test_a_sender_outside_the_org_is_named_by_sender_id():
    data = {"msgId": "m12", "msgtype": "text", "senderId": "$:LWCP_v1:$outsider",
            "text": {"content": "你好"}}
    event = message_event(data)
    assert event.sender == "$:LWCP_v1:$outsider" and event.extra["outside_org"] is True
