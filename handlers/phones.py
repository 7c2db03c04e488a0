"""Chinese phone numbers: normalising mobiles and landlines, and masking them for display.

Pure functions. A mobile becomes 11 digits (13800000000); a landline its area code and
number (075512345678), with an extension after a dash (075512345678-801).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_EXTENSION = re.compile(r"\s*(?:转|ext\.?|x|#|分机)\s*(\d{1,6})\s*$", re.IGNORECASE)
_ALLOWED = re.compile(r"^[\d\s\-()+.]+$")
_MOBILE = re.compile(r"^1[3-9]\d{9}$")
# Area codes: 010 and 02x are three digits and their numbers eight (010-12345678); the
# rest are four (0755, 0571, …) with numbers of seven or eight digits.
_LANDLINE = re.compile(r"^0(?:(?:10|2\d)\d{8}|[3-9]\d{2}\d{7,8})$")
# Nationwide service numbers (400-123-4567, 800-…): ten digits, no area code.
_HOTLINE = re.compile(r"^[48]00\d{7}$")
# The trunk 0 written in brackets after the country code: +86 (0)755 1234 5678.
_TRUNK_IN_BRACKETS = re.compile(r"^(\+?\s*(?:00)?\s*86)[\s-]*\(0\)")


class PhoneError(ValueError):
    """The value is not a Chinese mobile or landline number; the message says why."""


@dataclass(slots=True, frozen=True)
class Phone:
    number: str  # 13800000000 or 075512345678
    kind: str  # mobile | landline
    extension: str | None = None

    @property
    def stored(self) -> str:
        return f"{self.number}-{self.extension}" if self.extension else self.number


def parse_phone(raw: str) -> Phone:
    """Parse what people type: +86, 0086, spaces, dashes, brackets, full-width digits."""
    text = unicodedata.normalize("NFKC", str(raw)).strip()
    if not text:
        raise PhoneError("号码为空")
    if re.fullmatch(r"\d(?:\.\d+)?[eE]\+?\d+", text):
        raise PhoneError("号码已被Excel科学计数法截断")
    extension = None
    match = _EXTENSION.search(text)
    if match:
        extension, text = match.group(1), text[: match.start()]
    if text.endswith(".0") and text[:-2].isdigit():
        text = text[:-2]  # a number cell read as a float: 13800000000.0
    if not _ALLOWED.match(text):
        raise PhoneError("号码含有无法识别的字符")
    text = _TRUNK_IN_BRACKETS.sub(r"\1 ", text)
    digits = re.sub(r"\D", "", text)
    if text.lstrip("( ").startswith(("+", "00")) and not digits.startswith(("86", "0086")):
        raise PhoneError("仅支持中国大陆的号码（+86）")
    international = False
    if digits.startswith("0086"):
        digits, international = digits[4:], True
    elif digits.startswith("86") and len(digits) >= 12:
        digits, international = digits[2:], True
    if international and _HOTLINE.match(digits):
        return Phone(digits, "landline", extension)
    if international and (not digits.startswith(("0", "1")) or digits.startswith("10")):
        # +86 755 12345678, +86 10 12345678: the trunk 0 is dropped abroad; no mobile
        # starts with 10, so that is Beijing's area code.
        digits = "0" + digits
    if _MOBILE.match(digits):
        if extension:
            raise PhoneError("手机号不能带分机号")
        return Phone(digits, "mobile")
    if _LANDLINE.match(digits) or (_HOTLINE.match(digits) and not international):
        return Phone(digits, "landline", extension)
    head, dash, tail = text.rpartition("-")
    if dash and extension is None and tail.strip().isdigit() and len(tail.strip()) <= 6:
        # 0755-12345678-801: the extension after a last dash, as we store it.
        try:
            landline = parse_phone(head)
        except PhoneError:
            landline = None
        if landline is not None and landline.kind == "landline":
            return Phone(landline.number, "landline", tail.strip())
    if re.fullmatch(r"\d+\.\d+", text):
        raise PhoneError("号码带有小数部分，应为整数")  # 13800002010.00: not 13 digits
    if digits.startswith("1") and len(digits) == 11:
        raise PhoneError(f"不是有效的手机号段（第二位应为3–9，这里是{digits[1]}）")
    if digits.startswith("1") and 9 <= len(digits) <= 13:
        raise PhoneError(f"手机号应为11位，这里是{len(digits)}位")
    raise PhoneError("不是有效的手机号或带区号的座机号")


def normalize_phone(raw: str) -> str:
    return parse_phone(raw).stored


def mask_phone(number: str | None) -> str:
    """138****5678 for a mobile; 0755****5678 for a landline (extension dropped)."""
    if not number:
        return ""
    try:
        number = parse_phone(number).stored  # one written as typed: +86 138 0000 5678
    except PhoneError:
        pass
    base = number.split("-", 1)[0]
    if len(base) == 11 and base.startswith("1"):
        return f"{base[:3]}****{base[-4:]}"
    if len(base) >= 8:
        area = 3 if base.startswith(("010", "02")) else 4
        return f"{base[:area]}****{base[-4:]}"
    return "****"


# Digits as people write them in text: ASCII or full-width, grouped 3-4-4 with spaces or
# dashes, after +86 / 0086 / 86 or not; landlines with their area code.
_D = "[0-9\uff10-\uff19]"
_SEP = "[ \\-\u3000]?"
_MOBILE_IN_TEXT = re.compile(
    rf"(?<![0-9\uff10-\uff19])((?:(?:\+|00)?86{_SEP})?[1\uff11][3-9\uff13-\uff19]{_D})"
    rf"{_SEP}{_D}{{4}}{_SEP}({_D}{{4}})(?![0-9\uff10-\uff19])")
_LANDLINE_IN_TEXT = re.compile(
    rf"(?<![0-9\uff10-\uff19])([0\uff10]{_D}{{2,3}})[ \-)]?{_D}{{3,4}}{_SEP}({_D}{{4}})"
    rf"(?![0-9\uff10-\uff19])")


def mask_phones_in(text: str) -> str:
    """Mask every mobile and landline number inside free text (for logs and group
    messages), however it is grouped: 138****5678, 0755****5678."""
    text = _MOBILE_IN_TEXT.sub(r"\1****\2", text)
    return _LANDLINE_IN_TEXT.sub(r"\1****\2", text)
