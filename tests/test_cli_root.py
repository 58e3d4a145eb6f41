"""The CLI root: --version, --help, one-line errors and exit codes."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from anomaly_ssl import __version__
from anomaly_ssl.cli import cli


def test_version_and_help():
    runner = CliRunner()
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("simulate", "inspect", "pretrain", "score", "evaluate"):
        assert command in result.output


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_python_dash_m_entry_point_reports_config_errors_in_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "anomaly_ssl", "--set", "model.d_modle=3", "inspect", "nothing.csv"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "did you mean 'model.d_model'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
