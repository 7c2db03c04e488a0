"""Match keys: company names, phone numbers, e-mails and contact names made comparable.

Pure functions for duplicate detection (handlers.matching); no database, no clock. What
counts as the same customer is decided in handlers.matching, not here.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import opencc
from opencc import OpenCC

from handlers import regions
from handlers.phones import PhoneError, parse_phone

# Between a company's own core and its branch (示例科技/深圳分公司): two branches of one
# company are told apart by what follows it (handlers.matching).
BRANCH_MARK = "/"


class CompanyKeys(NamedTuple):
    """`full`: the legal form stripped, the region kept (as its short name, in front);
    `core`: the region stripped too. Both lowercase, without spaces or punctuation."""

    full: str
    core: str


_BRACKETS = str.maketrans({"[": "(", "]": ")", "【": "(", "】": ")", "〔": "(", "〕": ")",
                           "〈": "(", "〉": ")", "《": "(", "》": ")", "{": "(", "}": ")"})
_SPACES = re.compile(r"\s+")
# Spaces between Chinese characters are typing, not words: 深圳 示例 科技 有限 公司.
_CJK_SPACES = re.compile(r"(?<=[\u3400-\u9fff])\s+(?=[\u3400-\u9fff])")
# Punctuation around a name (a trailing 。 or quotes) is not part of it; brackets are.
_EDGE_PUNCTUATION = re.compile(r"^[^\w(]+|[^\w)]+$")
_NOT_WORD = re.compile(r"[\W_]+")
_IN_BRACKETS = re.compile(r"\(([^()]*)\)")
# Partnership and sole-proprietor notes are legal forms written in brackets.
_LEGAL_NOTE = re.compile(r"^(?:普通合伙|有限合伙|特殊普通合伙|个人独资|个体工商户|)$")
# Longest first, so that 有限责任公司 is not left as 有限责任.
_LEGAL_CN = ("股份有限公司", "有限责任公司", "有限公司", "股份公司", "公司")
_LEGAL_LATIN = re.compile(
    r"(?<![a-z0-9])(?:co\.?\s*,?\s*ltd|co\.?\s*,?\s*limited|company\s+limited|limited|ltd"
    r"|incorporated|inc|l\.?l\.?c|corporation|corp|company|co|gmbh|plc)\.?[\s,.]*$")
_BRANCH_MARKERS = ("分公司", "分厂", "分店", "办事处", "营业部", "分部", "分行", "支行")
_BRANCH_AFTER_LEGAL = re.compile(
    r"^(.+?(?:股份有限公司|有限责任公司|有限公司|公司))(.+(?:" + "|".join(_BRANCH_MARKERS) + "))$")
# A district or county after a city written with 市: 深圳市南山区, 北京市朝阳区.
_DISTRICT = re.compile(r"^[\u4e00-\u9fff]{2,3}[区县]")
_HONORIFICS = ("总经理", "总监", "经理", "先生", "女士", "小姐", "老师", "总")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+$")


def _region_forms() -> dict[str, str]:
    """Every way a region is written in a name → its short name; the country → ""."""
    forms: dict[str, str] = {regions.COUNTRY: ""}

    def add(short: str, *written: str) -> None:
        if short not in regions.SUFFIX_ONLY:
            forms.setdefault(short, short)
        for form in written:
            forms.setdefault(form, short)

    for province, cities in regions.PROVINCES.items():
        add(province, province + "省")
        for city in cities:
            add(city, city + "市")
    for short, (full, cities) in regions.AUTONOMOUS_REGIONS.items():
        add(short, full, short + "自治区")
        for city in cities:
            add(city, city + "市")
    for city in regions.MUNICIPALITIES + regions.COUNTY_CITIES:
        add(city, city + "市")
    for short in regions.SPECIAL_REGIONS:
        add(short, short + "特别行政区")
    for short, full in regions.PREFECTURES.items():
        add(short, full)
    return forms


_REGIONS = _region_forms()
# Whole region names only, longest first: 广东省 before 广东, 长沙 never matches 长城.
_REGION = re.compile("|".join(sorted(map(re.escape, _REGIONS), key=len, reverse=True)))
_CITY_WITH_SUFFIX = frozenset(f for f in _REGIONS if f.endswith("市"))
# In Latin letters a region is a whole word: Shenzhen Example, never Shanghaitang.
_LATIN_REGION = re.compile(
    "(?:" + "|".join(sorted(map(re.escape, regions.LATIN), key=len, reverse=True))
    + ")(?![a-z])")

# Words every town has (大学, 银行, 人民医院, 第一中学): a core made only of these is no
# brand, so the region stays in it. 北京大学 is not 南京大学, 北京银行 not 南京银行.
_GENERIC_WORDS = frozenset((
    "大学", "学院", "学校", "中学", "小学", "幼儿园", "师范", "理工", "工业", "农业", "科技",
    "医科", "财经", "外国语", "职业", "技术", "实验", "附属", "医院", "人民", "中医",
    "中医院", "妇幼", "保健院", "儿童", "卫生院", "疾控", "中心", "银行", "商业", "农商",
    "农村", "信用社", "证券", "保险", "信托", "电视台", "广播", "日报", "晚报", "报社",
    "图书馆", "博物馆", "体育", "会展", "机场", "地铁", "公交", "港务", "电力", "供电",
    "供电局", "燃气", "自来水", "水务", "烟草", "移动", "联通", "电信", "市政", "政府",
    "人民政府", "法院", "检察院", "公安局", "税务局", "医药", "药业", "电子", "贸易",
    "实业", "集团", "控股", "投资", "建设", "建筑", "工程", "传媒", "物流", "机械",
    "商贸", "酒店", "宾馆", "发展", "管理", "服务", "咨询", "信息", "网络", "软件",
    "制造", "食品", "国际", "教育", "文化", "旅游", "地产", "房地产", "置业", "物业",
    "环保", "能源", "汽车", "第一", "第二", "第三", "第四", "第五", "第六", "第七", "第八",
    "第九", "第十", "市立", "省立", "university", "college", "school", "hospital", "bank",
    "group", "holdings", "holding", "international", "technology", "tech", "trading",
))
_GENERIC_LONGEST = max(map(len, _GENERIC_WORDS))


def _generic(core: str) -> bool:
    """Whether the core is nothing but generic words (人民医院, 第一中学, 银行)."""
    if not core:
        return False
    ends = {0}
    for start in range(len(core)):
        if start not in ends:
            continue
        for size in range(2, min(_GENERIC_LONGEST, len(core) - start) + 1):
            if core[start:start + size] in _GENERIC_WORDS:
                ends.add(start + size)
    return len(core) in ends


def generic_place(core: str) -> str | None:
    """The region of a core that is a region plus generic words (北京大学 → 北京), else
    None: two such names in different places are different institutions."""
    match, short = _region_at(core)
    if match is None or not short:
        return None
    return short if _generic(core[match.end():]) else None


def _region_at(text: str, start: int = 0) -> tuple[re.Match[str] | None, str | None]:
    """The region name at `start` (Chinese, or a Latin word) and its short name."""
    match = _REGION.match(text, start)
    if match is not None:
        return match, _REGIONS[match.group()]
    match = _LATIN_REGION.match(text, start)
    return (match, regions.LATIN[match.group()]) if match else (None, None)


@lru_cache(maxsize=1)
def _to_simplified() -> OpenCC:
    return OpenCC("t2s")


@lru_cache(maxsize=1)
def _traditional() -> frozenset[str] | None:
    """Every character t2s may change (alone, or inside one of its phrases, such as 覆 in
    反覆): text without any is already simplified, and converting it, the costliest step
    of a key, is skipped. None when the dictionaries cannot be read: then always convert."""
    folder = Path(opencc.__file__).parent / "dictionary"
    found: set[str] = set()
    try:
        for name in ("TSCharacters.txt", "TSPhrases.txt"):
            with open(folder / name, encoding="utf-8") as lines:
                for line in lines:
                    key, _, values = line.rstrip("\n").partition("\t")
                    value = values.split(" ")[0]
                    if len(key) != len(value):
                        found.update(key)
                    else:
                        found.update(k for k, v in zip(key, value, strict=True) if k != v)
    except OSError:
        return None
    return frozenset(found)


def _simplified(text: str) -> str:
    changeable = _traditional()
    if changeable is not None and changeable.isdisjoint(text):
        return text
    return _to_simplified().convert(text)


def _clean(text: str) -> str:
    """NFKC (full-width → half-width), lowercase, simplified Chinese, one space at most;
    invisible format characters (a zero-width space pasted from a web page) removed."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_BRACKETS)
    if not text.isascii():
        text = "".join(c for c in text if unicodedata.category(c) != "Cf")
        text = _CJK_SPACES.sub("", _simplified(text))
    return _SPACES.sub(" ", text).strip()


