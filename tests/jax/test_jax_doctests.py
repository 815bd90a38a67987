"""The examples in the JAX backend's docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import frostline.jax

MODULES = ["frostline.jax", *sorted(f"frostline.jax.{m.name}"
                                    for m in pkgutil.iter_modules(frostline.jax.__path__))]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, module_name):
        runner.run(test, out=out.write)
    assert runner.summarize(verbose=False).failed == 0, out.getvalue()
