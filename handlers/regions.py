"""Chinese administrative regions as company names use them: provinces, autonomous
regions, municipalities, special administrative regions and prefecture-level divisions.

Data only, compiled for salesbot from the administrative divisions of the mainland
(34 provincial divisions; 293 prefecture-level cities; autonomous prefectures, leagues
and prefectures). Names are given without their suffix (市, 省, 自治区 …); the forms a
company name may carry are built in handlers.normalize.
"""

from __future__ import annotations

# Provinces (written with 省), keyed to their prefecture-level cities.
PROVINCES: dict[str, tuple[str, ...]] = {
    "河北": ("石家庄", "唐山", "秦皇岛", "邯郸", "邢台", "保定", "张家口", "承德", "沧州",
             "廊坊", "衡水"),
    "山西": ("太原", "大同", "阳泉", "长治", "晋城", "朔州", "晋中", "运城", "忻州", "临汾",
             "吕梁"),
    "辽宁": ("沈阳", "大连", "鞍山", "抚顺", "本溪", "丹东", "锦州", "营口", "阜新", "辽阳",
             "盘锦", "铁岭", "朝阳", "葫芦岛"),
    "吉林": ("长春", "吉林", "四平", "辽源", "通化", "白山", "松原", "白城"),
    "黑龙江": ("哈尔滨", "齐齐哈尔", "鸡西", "鹤岗", "双鸭山", "大庆", "伊春", "佳木斯",
               "七台河", "牡丹江", "黑河", "绥化"),
    "江苏": ("南京", "无锡", "徐州", "常州", "苏州", "南通", "连云港", "淮安", "盐城", "扬州",
             "镇江", "泰州", "宿迁"),
    "浙江": ("杭州", "宁波", "温州", "嘉兴", "湖州", "绍兴", "金华", "衢州", "舟山", "台州",
             "丽水"),
    "安徽": ("合肥", "芜湖", "蚌埠", "淮南", "马鞍山", "淮北", "铜陵", "安庆", "黄山", "滁州",
             "阜阳", "宿州", "六安", "亳州", "池州", "宣城"),
    "福建": ("福州", "厦门", "莆田", "三明", "泉州", "漳州", "南平", "龙岩", "宁德"),
    "江西": ("南昌", "景德镇", "萍乡", "九江", "新余", "鹰潭", "赣州", "吉安", "宜春", "抚州",
             "上饶"),
    "山东": ("济南", "青岛", "淄博", "枣庄", "东营", "烟台", "潍坊", "济宁", "泰安", "威海",
             "日照", "临沂", "德州", "聊城", "滨州", "菏泽"),
    "河南": ("郑州", "开封", "洛阳", "平顶山", "安阳", "鹤壁", "新乡", "焦作", "濮阳", "许昌",
             "漯河", "三门峡", "南阳", "商丘", "信阳", "周口", "驻马店"),
    "湖北": ("武汉", "黄石", "十堰", "宜昌", "襄阳", "鄂州", "荆门", "孝感", "荆州", "黄冈",
             "咸宁", "随州"),
    "湖南": ("长沙", "株洲", "湘潭", "衡阳", "邵阳", "岳阳", "常德", "张家界", "益阳", "郴州",
             "永州", "怀化", "娄底"),
    "广东": ("广州", "韶关", "深圳", "珠海", "汕头", "佛山", "江门", "湛江", "茂名", "肇庆",
             "惠州", "梅州", "汕尾", "河源", "阳江", "清远", "东莞", "中山", "潮州", "揭阳",
             "云浮"),
    "海南": ("海口", "三亚", "三沙", "儋州"),
    "四川": ("成都", "自贡", "攀枝花", "泸州", "德阳", "绵阳", "广元", "遂宁", "内江", "乐山",
             "南充", "眉山", "宜宾", "广安", "达州", "雅安", "巴中", "资阳"),
    "贵州": ("贵阳", "六盘水", "遵义", "安顺", "毕节", "铜仁"),
    "云南": ("昆明", "曲靖", "玉溪", "保山", "昭通", "丽江", "普洱", "临沧"),
    "陕西": ("西安", "铜川", "宝鸡", "咸阳", "渭南", "延安", "汉中", "榆林", "安康", "商洛"),
    "甘肃": ("兰州", "嘉峪关", "金昌", "白银", "天水", "武威", "张掖", "平凉", "酒泉", "庆阳",
             "定西", "陇南"),
    "青海": ("西宁", "海东"),
    # Taiwan's cities as names from there carry them (not mainland prefectures).
    "台湾": ("台北", "新北", "桃园", "台中", "台南", "高雄", "基隆", "新竹", "嘉义"),
}

# Autonomous regions: the short name and the full name.
AUTONOMOUS_REGIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "内蒙古": ("内蒙古自治区", ("呼和浩特", "包头", "乌海", "赤峰", "通辽", "鄂尔多斯",
                               "呼伦贝尔", "巴彦淖尔", "乌兰察布")),
    "广西": ("广西壮族自治区", ("南宁", "柳州", "桂林", "梧州", "北海", "防城港", "钦州",
                                "贵港", "玉林", "百色", "贺州", "河池", "来宾", "崇左")),
    "西藏": ("西藏自治区", ("拉萨", "日喀则", "昌都", "林芝", "山南", "那曲")),
    "宁夏": ("宁夏回族自治区", ("银川", "石嘴山", "吴忠", "固原", "中卫")),
    "新疆": ("新疆维吾尔自治区", ("乌鲁木齐", "克拉玛依", "吐鲁番", "哈密")),
}

