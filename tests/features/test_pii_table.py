"""The ways visitors really write personal data, and look-alikes that are not personal data (issue 14 §1)."""

from __future__ import annotations

import pytest

from yuyue.features.normalize import normalize
from yuyue.features.pii import find_pii

P = "13966012847"
ROWS: list[tuple[str, list[tuple[str, str]]]] = [
    # phones: separators of every kind
    ("电话13966012847", [("phone", P)]),
    ("139 6601 2847", [("phone", P)]),
    ("139-6601-2847", [("phone", P)]),
    ("139.6601.2847", [("phone", P)]),
    ("139—6601—2847", [("phone", P)]),
    ("139\u200b6601\u200b2847", [("phone", P)]),
    ("1\u200c3\u200c9\u200c6\u200c6\u200c0\u200c1\u200c2\u200c8\u200c4\u200c7", [("phone", P)]),
    ("139  6601  2847", [("phone", P)]),
    ("1-3-9-6-6-0-1-2-8-4-7", [("phone", P)]),
    ("手机 139 - 6601 - 2847 谢谢", [("phone", P)]),
    # full-width and circled digits
    ("１３９６６０１２８４７", [("phone", P)]),
    ("①③⑨⑥⑥⓪①②⑧④⑦", [("phone", P)]),
    ("电话：１３９－６６０１－２８４７", [("phone", P)]),
    # Chinese numerals
    ("一三九六六零一二八四七", [("phone", P)]),
    ("幺三九六六〇幺二八四七", [("phone", P)]),
    ("壹叁玖陆陆零壹贰捌肆柒", [("phone", P)]),
    ("一三九 六六零一 二八四七", [("phone", P)]),
    ("电话是一五二两三四五六七八九", [("phone", "15223456789")]),
    ("qq 三二四九八零七", [("qq", "3249807")]),
    ("扣扣：幺二三四五六七八", [("qq", "12345678")]),
    # country codes
    ("+86 139 6601 2847", [("phone", P)]),
    ("0086-13966012847", [("phone", P)]),
    ("(+86) 13966012847", [("phone", P)]),
    # two numbers
    ("13966012847 13812345678", [("phone", P), ("phone", "13812345678")]),
    ("13966012847/13812345678", [("phone", P), ("phone", "13812345678")]),
    # landlines after a cue
    ("座机0571-88886666", [("phone", "057188886666")]),
    ("家里电话 010-66668888", [("phone", "01066668888")]),
    ("电话(0571)88886666", [("phone", "057188886666")]),
    ("打我固话 021 66668888", [("phone", "02166668888")]),
    # QQ
    ("qq号是12345", [("qq", "12345")]),
    ("QQ 123456789", [("qq", "123456789")]),
    ("扣扣 87654321", [("qq", "87654321")]),
    ("企鹅 87654321", [("qq", "87654321")]),
    ("my qq is 87654321", [("qq", "87654321")]),
    ("q号: 2233445", [("qq", "2233445")]),
    ("123456@qq.com", [("qq", "123456")]),
    # WeChat: Chinese, pinyin and English cues
    ("微信 lucy_0921", [("wechat", "lucy_0921")]),
    ("my wechat is lucy_0921", [("wechat", "lucy_0921")]),
    ("WeChat: lucy_0921", [("wechat", "lucy_0921")]),
    ("wechat id lucy_0921", [("wechat", "lucy_0921")]),
    ("wx lucy_0921", [("wechat", "lucy_0921")]),
    ("vx：lucy_0921", [("wechat", "lucy_0921")]),
    ("威信 lucy_0921", [("wechat", "lucy_0921")]),
    ("weixin lucy_0921", [("wechat", "lucy_0921")]),
    ("wei xin lucy_0921", [("wechat", "lucy_0921")]),
    ("加v lucy_0921", [("wechat", "lucy_0921")]),
    ("薇信号是 lucy_0921", [("wechat", "lucy_0921")]),
    ("ｗｘ：ｌｕｃｙ＿０９２１", [("wechat", "lucy_0921")]),
    # e-mail
    ("邮箱 lucy.wang@163.com", [("email", "lucy.wang@163.com")]),
    ("email: a_b-c@hospital.com.cn 谢谢", [("email", "a_b-c@hospital.com.cn")]),
    ("发我 zhang.san+med@gmail.com", [("email", "zhang.san+med@gmail.com")]),
    # addresses
    ("我住解放路12号", [("address", "解放路12号")]),
    ("地址是人民大道88号3栋", [("address", "人民大道88号3栋")]),
    ("在中山北街5号2单元301室", [("address", "中山北街5号2单元301室")]),
    ("阳光小区3栋2单元501室", [("address", "阳光小区3栋2单元501室")]),
    ("家在翠苑5幢", [("address", "翠苑5幢")]),
    ("3号楼2单元501室", [("address", "3号楼2单元501室")]),
    ("送到金地花园12栋", [("address", "金地花园12栋")]),
    # ID card with checksum
    ("身份证11010519491231002X", [("id_card", "11010519491231002X")]),
    ("110105 19491231 002X", [("id_card", "11010519491231002X")]),
    ("身份证号：１１０１０５１９４９１２３１００２ｘ", [("id_card", "11010519491231002X")]),
    # names, with and without a cue
    ("张海涛明天过去", [("surname", "张")]),
    ("好的张海涛先生", [("surname", "张")]),
    ("李明女士您好", [("surname", "李")]),
    ("我叫王小明", [("surname", "王")]),
    ("联系人：刘德华", [("surname", "刘")]),
    ("王女士", [("surname", "王")]),
    ("叫我小王", [("surname", "王")]),
    ("赵雅琪下午到", [("surname", "赵")]),
    # several in one message
    (
        "我叫王小明，电话139 6601 2847，微信 lucy_0921",
        [("surname", "王"), ("phone", P), ("wechat", "lucy_0921")],
    ),
]

