"""Phone numbers as people and spreadsheets write them (field report C15, C16)."""

from __future__ import annotations

import pytest

from handlers.phones import PhoneError, mask_phone, mask_phones_in, normalize_phone, parse_phone

MOBILES = [
    "+86 138-0000-0000",
    "0086 13800000000",
    "(+86)13800000000",
    "86-138 0000 0000",
    "１３８００００００００",
    " 138 0000 0000 ",
    "13800000000.0",
    "+8613800000000",
    "8613800000000",
    "138 0000 0000",
    "13800000000",
]

LANDLINES = [
    "0755-1234 5678",
    "+86 755 12345678",
    "(0755)12345678",
    "0086 755 1234 5678",
    "075512345678",
]


@pytest.mark.parametrize("raw", MOBILES)
def test_every_way_of_writing_a_mobile_is_one_number(raw):
    phone = parse_phone(raw)
    assert (phone.stored, phone.kind, phone.extension) == ("13800000000", "mobile", None)


@pytest.mark.parametrize("raw", LANDLINES)
def test_every_way_of_writing_a_landline_keeps_its_area_code(raw):
    phone = parse_phone(raw)
    assert (phone.stored, phone.kind) == ("075512345678", "landline")


@pytest.mark.parametrize("raw", ["075512345678转801", "0755-1234 5678 转801",
                                 "0755-12345678 ext. 801", "(0755)12345678#801"])
def test_a_landline_extension_is_stored_after_a_dash(raw):
    phone = parse_phone(raw)
    assert (phone.number, phone.extension, phone.stored) == (
        "075512345678", "801", "075512345678-801")


def test_the_national_display_of_a_mobile_never_gets_a_trunk_zero():
    assert not parse_phone("+86 138 0000 0000").stored.startswith("0")


def test_beijing_and_shanghai_three_digit_area_codes():
    assert parse_phone("010-12345678").stored == "01012345678"
    assert parse_phone("+86 10 12345678").stored == "01012345678"
    assert parse_phone("+86 21 12345678").stored == "02112345678"


def test_ten_digits_are_refused_not_stored():
    with pytest.raises(PhoneError, match="手机号应为11位，这里是10位"):
        parse_phone("1380000000")


@pytest.mark.parametrize("raw", ["1.38E+10", "1.38e10", "1.380000123E+10"])
def test_scientific_notation_from_excel_is_refused(raw):
    with pytest.raises(PhoneError) as info:
        parse_phone(raw)
    assert str(info.value) == "号码已被Excel科学计数法截断"


@pytest.mark.parametrize("raw, reason", [
    ("", "号码为空"),
    ("   ", "号码为空"),
    ("138-0000-abcd", "号码含有无法识别的字符"),
    ("13800000000转8", "手机号不能带分机号"),
    ("0755123", "不是有效的手机号或带区号的座机号"),
])
def test_other_bad_numbers_say_why(raw, reason):
    with pytest.raises(PhoneError) as info:
        parse_phone(raw)
    assert str(info.value) == reason


def test_masking_for_groups_and_logs():
    assert mask_phone("13800005678") == "138****5678"
    assert mask_phone("075512345678-801") == "0755****5678"
    assert mask_phone("01012345678") == "010****5678"
    assert mask_phone(None) == ""
    assert mask_phones_in("客户 13800005678 已联系") == "客户 138****5678 已联系"


@pytest.mark.parametrize(("raw", "stored"), [
    ("0755-12345678-801", "075512345678-801"),
    ("+86-755-12345678-801", "075512345678-801"),
    ("075512345678-801", "075512345678-801"),
    ("0755-1234-5678", "075512345678"),
])
def test_an_extension_after_the_last_dash(raw, stored):
    assert normalize_phone(raw) == stored


def test_a_number_abroad_is_refused_not_read_as_a_mobile():
    with pytest.raises(PhoneError, match="仅支持中国大陆"):
        parse_phone("+1 415 555 0100")


@pytest.mark.parametrize(("raw", "stored"), [
    ("+86 (0)755 1234 5678", "075512345678"),
    ("+86 (0)138 0000 0000", "13800000000"),
    ("400-123-4567", "4001234567"),
    ("800 123 4567", "8001234567"),
    ("+86 400 123 4567", "4001234567"),
])
def test_a_bracketed_trunk_zero_and_service_numbers_are_read(raw, stored):
    assert normalize_phone(raw) == stored


@pytest.mark.parametrize(("text", "masked"), [
    ("来电 +8613800001234", "来电 +86138****1234"),
    ("手机 138-0000-1234 已接通", "手机 138****1234 已接通"),
    ("手机 138 0000 1234", "手机 138****1234"),
    ("手机 １３８００００１２３４", "手机 １３８****１２３４"),
    ("座机 0755-1234 5678", "座机 0755****5678"),
    ("座机 075512345678 转801", "座机 0755****5678 转801"),
    ("日期 2024-01-02，订单 20240102123456，金额 100000", None),
])
def test_logs_never_carry_a_phone_however_it_is_grouped(text, masked):
    assert mask_phones_in(text) == (masked or text)


def test_a_phone_stored_as_typed_is_masked_like_a_normalised_one():
    assert mask_phone("+86 138 0000 7001") == "138****7001"
    assert mask_phone("(0755)12345678") == "0755****5678"
    assert mask_phone("400-123-4567") == "4001****4567"
    assert mask_phone("12") == "****"
