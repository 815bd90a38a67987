"""The README's code runs as written, so it cannot drift from the library.

Every ``python`` block runs in order in one fresh interpreter, sharing one namespace (a block may
use what an earlier one defined, as a reader following the page would); a plain block introduced
by a line ending in ``says:`` must appear in the output of the python block before it. Every
``bash`` block runs in a temporary directory with the interpreter's ``bin`` first on PATH, except
the setup commands (``scripts/setup.sh``). A block preceded by ``<!-- readme-test: skip -->``
(optionally with the reason before ``-->``) is left out: code that needs what a test cannot
have (a GPU, downloaded weights) or that another test runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import frostline

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SKIP = "<!-- readme-test: skip -->"
MARK = "@@readme-block@@"
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    line: int  # 1-based line of the first line of the body
    before: str  # the prose before the block


def blocks(text: str) -> list[Block]:
    out, last = [], 0
    for match in FENCE.finditer(text):
        before = text[last:match.start()]
        last = match.end()
        if before.rstrip().splitlines()[-1:] and before.rstrip().splitlines()[-1].startswith(
                SKIP[:-4]):
            continue
        out.append(Block(match["lang"], match["body"], text.count("\n", 0, match.start()) + 2,
                         before))
    return out


def _env() -> dict[str, str]:
    src = str(Path(frostline.__file__).resolve().parent.parent)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}


DRIVER = f"""
import json, sys
namespace, page = {{}}, None
for source, line, code in json.load(sys.stdin):
    if source != page:  # every page starts afresh, as a reader would
        namespace, page = {{"__name__": "__main__"}}, source
    print("{MARK}", line, flush=True)
    exec(compile("\\n" * (line - 1) + code, source, "exec"), namespace)
    sys.stdout.flush()
"""


def run_python_blocks(pages: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    """Every python block of ``pages`` in one interpreter, one namespace per page."""
    code = [(page.name, b.line, b.body) for page in pages
            for b in blocks(page.read_text(encoding="utf-8")) if b.lang == "python"]
    return subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(code), text=True,
                          capture_output=True, cwd=cwd, env=_env(), timeout=600)


def test_readme_finds_its_blocks():
    found = blocks(README.read_text(encoding="utf-8"))
    langs = [b.lang for b in found]
    assert langs.count("python") >= 5 and "bash" in langs
    assert any(b.before.rstrip().endswith("says:") for b in found)


@pytest.mark.slow
def test_readme_python_blocks_run_in_order_and_print_what_the_readme_says(tmp_path):
    found = blocks(README.read_text(encoding="utf-8"))
    done = run_python_blocks([README], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    outputs: dict[int, str] = {}
    for chunk in done.stdout.split(MARK)[1:]:
        line, _, out = chunk.partition("\n")
        outputs[int(line)] = out
    last_python = None
    checked = 0
    for block in found:
        if block.lang == "python":
            last_python = block.line
        elif not block.lang and block.before.rstrip().endswith("says:"):
            assert last_python is not None
            shown = "\n".join(line.rstrip() for line in block.body.strip().splitlines())
            printed = "\n".join(line.rstrip() for line in outputs[last_python].splitlines())
            assert shown in printed, f"README line {block.line}:\n{shown}\nprinted:\n{printed}"
            checked += 1
    assert checked >= 1


@pytest.mark.slow
def test_readme_shell_commands_run_as_written(tmp_path):
    commands = [b for b in blocks(README.read_text(encoding="utf-8"))
                if b.lang == "bash" and "scripts/setup.sh" not in b.body]
    assert commands
    for block in commands:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.body], text=True,
                              capture_output=True, cwd=tmp_path, env=_env(), timeout=600)
        assert done.returncode == 0, f"README line {block.line}: {block.body}\n{done.stderr}"
        assert "Traceback" not in done.stderr


def test_readme_states_the_held_out_accuracy_of_the_shipped_weights():
    torch = pytest.importorskip("torch")
    from safetensors import safe_open

    from frostline.demo import pretrained_digit_net
    from frostline.demo._data import source_data

    stated = re.search(r"held-out accuracy of\s+(\d\.\d{4})\s+on the (\d+) held-out images",
                       README.read_text(encoding="utf-8"))
    assert stated, "the README no longer states the shipped weights' held-out accuracy"
    path = Path(frostline.__file__).parent / "data" / "demo_source.safetensors"
    with safe_open(str(path), "pt") as handle:
        recorded = handle.metadata()["heldout_accuracy"]
    _, (x_val, y_val) = source_data()
    with torch.no_grad():
        measured = (pretrained_digit_net().eval()(x_val).argmax(1) == y_val).float().mean()
    assert stated[1] == recorded == f"{measured.item():.4f}"
    assert int(stated[2]) == len(y_val)


GUIDES = sorted((ROOT / "docs" / "guides").glob("*.md"))


@pytest.mark.slow
def test_guide_python_blocks_run_in_order(tmp_path):
    assert len(GUIDES) >= 8
    done = run_python_blocks(GUIDES, tmp_path)
    assert done.returncode == 0, done.stderr[-5000:]


def test_api_reference_documents_every_public_name():
    pytest.importorskip("mkdocs")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from docs_hooks import api_page
    finally:
        sys.path.pop(0)
    entries = re.findall(r"^::: (\S+)$", api_page(), re.M)
    public = {n for n in frostline.__all__ if not n.startswith("__")} | set(frostline._LAZY)
    assert {"apply", "Plan", "Unfreezer", "save_trainable", "thaw"} <= public
    assert sorted(e.rsplit(".", 1)[1] for e in entries) == sorted(public)