NEGATIVES = [
    "3800元",
    "价格是13800元",
    "一共12800块",
    "¥13966012847",
    "2025-03-05",
    "2025.03.05",
    "2025年3月5日下午3点",
    "二〇二五年三月五日",
    "订单号13966012847",
    "预约号 20250305123456",
    "单号：139 6601 2847",
    "25岁",
    "我今年三十五岁",
    "身高165cm体重55kg",
    "一米六五",
    "0571-88888888",
    "400-123-4567",
    "6222 0213 8123 4567 890",
    "银行卡6222021381234567890",
    "139 6601 2847 5",
    "12345678901",
    "1.3966012847",
    "https://x.com/a?id=13966012847",
    "www.hospital.cn/p/13966012847.html",
    "身份证号 110105194912310021",
    "微信支付可以吗",
    "加我WeChat",
    "qq音乐",
    "一二三四五",
    "三三两两",
    "术后一两天",
    "做了五六次",
    "3号楼在哪",
    "地铁2号线",
    "走路10分钟",
    "一路上",
    "解放路地铁站",
    "小区门口",
    "这位先生",
    "一位女士",
    "张医生明天在吗",
    "王主任下午坐诊",
    "医生明天上班吗",
    "我明天过去",
    "黄金明天涨吗",
    "大概明天到",
    "价格明天有变化吗",
    "请问小姐",
    "老百姓都做得起",
    "user@",
    "@qq",
    "v1.2.3",
]


@pytest.mark.parametrize(("text", "expected"), ROWS)
def test_spellings(text: str, expected: list[tuple[str, str]]) -> None:
    assert [(s.type, s.value) for s in find_pii(normalize(text))] == expected


@pytest.mark.parametrize("text", NEGATIVES)
def test_look_alikes(text: str) -> None:
    assert find_pii(normalize(text)) == []


def test_table_is_large() -> None:
    assert len(ROWS) + len(NEGATIVES) >= 100
    assert {t for _, e in ROWS for t, _ in e} >= {
        "phone",
        "qq",
        "wechat",
        "email",
        "address",
        "id_card",
        "surname",
    }