def _compact(text: str) -> str:
    return _NOT_WORD.sub("", text)


def _strip_region_prefix(text: str) -> tuple[str | None, str]:
    """(the most specific region in front, the rest): 广东省深圳市南山区示例 → (深圳, 示例).

    A region is stripped only when at least two characters of name remain after it."""
    region: str | None = None
    for _ in range(3):
        match, short = _region_at(text)
        if match is None:
            break
        rest = text[match.end():].lstrip(" ·-_,")
        if len(_compact(rest)) < 2:
            break
        region = short or region
        text = rest
        if match.group() in _CITY_WITH_SUFFIX:
            district = _DISTRICT.match(text)
            if district and len(_compact(text[district.end():])) >= 2:
                text = text[district.end():]
            break
    return region, text


def _whole_region(text: str) -> str | None:
    """The region when `text` is nothing but region names (深圳, 广东深圳, 中国), else None."""
    text = _compact(text)
    region = None
    while text:
        match, short = _region_at(text)
        if match is None:
            return None
        region = short or region or ""
        text = text[match.end():]
    return region


def _strip_brackets(text: str) -> tuple[str | None, str]:
    """Regions and legal notes written in brackets taken out: 示例科技(深圳)有限公司."""
    found: list[str] = []

    def replace(match: re.Match[str]) -> str:
        inside = match.group(1).strip()
        if _LEGAL_NOTE.match(inside):
            return ""
        region = _whole_region(inside)
        if region is None:
            return f"({inside})"
        if region:
            found.append(region)
        return ""

    text = _IN_BRACKETS.sub(replace, text)
    return (found[-1] if found else None), text


