"""Match keys as people write companies, phones, e-mails and names (field reports C14, C15)."""

from __future__ import annotations

import pytest
from rapidfuzz import fuzz

from handlers import regions
from handlers.matching import COMPANY_THRESHOLD, company_score
from handlers.normalize import (
    CompanyKeys,
    company_grams,
    company_keys,
    contact_key,
    email_key,
    is_mobile,
    phone_key,
)

# C14: the pairs the field report says are one company, each spelled two ways.
C14_SAME = [
    ("深圳示例科技有限公司", "深圳示例科技有限责任公司"),
    ("示例科技（深圳）有限公司", "深圳示例科技有限公司"),
    ("示例科技(深圳)有限公司", "示例科技（深圳）有限公司"),
    ("深圳市示例科技有限公司", "示例科技"),
]


@pytest.mark.parametrize("one, other", C14_SAME)
def test_c14_spellings_of_one_company_have_one_core(one, other):
    assert company_keys(one).core == company_keys(other).core == "示例科技"


def test_c14_a_different_brand_in_the_same_city_scores_low():
    one, other = company_keys("深圳示例科技有限公司"), company_keys("深圳样本科技有限公司")
    assert (one.core, other.core) == ("示例科技", "样本科技")
    assert fuzz.ratio(one.core, other.core) == 50


def test_the_full_key_keeps_the_region_wherever_it_was_written():
    expected = CompanyKeys(full="深圳示例科技", core="示例科技")
    for name in ("深圳市示例科技有限公司", "示例科技（深圳）有限公司",
                 "广东省深圳市示例科技有限公司", "广东深圳示例科技股份有限公司",
                 "深圳市南山区示例科技有限公司", "示例科技【深圳】有限公司"):
        assert company_keys(name) == expected, name
    assert company_keys("广州示例科技有限公司") == CompanyKeys("广州示例科技", "示例科技")


@pytest.mark.parametrize("name, core", [
    ("ＡＢＣ科技（深圳）有限公司", "abc科技"),
    ("  示例   科技  有限公司 ", "示例科技"),
    ("深圳市範例電子有限公司", "范例电子"),
    ("臺灣樣本電子股份有限公司", "样本电子"),
    ("示例贸易(普通合伙)", "示例贸易"),
    ("示例（中国）有限公司", "示例"),
    ("中国示例集团有限公司", "示例集团"),
    ("内蒙古自治区示例乳业有限公司", "示例乳业"),
    ("新疆维吾尔自治区乌鲁木齐市示例物流", "示例物流"),
    ("大理白族自治州示例茶业", "示例茶业"),
])
def test_width_spacing_script_and_regions_do_not_hide_the_core(name, core):
    assert company_keys(name).core == core


@pytest.mark.parametrize("name", [
    "Example Tech Co., Ltd.", "Example Tech Co.,Ltd", "EXAMPLE TECH CO. LTD", "Example Tech Inc.",
    "Example Tech LLC", "Example Tech Corp.", "Example Tech Limited", "example  tech",
    "Example Tech Company Limited", "Ｅｘａｍｐｌｅ Ｔｅｃｈ Ｃｏ．， Ｌｔｄ．",
])
def test_latin_legal_forms_are_stripped(name):
    assert company_keys(name) == CompanyKeys("exampletech", "exampletech")


def test_a_latin_word_ending_like_a_legal_form_stays():
    assert company_keys("Taco Shop").core == "tacoshop"
    assert company_keys("示例科技co.,ltd").core == "示例科技"


def test_a_name_that_is_only_a_region_is_kept():
    assert company_keys("深圳有限公司") == CompanyKeys("深圳", "深圳")
    assert company_keys("北京").core == "北京"
    assert company_keys("深圳市").core == "深圳市"


def test_only_whole_region_names_are_stripped():
    assert company_keys("长城科技有限公司") == CompanyKeys("长城科技", "长城科技")
    assert company_keys("长沙示例有限公司") == CompanyKeys("长沙示例", "示例")
    assert company_keys("吉利汽车").core == "吉利汽车"  # 吉林 is two characters, not one


def test_short_regions_that_are_everyday_words_need_their_suffix():
    assert company_keys("阿里巴巴网络技术有限公司").core == "阿里巴巴网络技术"
    assert company_keys("安康食品有限公司").core == "安康食品"
    assert company_keys("安康市示例食品有限公司") == CompanyKeys("安康示例食品", "示例食品")


def test_branches_keep_where_they_are():
    shenzhen = company_keys("示例科技有限公司深圳分公司")
    assert shenzhen == CompanyKeys("示例科技/深圳分公司", "示例科技/深圳分公司")
    assert company_keys("示例科技有限公司深圳市分公司") == shenzhen
    assert company_keys("示例科技深圳分公司") == shenzhen
    assert company_keys("示例科技有限公司广州分公司").core == "示例科技/广州分公司"


def test_empty_names_have_empty_keys():
    assert company_keys(None) == company_keys("  ") == company_keys("（）") == CompanyKeys("", "")


