"""Generated reference docs (scripts/gen_docs.py): complete, deterministic, and ``--check`` catches drift."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import click
import pytest

from anomaly_ssl import config as config_module
from anomaly_ssl.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gen_docs.py"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def docs(gen):
    return gen.generate()


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_generation_is_deterministic(gen, docs):
    assert sorted(docs) == ["CLI.md", "CONFIG.md"]
    assert gen.generate() == docs


def test_check_passes_on_fresh_docs_and_fails_on_edited_or_missing_ones(tmp_path, docs):
    assert _run("--out", str(tmp_path)).returncode == 0
    assert (tmp_path / "CLI.md").read_text(encoding="utf-8") == docs["CLI.md"]
    fresh = _run("--check", "--out", str(tmp_path))
    assert fresh.returncode == 0, fresh.stderr
    (tmp_path / "CLI.md").write_text(docs["CLI.md"] + "hand edit\n", encoding="utf-8")
    (tmp_path / "CONFIG.md").unlink()
    stale = _run("--check", "--out", str(tmp_path))
    assert stale.returncode == 1
    assert "stale: CLI.md, CONFIG.md" in stale.stderr
    assert "-hand edit" in stale.stderr


def test_cli_reference_has_every_command_and_option(docs):
    text = docs["CLI.md"]
    ctx = click.Context(cli, info_name="anomaly-ssl")
    names = cli.list_commands(ctx)
    assert "inspect" in names
    for name in names:
        assert f"## `anomaly-ssl {name}`" in text
    inspect_cmd = cli.get_command(ctx, "inspect")
    for param in inspect_cmd.params:
        for opt in param.opts if isinstance(param, click.Option) else [param.human_readable_name]:
            assert f"`{opt}`" in text
    assert "anomaly-ssl inspect [OPTIONS] DATA" in text
    for name in set(COMMANDS) - set(names):  # declared, module not written yet
        assert f"`anomaly-ssl {name}` | *Not available in this checkout" in text


def test_a_command_that_fails_to_import_is_listed_with_a_note(gen):
    @click.command("good")
    @click.option("--level", type=click.IntRange(min=1), default=3, help="How <high> it goes.")
    def good(level: int) -> None:
        """Do the good thing.

        More words.
        """

    class Broken(click.Group):
        def list_commands(self, ctx):
            return ["good", "bad"]

        def get_command(self, ctx, name):
            if name == "bad":
                raise ImportError("No module named 'torchx'")
            return good

    text = gen.cli_reference(Broken("tool"), prog="tool")
    assert "## `tool bad`" in text
    assert "failed to import (ImportError: No module named 'torchx')" in text
    assert text.index("`tool bad`") < text.index("`tool good`")  # sorted
    assert "| `--level` | integer ≥ 1 | `3` | How &lt;high> it goes. |" in text
    assert "[`tool good`](#tool-good) | Do the good thing." in text


def test_config_reference_has_every_key_default_and_comment(docs):
    text = docs["CONFIG.md"]
    root = config_module.Config()
    for section in dataclasses.fields(root):
        value = getattr(root, section.name)
        if not dataclasses.is_dataclass(value):
            assert f"| `{section.name}` |" in text
            continue
        assert f"## `{section.name}`" in text
        for f in dataclasses.fields(value):
            assert f"| `{section.name}.{f.name}` |" in text
    assert "| `data.delimiter` | `str \\| None` | `null` | field delimiter for CSV-like files;" in text
    assert "| `data.format` | one of `auto`, `events`, `sequences`, `hdfs`, `lines` | `auto` |" in text
    for path in (ROOT / "configs").glob("*.yaml"):
        assert f"| `{path.stem}` |" in text
    assert "--set KEY=VALUE" in text and "base:" in text


def test_field_comments_joins_consecutive_hash_colon_lines_only(gen):
    source = (
        "class A:\n"
        "    #: first line\n"
        "    #: second line\n"
        "    x: int = 1\n"
        "    # a plain comment is not documentation\n"
        "    y: int = 2\n"
        "    z: int = 3  #: trailing comments do not count\n"
    )
    expected = {("A", "x"): "first line second line", ("A", "y"): "", ("A", "z"): ""}
    assert gen.field_comments(source) == expected