def _strip_legal(text: str) -> str:
    """The legal form at the end, repeatedly (示例 co., ltd.; 示例股份有限公司)."""
    while True:
        before = text
        text = _LEGAL_LATIN.sub("", text).rstrip(" ,.-")
        for form in _LEGAL_CN:
            if text.endswith(form) and len(text) > len(form):
                text = text[: -len(form)].rstrip(" ,.-")
                break
        if text == before:
            return text


def _split_branch(text: str) -> tuple[str, str]:
    """(the company, its branch): 示例科技有限公司深圳分公司 → (示例科技有限公司, 深圳分公司);
    示例科技深圳分公司 too. No branch: (text, "")."""
    marker = next((m for m in _BRANCH_MARKERS if text.endswith(m)), None)
    if marker is None:
        return text, ""
    match = _BRANCH_AFTER_LEGAL.match(text)
    if match:
        return match.group(1), match.group(2)
    head = text[: -len(marker)]
    for start in range(len(head)):
        found = _REGION.match(head, start)
        if found and found.end() == len(head) and start >= 2:
            return head[:start], head[start:] + marker
    return text, ""


def _branch_key(branch: str) -> str:
    region, rest = _strip_region_prefix(branch)
    return _compact((region or "") + rest) if region else _compact(branch)


def company_keys(name: str | None) -> CompanyKeys:
    """The full and core keys of a company name; ("", "") for an empty one.

    深圳市示例科技有限公司, 示例科技（深圳）有限公司 and 深圳示例科技有限责任公司 all give
    CompanyKeys(full="深圳示例科技", core="示例科技")."""
    text = _EDGE_PUNCTUATION.sub("", _clean(name or ""))
    if not _compact(text):
        return CompanyKeys("", "")
    text, branch = _split_branch(text)
    bracket_region, text = _strip_brackets(text)
    text = _strip_legal(text)
    before_region = text
    prefix_region, text = _strip_region_prefix(text)
    core = _compact(text)
    if not core:
        core = _compact(_clean(name or ""))
    region = prefix_region or bracket_region
    if _generic(core) and (region or text != before_region):
        # 北京大学, 中国银行: without its region such a name says nothing.
        core = region + core if region else _compact(before_region)
        full = core
    else:
        full = (region or "") + core
    if branch:
        tail = BRANCH_MARK + _branch_key(branch)
        full, core = full + tail, core + tail
    return CompanyKeys(full, core)


def phone_key(raw: str | None) -> str | None:
    """The number matching compares: 13800000000, or 075512345678 without its extension;
    None when `raw` is not a valid Chinese number."""
    if raw is None or not str(raw).strip():
        return None
    try:
        return parse_phone(str(raw)).number
    except PhoneError:
        return None


def is_mobile(key: str | None) -> bool:
    return key is not None and len(key) == 11 and key.startswith("1")


def email_key(raw: str | None) -> str | None:
    """The address stripped and lowercased; None when it is not an e-mail address."""
    if raw is None:
        return None
    text = unicodedata.normalize("NFKC", str(raw)).strip().lower()
    if text.startswith("mailto:"):
        text = text[len("mailto:"):]
    return text if _EMAIL.match(text) else None


def contact_key(raw: str | None) -> str | None:
    """The contact's name without spaces or a trailing honorific (张伟先生, 王总 → 张伟, 王);
    traditional characters simplified. None when empty."""
    if raw is None:
        return None
    text = _SPACES.sub("", _clean(str(raw)))
    if not text:
        return None
    for honorific in _HONORIFICS:
        if text.endswith(honorific) and len(text) > len(honorific):
            return text[: -len(honorific)]
    return text


def company_grams(core: str, size: int = 2) -> list[str]:
    """The distinct character n-grams of a core key (bigrams by default), for blocking; a
    core shorter than `size` is its own gram."""
    text = core.replace(BRANCH_MARK, "")
    if len(text) <= size:
        return [text] if text else []
    return sorted({text[i:i + size] for i in range(len(text) - size + 1)})
