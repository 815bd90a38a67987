"""The examples in docstrings run and print what they say (one test per module)."""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import frostline.core

CORE = sorted(f"frostline.core.{m.name}" for m in pkgutil.iter_modules(frostline.core.__path__))
SWEEP = [f"frostline.torch._sweep.{m}"
         for m in ("_settings", "_data", "_halving", "_run", "_choose")]
MODULES = ["frostline", "frostline._api", "frostline._errors", "frostline.torch", *CORE, *SWEEP]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module_name)
    for test in tests:
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, out.getvalue()
