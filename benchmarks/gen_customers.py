"""A customer base for the duplicate benchmark: fixed seed, invented companies and people.

Names are region + brand + industry + legal form (深圳市示例科技有限公司); contacts are
common names; mobiles 13x/15x/18x/19x and landlines with area codes are invented and
unique per company; e-mails use example domains. Into it go:
- duplicates of a company, one or two more records each (groups of 2 and of 3), spelled
  as people re-enter them: another legal form, the region as a prefix or in brackets, 市
  or the province added, full-width letters, traditional characters, a wrong character
  in the brand, the short name; the phone as +86 / 0086 / spaces / dashes / full-width /
  an extension; the e-mail in another case; the contact with 先生 / 女士 / 总 / 经理, or a
  colleague. Each keeps two of company, phone and e-mail recognisably the same, as a
  person comparing the records would judge (the product's "similar");
- look-alikes that are not duplicates: the same brand in other cities (and branches, 分公司,
  of one company), namesake contacts at different companies, and switchboard numbers
  shared by several companies in one building or one group.

`generate` returns the records and, for each, the company it really is (ground truth).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from opencc import OpenCC

from handlers import regions

SEED = 20261207
SURNAMES = "张王李赵刘陈杨黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"
GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛",
         "明", "超", "霞", "平", "刚", "建华", "志强", "秀英", "海燕", "晓明", "文博", "思远",
         "雨婷", "子涵", "浩然", "欣怡", "俊杰", "嘉怡", "宇航", "佳琪", "梓萱", "一鸣", "立新"]
BRAND_CHARS = ("华信达通宏泰盛鑫源恒瑞丰康安宁创新优联众和智汇德利天广博鼎飞科捷凯阳光明星"
               "辰宇晨峰海川山林木金银玉龙凤腾跃成立兴旺昌隆嘉美佳锦程远航际桥港湾城邦兆亿"
               "万千百合欣悦朗润泽清远致诚睿思拓展领航启迪卓越")
LATIN_BRANDS = ["ABC", "KX", "Nova", "Vita", "Lumi", "Q8", "iTop", "Zen", "Max", "Aero"]
INDUSTRIES = ["科技", "电子", "贸易", "网络科技", "信息技术", "机械", "化工", "生物科技",
              "医疗器械", "教育科技", "物流", "建材", "食品", "服装", "新能源", "软件",
              "实业", "文化传媒", "环保科技", "精密制造", "智能装备", "光电", "电气", "包装",
              "家具", "汽车配件"]
LEGAL = ["有限公司", "有限公司", "有限公司", "有限责任公司", "股份有限公司"]
MOBILE_PREFIXES = ["138", "139", "137", "136", "135", "150", "151", "158", "186", "188", "177",
                   "199"]
AREA_CODES = {"深圳": "0755", "广州": "020", "北京": "010", "上海": "021", "杭州": "0571",
              "成都": "028", "武汉": "027", "南京": "025", "苏州": "0512", "西安": "029",
              "天津": "022", "重庆": "023", "长沙": "0731", "郑州": "0371", "青岛": "0532"}
DOMAINS = ["example.com", "example.cn", "example.net", "sample.cn", "mail.example.org"]
HONORIFICS = ["先生", "女士", "总", "经理"]


@dataclass(frozen=True)
class Company:
    """What a company really is; records render it in different ways."""

    entity: int
    province: str | None
    city: str
    brand: str
    industry: str
    legal: str
    contact: str
    mobile: str | None
    landline: str | None
    email: str | None


@dataclass(frozen=True)
class Record:
    company: str
    contact: str
    phone: str | None
    email: str | None
    entity: int  # ground truth: records of one entity are one customer
    role: str  # original | duplicate | lookalike | switchboard | plain


@dataclass
class Dataset:
    records: list[Record]
    companies: list[Company]  # those stored once as they are (originals and plain ones)

    def true_pairs(self, ids: list[int]) -> set[tuple[int, int]]:
        """Pairs of stored ids (ids[i] is records[i]) that are one customer."""
        by_entity: dict[int, list[int]] = {}
        for stored_id, record in zip(ids, self.records, strict=True):
            by_entity.setdefault(record.entity, []).append(stored_id)
        pairs = set()
        for members in by_entity.values():
            for i, a in enumerate(members):
                pairs.update((min(a, b), max(a, b)) for b in members[i + 1:])
        return pairs


class _Maker:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.entities = 0
        self.mobiles: set[str] = set()
        self.landlines: set[str] = set()
        self.places = [(p, c) for p, cities in regions.PROVINCES.items() if p != "台湾"
                       for c in cities if c not in regions.SUFFIX_ONLY]
        self.places += [(None, c) for c in regions.MUNICIPALITIES]
        self.places += [(None, c) for c in AREA_CODES if c not in regions.MUNICIPALITIES] * 20
        self.to_traditional = OpenCC("s2t")

    def person(self) -> str:
        return self.rng.choice(SURNAMES) + self.rng.choice(GIVEN)

    def mobile(self) -> str:
        while True:
            number = self.rng.choice(MOBILE_PREFIXES) + f"{self.rng.randrange(10**8):08d}"
            if number not in self.mobiles:
                self.mobiles.add(number)
                return number

    def landline(self, city: str) -> str:
        code = AREA_CODES.get(city) or self.rng.choice(list(AREA_CODES.values()))
        while True:
            number = code + str(self.rng.randrange(2 * 10**7, 9 * 10**7))
            if number not in self.landlines:
                self.landlines.add(number)
                return number

    def brand(self) -> str:
        if self.rng.random() < 0.05:
            return self.rng.choice(LATIN_BRANDS) + self.rng.choice(BRAND_CHARS)
        size = 2 if self.rng.random() < 0.8 else 3
        return "".join(self.rng.sample(BRAND_CHARS, size))

    def company(self, **fixed: object) -> Company:
        self.entities += 1
        province, city = self.rng.choice(self.places)
        phone_kind = self.rng.random()
        values: dict[str, object] = {
            "entity": self.entities, "province": province, "city": city,
            "brand": self.brand(), "industry": self.rng.choice(INDUSTRIES),
            "legal": self.rng.choice(LEGAL), "contact": self.person(),
            "mobile": self.mobile() if phone_kind < 0.85 else None,
            "landline": self.landline(city) if phone_kind >= 0.7 else None,
            "email": (f"{self.rng.choice('abcdefghjkmnpqrstwxyz')}{self.entities}@"
                      f"{self.rng.choice(DOMAINS)}") if self.rng.random() < 0.6 else None,
        }
        values.update(fixed)
        return Company(**values)  # type: ignore[arg-type]

    # Rendering ------------------------------------------------------------------------

    def name(self, c: Company, style: str) -> str:
        body = c.brand + c.industry
        if style == "prefix":
            return c.city + body + c.legal
        if style == "city":
            return c.city + "市" + body + c.legal
        if style == "province":
            if c.province is None:
                return c.city + "市" + body + c.legal
            return c.province + "省" + c.city + "市" + body + c.legal
        if style == "bracket":
            return f"{body}（{c.city}）{c.legal}"
        if style == "ascii_bracket":
            return f"{body}({c.city}){c.legal}"
        if style == "short":
            return body
        raise ValueError(style)

    def phone(self, c: Company, varied: bool) -> str | None:
        number = c.mobile or c.landline
        if number is None or not varied:
            return number
        if number.startswith("1"):
            a, b, d = number[:3], number[3:7], number[7:]
            forms = [f"+86 {a}-{b}-{d}", f"0086 {number}", f"(+86){number}", f"86-{a} {b} {d}",
                     f"{a} {b} {d}", f"+86{number}", number.translate(_FULL_WIDTH_DIGITS)]
        else:
            cut = 3 if number.startswith(("010", "02")) else 4
            area, rest = number[:cut], number[cut:]
            forms = [f"{area}-{rest[:4]} {rest[4:]}", f"+86 {area[1:]} {rest}", f"({area}){rest}",
                     f"{number}转{self.rng.randrange(100, 999)}", f"{area}-{rest}"]
        return self.rng.choice(forms)

    def record(self, c: Company, role: str, *, style: str = "prefix", varied: bool = False,
               phone: bool = True, email: bool = True, contact: str | None = None) -> Record:
        return Record(self.name(c, style), contact or c.contact,
                      self.phone(c, varied) if phone else None,
                      (self.email_variant(c.email) if varied else c.email) if email else None,
                      c.entity, role)

    def email_variant(self, email: str | None) -> str | None:
        if email is None:
            return None
        local, _, domain = email.partition("@")
        return self.rng.choice([email.upper(), f" {local.capitalize()}@{domain.upper()} ",
                                email.capitalize(), email])

    # Duplicates -----------------------------------------------------------------------

    def typo(self, c: Company) -> Company:
        brand = list(c.brand)
        spot = self.rng.randrange(len(brand))
        brand[spot] = self.rng.choice([ch for ch in BRAND_CHARS if ch not in c.brand])
        return replace(c, brand="".join(brand))

    def duplicate(self, c: Company, keep_phone: bool = False) -> Record:
        """Another record of `c`: its company spelled another way, and two of company,
        phone and e-mail kept (the phone always with keep_phone)."""
        variant = replace(c, legal=self.rng.choice(LEGAL))
        twist = self.rng.random()
        if twist < 0.1 and len(c.brand + c.industry) >= 4:
            variant = self.typo(variant)
        style = self.rng.choice(["prefix", "city", "province", "bracket", "ascii_bracket",
                                 "short"])
        name = self.name(variant, style)
        if 0.1 <= twist < 0.25:
            name = self.to_traditional.convert(name)
        elif 0.25 <= twist < 0.35:
            name = name.translate(_FULL_WIDTH)
        contact = c.contact
        roll = self.rng.random()
        if roll < 0.4:
            contact = c.contact[0] + self.rng.choice(HONORIFICS)
            contact = c.contact + self.rng.choice(HONORIFICS[:2]) if roll < 0.2 else contact
        elif roll < 0.55:
            contact = self.person()  # a colleague at the same company
        has_phone = c.mobile is not None or c.landline is not None
        if c.email is None or not has_phone:
            keep_phone, keep_email = has_phone, c.email is not None
        elif keep_phone:
            keep_email = self.rng.random() < 0.5
        else:
            keep_phone, keep_email = self.rng.choice([(True, True), (True, False),
                                                      (False, True), (True, True)])
        phone = self.phone(c, True) if keep_phone else None
        if not keep_phone and has_phone and self.rng.random() < 0.5:
            phone = self.mobile()  # the contact's new number
        email = self.email_variant(c.email) if keep_email else None
        if not keep_phone and not keep_email:
            phone = self.phone(c, True)
        return Record(name, contact, phone, email, c.entity, "duplicate")


_FULL_WIDTH = {ord(ch): ord(ch) + 0xFEE0 for ch in
               "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789()"}
_FULL_WIDTH_DIGITS = {ord(ch): ord(ch) + 0xFEE0 for ch in "0123456789"}


def generate(total: int = 100_000, seed: int = SEED) -> Dataset:
    """`total` records: 6 % of companies stored twice, 1 % three times, look-alikes, the
    rest plain companies; shuffled with the seed."""
    make = _Maker(seed)
    records: list[Record] = []
    companies: list[Company] = []
    pairs, triples = total * 6 // 100, total // 100
    for _ in range(pairs):
        c = make.company()
        companies.append(c)
        records += [make.record(c, "original"), make.duplicate(c)]
    for _ in range(triples):
        c = make.company(mobile=make.mobile())
        companies.append(c)
        # A group of three: the number kept in each, so that every two of them agree.
        records += [make.record(c, "original"), make.duplicate(c, keep_phone=True),
                    make.duplicate(c, keep_phone=True)]
    for _ in range(total * 15 // 1000):
        # The same brand in two cities, or two branches of one company: not duplicates.
        head = make.company()
        other = make.company(brand=head.brand, industry=head.industry, legal=head.legal)
        if make.rng.random() < 0.5:
            records += [make.record(head, "lookalike"), make.record(other, "lookalike")]
        else:
            for c in (head, other):
                branch = f"{c.brand}{c.industry}{c.legal}{c.city}分公司"
                records.append(Record(branch, c.contact, make.phone(c, False), c.email,
                                      c.entity, "lookalike"))
    for _ in range(total * 15 // 1000):
        # Namesakes: one contact name at two unrelated companies.
        name = make.person()
        for _ in range(2):
            records.append(make.record(make.company(contact=name), "lookalike"))
    for n in range(total // 1000):
        # A switchboard: one number for the companies of a building, or for a group's
        # branches in several cities.
        size = make.rng.choice([3, 5, 8, 12, 20, 40])
        number = make.landline("深圳")
        group = make.company() if n % 3 == 0 else None
        cities = make.rng.sample(sorted({city for _, city in make.places}), size)
        for city in cities:
            c = make.company(mobile=None, landline=number)
            if group is not None:
                c = replace(c, brand=group.brand, industry=group.industry, legal=group.legal,
                            city=city)
                records.append(Record(f"{c.brand}{c.industry}{c.legal}{c.city}分公司",
                                      make.person(), make.phone(c, True), c.email, c.entity,
                                      "switchboard"))
            else:
                records.append(make.record(c, "switchboard", varied=True))
    while len(records) < total:
        c = make.company()
        companies.append(c)
        records.append(make.record(c, "plain",
                                   style=make.rng.choice(["prefix", "city", "bracket"])))
    records = records[:total]
    make.rng.shuffle(records)
    return Dataset(records, companies)


def probes(data: Dataset, count: int, seed: int = SEED + 1) -> list[Record]:
    """New entries at the door: half re-enter a company the base holds (spelled another
    way), half are companies it does not hold."""
    make = _Maker(seed)
    make.entities = 10**7  # apart from the base's entities
    make.mobiles = {c.mobile for c in data.companies if c.mobile}
    known = make.rng.sample(data.companies, count // 2)
    out = [make.duplicate(c) for c in known]
    out += [make.record(make.company(), "plain") for _ in range(count - len(known))]
    make.rng.shuffle(out)
    return out
