"""mkdocs hooks: pages made from the repository's own files, so the site cannot drift from them.

* ``index.md`` is README.md, ``benchmarks.md`` is benchmarks/README.md (their links rewritten
  to the site's pages);
* ``api.md`` documents every public name of ``frostline`` (``__all__`` and the names imported on
  first use), grouped by the module it lives in, so a public name added to the package appears
  in the reference without editing any page.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
# (module prefix, section title): the first prefix that fits a name's module wins.
SECTIONS = [
    ("frostline._api", "Functions on any model"),
    ("frostline.core.resolve", "Functions on any model"),
    ("frostline.core.plan", "Plans"),
    ("frostline.core.selectors", "Selectors"),
    ("frostline.core.parser", "Selectors"),
    ("frostline.core.groups", "Layer groups"),
    ("frostline.core.leaves", "Tree views"),
    ("frostline.core.mask", "Tree views"),
    ("frostline.core.recommend", "Choosing the frost line"),
    ("frostline.core.schedule", "Training"),
    ("frostline.torch._sweep", "Choosing the frost line"),
    ("frostline.torch._checkpoint", "Checkpoints"),
    ("frostline.torch", "Training (PyTorch)"),
    ("frostline.jax", "JAX"),
    ("frostline.integrations", "Integrations"),
    ("frostline._report", "Reports"),
    ("frostline._errors", "Errors"),
    ("frostline.core", "Core"),
]
LINKS = [(r"\]\(docs/", "]("), (r"\]\(benchmarks/README\.md", "](benchmarks.md"),
         (r"\]\(\.\./docs/", "]("), (r"\]\(\.\./README\.md", "](index.md")]


def _rewrite(text: str) -> str:
    for pattern, replacement in LINKS:
        text = re.sub(pattern, replacement, text)
    return text


def public_names() -> list[str]:
    """``frostline.__all__`` and the names it imports on first use (those needing a framework)."""
    import frostline

    names = [n for n in frostline.__all__ if not n.startswith("__")]
    return names + [n for n in getattr(frostline, "_LAZY", {}) if n not in names]


def api_page() -> str:
    """The API reference page: one mkdocstrings entry per public name, by section."""
    import frostline

    lazy = getattr(frostline, "_LAZY", {})
    sections: dict[str, list[str]] = {title: [] for _, title in SECTIONS}
    for name in public_names():
        module = lazy.get(name) or getattr(importlib.import_module("frostline"), name).__module__
        title = next((t for prefix, t in SECTIONS if module == prefix
                      or module.startswith(prefix + ".")), "Other")
        sections.setdefault(title, []).append(f"::: {module}.{name}")
    lines = ["# API reference", "",
             "Every public name of `frostline` (`import frostline as fl`), from its docstring.",
             ""]
    for title, entries in sections.items():
        if entries:
            lines += [f"## {title}", "", *(e + "\n" for e in entries)]
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Links from a top-level docs page to the README or the benchmarks go to their pages."""
    if "/" in page.file.src_uri:
        return markdown
    return _rewrite(markdown)


def on_files(files: Files, config) -> Files:
    pages = {
        "index.md": _rewrite((ROOT / "README.md").read_text(encoding="utf-8")),
        "benchmarks.md": _rewrite((ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")),
        "api.md": api_page(),
    }
    for uri, content in pages.items():
        files.append(File.generated(config, uri, content=content))
    return files
