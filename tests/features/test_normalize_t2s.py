"""Traditional → simplified folding keeps simplified text as written."""

import pytest

from yuyue.features.normalize import normalize, normalize_mapped


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("打坏了", "打坏了"),  # OpenCC's phrase table alone gives 打坯了
        ("做坏了怎么办", "做坏了怎么办"),
        ("壞了", "坏了"),
        ("發現頭髮乾燥", "发现头发干燥"),
        ("回覆", "回复"),  # a phrase-level conversion that is right stays
        ("麵包", "面包"),
    ],
)
def test_simplified_folding(text, expected):
    assert normalize(text) == expected
    assert normalize_mapped(text)[0] == expected
