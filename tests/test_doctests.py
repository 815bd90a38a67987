"""The examples in docstrings run and print what they say (one test per module)."""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import frostline

# Every module but the entry point `python -m frostline` (importing it runs the command line).
MODULES = ["frostline", *sorted(m.name for m in pkgutil.walk_packages(frostline.__path__,
                                                                       "frostline.")
                                if m.name != "frostline.__main__")]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name):
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:  # an optional integration whose library is absent
        if (exc.name or "").split(".")[0] == "frostline":
            raise
        pytest.skip(f"{module_name} needs {exc.name}")
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module_name)
    for test in tests:
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, out.getvalue()
