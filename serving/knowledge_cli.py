"""``yuyue knowledge``: the hospital's knowledge base as YAML (format: ``config/knowledge_example.yaml``).

- ``yuyue knowledge import FILE`` (``-``: stdin): check the whole file (fields, references, activities'
  wording through the compliance guard) and store it as the hospital's knowledge, replacing what was
  there; a bad file prints every problem as ``FILE: field.path: problem``, exits 1 and stores nothing.
- ``yuyue knowledge export [--out FILE]``: the stored knowledge as YAML (stdout by default).

The hospital is ``--hospital`` (a hospital's code: its own document, which its chats' replies are filled
from; default: the ``hospital_id`` setting's, the default document serving chats without a hospital and
hospitals without their own); the database ``--url`` (default: the ``database_url`` setting). A running
server serves an import within 2 s.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from yuyue.cli.common import fail, one_line

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from yuyue.config import Settings

knowledge_app = typer.Typer(
    name="knowledge",
    help="The hospital's knowledge (doctors, duty, prices, activities, directions): import / export YAML.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

URL_HELP = "database URL (default: the database_url setting, else sqlite:///<var_dir>/yuyue.db)"
HOSPITAL_HELP = (
    "a hospital's code: its own document (default: the hospital_id setting's, the default document that "
    "serves chats without a hospital and hospitals without their own)"
)


def _engine(url: str | None) -> Engine:
    from sqlalchemy.exc import SQLAlchemyError

    from yuyue.serving.db import SchemaError, create_all, make_engine
    from yuyue.serving.knowledge import hospital_knowledge

    try:
        if url is None:
            from yuyue.config import get_settings

            url = get_settings().resolved_database_url
        engine = make_engine(url)
        create_all(engine, [hospital_knowledge])
        return engine
    except SchemaError as exc:
        fail(str(exc))
    except (ValueError, OSError, SQLAlchemyError) as exc:
        fail(f"cannot open the database: {one_line(exc)}")


def _hospital(hospital: str | None) -> str:
    if hospital is not None:
        from yuyue.serving.knowledge import MAX_HOSPITAL_ID

        hospital = hospital.strip()
        if not hospital or len(hospital) > MAX_HOSPITAL_ID:
            fail(f"--hospital {hospital!r}: give a hospital code of 1 to {MAX_HOSPITAL_ID} characters", 2)
        return hospital
    from yuyue.config import get_settings

    return get_settings().hospital_id


@knowledge_app.command("import")
def import_command(
    file: str = typer.Argument(..., help="YAML file (- for stdin)"),
    hospital: str = typer.Option(None, "--hospital", help=HOSPITAL_HELP),
    url: str = typer.Option(None, "--url", help=URL_HELP),
) -> None:
    """Check a knowledge YAML file whole and store it as the hospital's knowledge (nothing on any problem)."""
    from sqlalchemy.exc import SQLAlchemyError

    from yuyue.serving.knowledge import MAX_YAML_BYTES, KnowledgeError, KnowledgeStore, parse_yaml

    try:
        raw = sys.stdin.buffer.read(MAX_YAML_BYTES + 1) if file == "-" else Path(file).read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{file}: cannot read: {one_line(exc)}")
    try:
        k = parse_yaml(text)
    except KnowledgeError as exc:
        for p in exc.problems:
            typer.echo(f"{file}: {p}", err=True)
        fail(f"{file}: {len(exc.problems)} problem(s); nothing stored")
    hid = _hospital(hospital)
    engine = _engine(url)
    try:
        stored = KnowledgeStore(engine).write(hid, k, "cli:knowledge-import")
    except KnowledgeError as exc:  # parse_yaml checked it already; kept for safety
        fail(f"{file}: {exc}")
    except SQLAlchemyError as exc:
        fail(f"cannot store the knowledge: {one_line(exc)}")
    finally:
        engine.dispose()
    typer.echo(
        f"imported {file} as the knowledge of hospital {hid!r} (revision {stored.rev}): "
        f"{len(k.departments)} departments, {sum(len(d.projects) for d in k.departments)} projects, "
        f"{len(k.doctors)} doctors, {len(k.activities)} activities"
    )


@knowledge_app.command("export")
def export_command(
    out: Path = typer.Option(None, "--out", help="write here instead of stdout"),
    hospital: str = typer.Option(None, "--hospital", help=HOSPITAL_HELP),
    url: str = typer.Option(None, "--url", help=URL_HELP),
) -> None:
    """Print (or write) the hospital's knowledge as YAML; ``yuyue knowledge import`` reads it back."""
    from sqlalchemy.exc import SQLAlchemyError

    from yuyue.serving.knowledge import KnowledgeStore, to_yaml

    hid = _hospital(hospital)
    engine = _engine(url)
    try:
        stored = KnowledgeStore(engine).read(hid)
    except SQLAlchemyError as exc:
        fail(f"cannot read the knowledge: {one_line(exc)}")
    finally:
        engine.dispose()
    text = f"# knowledge of hospital {hid!r}, revision {stored.rev}\n" + to_yaml(stored.knowledge)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out} (revision {stored.rev})", err=True)


def ensure_example_knowledge(settings: Settings) -> list[str]:
    """The demo: when nothing was ever written for the hospital, store the example knowledge
    (``config/knowledge_example.yaml``); returns lines to print."""
    from yuyue.serving.db import make_engine
    from yuyue.serving.knowledge import EXAMPLE, KnowledgeStore, load_example

    engine = make_engine(settings.resolved_database_url)
    try:
        store = KnowledgeStore(engine)
        if store.rev(settings.hospital_id) > 0:
            return []
        store.write(settings.hospital_id, load_example(), "demo")
    finally:
        engine.dispose()
    return [
        f"knowledge base empty: loaded the example ({EXAMPLE.name}: invented doctors, prices, activities); "
        "replace it with `yuyue knowledge import FILE`"
    ]


app = knowledge_app
__all__ = ["ensure_example_knowledge", "knowledge_app"]
