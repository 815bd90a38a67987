"""``import frostline`` works with JAX alone or torch alone: the other is blocked at import."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BLOCKER = """
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Blocked())
"""


def run_without(blocked: set[str], body: str) -> str:
    code = f"BLOCKED = {blocked!r}\n" + BLOCKER + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_jax_backend_works_with_torch_blocked():
    out = run_without({"torch"}, """
        import frostline as fl
        import equinox as eqx, jax, jax.numpy as jnp
        model = eqx.nn.MLP(3, 2, 4, 2, key=jax.random.key(0))
        trainable, frozen = fl.partition(model, fl.lock(model, unlocked_groups=1))
        assert trainable.layers[0].weight is None and trainable.layers[-1].weight is not None
        assert eqx.tree_equal(fl.combine(trainable, frozen), model)
        assert not any(name.split(".")[0] == "torch" for name in sys.modules)
        print(fl.groups(model).names)
    """)
    assert out.strip() == "['layers.0', 'layers.1', 'layers.2']"


@pytest.mark.slow
def test_torch_backend_works_with_jax_blocked():
    pytest.importorskip("torch")
    out = run_without({"jax", "jaxlib", "flax", "equinox", "optax"}, """
        import frostline as fl
        import torch
        net = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(3)])
        fl.lock(net, unlocked_groups=1)
        assert not any(name.split(".")[0] == "jax" for name in sys.modules)
        print([p.requires_grad for p in net.parameters()])
    """)
    assert out.strip() == "[False, False, False, False, True, True]"
