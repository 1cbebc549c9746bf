"""The console's page scripts: ``/console/page_<id>.js`` serves only files named so from serving/static."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("name", ["page_nope", "console", "PAGE_model", "page_" + "x" * 40, "..%2Fconsole"])
def test_unknown_or_malformed_script_names_are_404(api, name):
    r = api.get(f"/console/{name}.js")
    assert r.status_code == 404
    assert "text/javascript" not in r.headers.get("content-type", "")


def test_console_page_loads_its_page_scripts(api):
    page = api.get("/").text
    assert "window.yuyueConsole" in page
    for src in ("/console/page_model.js", "/console/page_knowledge.js"):
        assert f'<script src="{src}"></script>' in page