def test_the_region_list_covers_the_whole_country():
    mainland = [city for province, cities in regions.PROVINCES.items() if province != "台湾"
                for city in cities]
    mainland += [city for _, cities in regions.AUTONOMOUS_REGIONS.values() for city in cities]
    assert len(mainland) == len(set(mainland)) == 293
    provincial = (len(regions.PROVINCES) + len(regions.AUTONOMOUS_REGIONS)
                  + len(regions.MUNICIPALITIES) + len(regions.SPECIAL_REGIONS))
    assert provincial == 34
    for city in ("石家庄", "呼和浩特", "乌鲁木齐", "儋州", "毕节", "海东", "深圳"):
        assert city in regions.prefecture_cities()


# C15: every way of writing one mobile, and one landline.
C15_MOBILES = ["+86 138-0000-0000", "0086 13800000000", "(+86)13800000000", "86-138 0000 0000",
               "１３８００００００００", " 138 0000 0000 ", "13800000000.0", "+8613800000000"]
C15_LANDLINES = ["0755-1234 5678", "+86 755 12345678", "(0755)12345678", "075512345678转801",
                 "075512345678-801"]


@pytest.mark.parametrize("raw", C15_MOBILES)
def test_c15_every_mobile_has_one_key(raw):
    assert phone_key(raw) == "13800000000"
    assert is_mobile(phone_key(raw))


@pytest.mark.parametrize("raw", C15_LANDLINES)
def test_c15_every_landline_has_one_key_without_its_extension(raw):
    assert phone_key(raw) == "075512345678"
    assert not is_mobile(phone_key(raw))


@pytest.mark.parametrize("raw", ["1380000000", "", "   ", None, "-", "1.38E+10", "abc"])
def test_c15_invalid_numbers_have_no_key(raw):
    assert phone_key(raw) is None


@pytest.mark.parametrize("raw, key", [
    (" ZhangWei@Example.COM ", "zhangwei@example.com"),
    ("ｚｗ＠ｅｘａｍｐｌｅ．ｃｏｍ", "zw@example.com"),
    ("mailto:Sales@Example.cn", "sales@example.cn"),
    ("-", None), ("zhangwei", None), ("zw@example", None), ("z w@example.com", None),
    ("", None), (None, None), ("a@@example.com", None),
])
def test_email_keys(raw, key):
    assert email_key(raw) == key


@pytest.mark.parametrize("raw, key", [
    ("张伟先生", "张伟"), ("王总", "王"), ("李 经理", "李"), ("陈女士", "陈"), ("刘小姐", "刘"),
    ("赵老师", "赵"), ("孙总监", "孙"), ("周总经理", "周"), ("张 伟", "张伟"), ("張偉", "张伟"),
    ("先生", "先生"), ("总", "总"), ("Ｌｉ Ｌｅｉ", "lilei"), ("", None), (None, None),
])
def test_contact_keys(raw, key):
    assert contact_key(raw) == key


def test_company_grams_are_distinct_bigrams():
    assert company_grams("示例科技") == ["例科", "示例", "科技"]
    assert company_grams("示例科技/深圳分公司") == sorted(
        {"示例", "例科", "科技", "技深", "深圳", "圳分", "分公", "公司"})
    assert company_grams("示") == ["示"]
    assert company_grams("") == []


@pytest.mark.parametrize(("one", "other"), [
    ("北京大学", "南京大学"),
    ("北京银行", "南京银行"),
    ("深圳市第一人民医院", "广州市第一人民医院"),
    ("北京大学", "北京理工大学"),
])
def test_a_name_made_of_generic_words_keeps_its_region(one, other):
    # Stripping 北京 from 北京大学 would leave 大学, and every city has one.
    a, b = company_keys(one), company_keys(other)
    assert a.core != b.core
    assert company_score(a.core, b.core) < COMPANY_THRESHOLD
    assert company_keys("中国银行").core == "中国银行"
    assert company_keys("北京市第一中学").core == "北京第一中学"


@pytest.mark.parametrize("name", [
    "深圳示例科技有限公司。", "“深圳示例科技有限公司”", "\u200b深圳示例科技有限公司",
    "深圳 示例 科技 有限 公司", "深圳示例科技有限公司\ufeff",
])
def test_stray_punctuation_invisible_characters_and_spacing_do_not_hide_a_name(name):
    assert company_keys(name) == CompanyKeys("深圳示例科技", "示例科技")


def test_a_region_in_latin_letters_is_a_region():
    expected = CompanyKeys("深圳exampletech", "exampletech")
    assert company_keys("Example Tech (Shenzhen) Co., Ltd.") == expected
    assert company_keys("Shenzhen Example Tech Co., Ltd.") == expected
    assert company_keys("Example Tech (China) Co., Ltd.") == CompanyKeys("exampletech",
                                                                        "exampletech")
    assert company_keys("Shanghaitang Ltd").core == "shanghaitang"  # not 上海 + tang


def test_simplified_text_skips_the_conversion_and_traditional_text_is_converted():
    from handlers.normalize import _simplified, _to_simplified

    assert _simplified("深圳示例科技") == "深圳示例科技"
    assert _simplified("臺灣範例電子") == "台湾范例电子"
    # 覆 alone is unchanged, but 反覆 becomes 反复: the phrase's characters count too.
    assert _simplified("反覆") == _to_simplified().convert("反覆") == "反复"
