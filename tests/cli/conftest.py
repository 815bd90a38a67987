"""Helpers for command-line tests: run ``main(argv)`` in process or ``frostline`` as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import frostline
from frostline.cli import main

FACTORIES = textwrap.dedent("""
    import torch


    def tied():
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
        model[2].weight = model[0].weight
        return model


    def broken():
        raise RuntimeError("boom")
""")


class Cli:
    """The command line as tests drive it."""

    def __init__(self, capsys: pytest.CaptureFixture) -> None:
        self.capsys = capsys

    def main(self, *argv: str) -> tuple[int, str, str]:
        """``main(argv)`` in this process: (exit code, stdout, stderr)."""
        code = main(list(argv))
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def json(self, *argv: str) -> dict:
        """``main(argv)`` that must succeed and print JSON: the parsed JSON."""
        code, out, err = self.main(*argv)
        assert code == 0, err
        return json.loads(out)

    @staticmethod
    def run(*args: str, script: bool = False, pythonpath: Path | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        """``python -m frostline ARGS`` (or the ``frostline`` script) as a real subprocess.

        PYTHONPATH starts with the folder of the frostline under test, so the console script
        runs this code even where another copy is installed.
        """
        command = ([str(Path(sys.executable).parent / "frostline")] if script
                   else [sys.executable, "-m", "frostline"])
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [
            str(pythonpath or ""), str(Path(frostline.__file__).parent.parent),
            env.get("PYTHONPATH", "")]))
        return subprocess.run([*command, *args], capture_output=True, text=True, env=env,
                              cwd=cwd, timeout=300)

    @staticmethod
    def error_line(stderr: str) -> str:
        """The single ``frostline: error:`` line of ``stderr`` (fails on more, or a traceback)."""
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr
        assert lines[0].startswith("frostline: error: ")
        assert "Traceback" not in stderr
        return lines[0]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture) -> Cli:
    return Cli(capsys)


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path with ``cli_factories`` (``tied``: shared weights; ``broken``)."""
    (tmp_path / "cli_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path
