"""Documentation generated from code is current."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_settings_doc_is_current():
    spec = importlib.util.spec_from_file_location("settings_doc", REPO / "scripts" / "settings_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (REPO / "docs" / "settings.md").read_text(encoding="utf-8") == module.render(), (
        "docs/settings.md is stale: run .venv/bin/python scripts/settings_doc.py"
    )
