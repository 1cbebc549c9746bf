"""The code's shape (issue 19): no function in serving/ is 60 lines or longer.

A function's length is its definition's span, ``end_lineno - lineno + 1`` (decorators not counted,
nested functions counted in their parent and on their own). Split a long one into named helpers.
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVING = Path(__file__).resolve().parents[1] / "serving"
LIMIT = 60


def function_lengths(root: Path) -> list[tuple[int, str]]:
    """(length, "path:line name") for every def and async def under ``root``, longest first."""
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                where = f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"
                out.append((node.end_lineno - node.lineno + 1, where))
    return sorted(out, reverse=True)


def test_the_measure_counts_a_functions_lines(tmp_path: Path) -> None:
    src = "def short():\n    return 1\n\n\nasync def longer():\n" + "    x = 1\n" * 70 + "    return x\n"
    (tmp_path / "m.py").write_text(src)
    lengths = function_lengths(tmp_path)
    assert [n for n, _ in lengths] == [72, 2]
    assert lengths[0][1].endswith("m.py:5 longer")


def test_no_function_in_serving_is_60_lines_or_longer() -> None:
    lengths = function_lengths(SERVING)
    assert len(lengths) > 200, f"found only {len(lengths)} functions under {SERVING}"
    too_long = [f"{n} lines: {where}" for n, where in lengths if n >= LIMIT]
    assert not too_long, f"functions of {LIMIT} lines or more (split them):\n" + "\n".join(too_long)