# County-level cities governed directly by their province, often written like a city.
COUNTY_CITIES: tuple[str, ...] = ("济源", "仙桃", "潜江", "天门")

# Municipalities directly under the central government (written with 市).
MUNICIPALITIES: tuple[str, ...] = ("北京", "天津", "上海", "重庆")

# Special administrative regions (written with 特别行政区).
SPECIAL_REGIONS: tuple[str, ...] = ("香港", "澳门")

# Prefecture-level divisions that are not cities: the short name and the full name.
PREFECTURES: dict[str, str] = {
    "兴安": "兴安盟", "锡林郭勒": "锡林郭勒盟", "阿拉善": "阿拉善盟",
    "延边": "延边朝鲜族自治州", "大兴安岭": "大兴安岭地区", "恩施": "恩施土家族苗族自治州",
    "湘西": "湘西土家族苗族自治州", "阿坝": "阿坝藏族羌族自治州", "甘孜": "甘孜藏族自治州",
    "凉山": "凉山彝族自治州", "黔西南": "黔西南布依族苗族自治州",
    "黔东南": "黔东南苗族侗族自治州", "黔南": "黔南布依族苗族自治州",
    "楚雄": "楚雄彝族自治州", "红河": "红河哈尼族彝族自治州", "文山": "文山壮族苗族自治州",
    "西双版纳": "西双版纳傣族自治州", "大理": "大理白族自治州",
    "德宏": "德宏傣族景颇族自治州", "怒江": "怒江傈僳族自治州", "迪庆": "迪庆藏族自治州",
    "阿里": "阿里地区", "临夏": "临夏回族自治州", "甘南": "甘南藏族自治州",
    "海北": "海北藏族自治州", "黄南": "黄南藏族自治州", "海南": "海南藏族自治州",
    "果洛": "果洛藏族自治州", "玉树": "玉树藏族自治州", "海西": "海西蒙古族藏族自治州",
    "昌吉": "昌吉回族自治州", "博尔塔拉": "博尔塔拉蒙古自治州",
    "巴音郭楞": "巴音郭楞蒙古自治州", "克孜勒苏": "克孜勒苏柯尔克孜自治州",
    "伊犁": "伊犁哈萨克自治州", "阿克苏": "阿克苏地区", "喀什": "喀什地区",
    "和田": "和田地区", "塔城": "塔城地区", "阿勒泰": "阿勒泰地区", "神农架": "神农架林区",
}

# Short names that are also everyday words or brands (阿里巴巴, 安康 as a wish): they count
# as a region only with their suffix (阿里地区, 安康市).
SUFFIX_ONLY: frozenset[str] = frozenset({
    "阿里", "安康", "白银", "来宾", "普洱", "大同", "朝阳", "白山", "黄山", "玉树", "兴安",
})

# The country, as in 示例科技（中国）有限公司 or 中国示例集团.
COUNTRY = "中国"


def prefecture_cities() -> list[str]:
    """Every city in the lists above: prefecture-level, Taiwan's, county-level ones."""
    cities = [city for group in PROVINCES.values() for city in group]
    cities += [city for _, group in AUTONOMOUS_REGIONS.values() for city in group]
    return cities + list(COUNTY_CITIES)

# Regions as names written in Latin letters carry them (Example Tech (Shenzhen) Co., Ltd.):
# the pinyin or English name → the short name above; the country → "".
LATIN: dict[str, str] = {
    "china": "", "prc": "",
    "beijing": "北京", "shanghai": "上海", "tianjin": "天津", "chongqing": "重庆",
    "guangzhou": "广州", "shenzhen": "深圳", "hangzhou": "杭州", "nanjing": "南京",
    "suzhou": "苏州", "wuhan": "武汉", "chengdu": "成都", "xian": "西安", "xi'an": "西安",
    "dongguan": "东莞", "foshan": "佛山", "xiamen": "厦门", "qingdao": "青岛",
    "dalian": "大连", "ningbo": "宁波", "shenyang": "沈阳", "changsha": "长沙",
    "zhengzhou": "郑州", "jinan": "济南", "hefei": "合肥", "fuzhou": "福州",
    "kunming": "昆明", "harbin": "哈尔滨", "changchun": "长春", "wuxi": "无锡",
    "zhuhai": "珠海", "zhongshan": "中山", "huizhou": "惠州", "shantou": "汕头",
    "nanning": "南宁", "guiyang": "贵阳", "nanchang": "南昌", "taiyuan": "太原",
    "shijiazhuang": "石家庄", "lanzhou": "兰州", "haikou": "海口", "sanya": "三亚",
    "urumqi": "乌鲁木齐", "hohhot": "呼和浩特", "yantai": "烟台", "weihai": "威海",
    "wenzhou": "温州", "shaoxing": "绍兴", "jiaxing": "嘉兴", "changzhou": "常州",
    "nantong": "南通", "xuzhou": "徐州", "tangshan": "唐山", "baoding": "保定",
    "hong kong": "香港", "hongkong": "香港", "macau": "澳门", "macao": "澳门",
    "taipei": "台北", "guangdong": "广东", "jiangsu": "江苏", "zhejiang": "浙江",
    "shandong": "山东", "fujian": "福建", "sichuan": "四川", "hubei": "湖北",
    "hunan": "湖南", "henan": "河南", "hebei": "河北", "anhui": "安徽", "jiangxi": "江西",
    "liaoning": "辽宁", "jilin": "吉林", "heilongjiang": "黑龙江", "shanxi": "山西",
    "shaanxi": "陕西", "yunnan": "云南", "guizhou": "贵州", "guangxi": "广西",
    "hainan": "海南",
}
