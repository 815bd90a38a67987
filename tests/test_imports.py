"""The core and the top-level package import no framework."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import frostline.core

CHECK = "import sys; {imports}; print('torch' in sys.modules, 'jax' in sys.modules)"


@pytest.mark.parametrize("imports", [
    "import frostline",
    "import " + ", ".join(f"frostline.core.{m.name}"
                          for m in pkgutil.iter_modules(frostline.core.__path__)),
    "import frostline as fl; fl.Plan.lock(2).to_yaml(); fl.parse('name:bias & !group:-1:')",
    "from frostline import *",
])
def test_imports_load_neither_torch_nor_jax(imports):
    done = subprocess.run([sys.executable, "-c", CHECK.format(imports=imports)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_the_package_ships_its_type_marker():
    from importlib.resources import files

    assert files("frostline").joinpath("py.typed").is_file()


def test_public_return_types_are_exported():
    import frostline as fl

    for name in ("Resolved", "Grouping", "Summary", "Explanation", "Mask", "Groups",
                 "CheckpointInfo", "Snapshot", "SweepResult"):
        assert isinstance(getattr(fl, name), type), name
