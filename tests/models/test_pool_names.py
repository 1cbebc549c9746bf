"""Hospital names whose last character is also a break word (和) are slotted too."""

import pytest

from yuyue.models.replies.pool import slot_names


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("你好,这里是安和男科医院,有什么问题都能问我。", "你好,这里是{hospital},有什么问题都能问我。"),
        ("我们安和男科医院在解放路", "我们{hospital}在解放路"),
        ("协和医院的专家", "{hospital}的专家"),
        ("我和你去男科医院", "我和你去男科医院"),  # no name before the suffix
        ("我们医院在文三路", "我们医院在文三路"),
    ],
)
def test_hospital_names_ending_in_he(text, expected):
    assert slot_names(text) == expected
