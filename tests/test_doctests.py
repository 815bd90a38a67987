"""The examples in docstrings run and print what they say (one test per module)."""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import frostline.core

CORE = sorted(f"frostline.core.{m.name}" for m in pkgutil.iter_modules(frostline.core.__path__))
GUARD = ["frostline.torch._fingerprint", "frostline.torch._diagnose",
         "frostline.torch._optimizer_check"]
MODULES = ["frostline", "frostline._api", "frostline._errors", "frostline.torch", *GUARD, *CORE]


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
