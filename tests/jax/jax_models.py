"""Small real JAX models shared by the JAX backend tests."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from flax import nnx


class Block(eqx.Module):
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear

    def __init__(self, width: int, *, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.fc1 = eqx.nn.Linear(width, width, key=k1)
        self.fc2 = eqx.nn.Linear(width, width, key=k2)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.fc2(jax.nn.gelu(self.fc1(x)))


class Net(eqx.Module):
    """stem, an ``eqx.nn.MLP`` called ``A``, a list of blocks, a head (the Equinox guide's shape)."""

    stem: eqx.nn.Linear
    A: eqx.nn.MLP
    layers: list
    head: eqx.nn.Linear
    scale: float = 0.5

    def __init__(self, width: int = 8, depth: int = 3, *, key: jax.Array):
        keys = jax.random.split(key, depth + 3)
        self.stem = eqx.nn.Linear(3, width, key=keys[0])
        self.A = eqx.nn.MLP(width, width, width, 2, key=keys[1])
        self.layers = [Block(width, key=k) for k in keys[2:-1]]
        self.head = eqx.nn.Linear(width, 2, key=keys[-1])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.A(self.stem(x))
        for block in self.layers:
            x = block(x)
        return self.head(x) * self.scale


def eqx_net(seed: int = 0, **kwargs) -> Net:
    return Net(key=jax.random.key(seed), **kwargs)


class BnNet(eqx.Module):
    """Linear -> BatchNorm -> Linear -> BatchNorm -> head, with statistics in ``eqx.nn.State``."""

    lin0: eqx.nn.Linear
    bn0: eqx.nn.BatchNorm
    lin1: eqx.nn.Linear
    bn1: eqx.nn.BatchNorm
    head: eqx.nn.Linear

    def __init__(self, *, key: jax.Array):
        k0, k1, k2 = jax.random.split(key, 3)
        self.lin0 = eqx.nn.Linear(3, 4, key=k0)
        self.bn0 = eqx.nn.BatchNorm(4, "batch", mode="batch")
        self.lin1 = eqx.nn.Linear(4, 4, key=k1)
        self.bn1 = eqx.nn.BatchNorm(4, "batch", mode="batch")
        self.head = eqx.nn.Linear(4, 2, key=k2)

    def __call__(self, x: jax.Array, state: eqx.nn.State):
        x, state = self.bn0(self.lin0(x), state)
        x, state = self.bn1(jax.nn.relu(self.lin1(x)), state)
        return self.head(x), state


class BnBlock(eqx.Module):
    lin: eqx.nn.Linear
    bn: eqx.nn.BatchNorm

    def __init__(self, width: int, *, key: jax.Array):
        self.lin = eqx.nn.Linear(width, width, key=key)
        self.bn = eqx.nn.BatchNorm(width, "batch", mode="batch")

    def __call__(self, x: jax.Array, state: eqx.nn.State):
        return self.bn(jax.nn.relu(self.lin(x)), state)


class BnBlocks(eqx.Module):
    """stem, three Linear+BatchNorm blocks, head: the Equinox twin of ``NnxNet``."""

    stem: eqx.nn.Linear
    blocks: list
    head: eqx.nn.Linear

    def __init__(self, width: int = 4, depth: int = 3, *, key: jax.Array):
        keys = jax.random.split(key, depth + 2)
        self.stem = eqx.nn.Linear(3, width, key=keys[0])
        self.blocks = [BnBlock(width, key=k) for k in keys[1:-1]]
        self.head = eqx.nn.Linear(width, 2, key=keys[-1])

    def __call__(self, x: jax.Array, state: eqx.nn.State):
        x = self.stem(x)
        for block in self.blocks:
            x, state = block(x, state)
        return self.head(x), state


class NnxBlock(nnx.Module):
    def __init__(self, width: int, rngs: nnx.Rngs):
        self.lin = nnx.Linear(width, width, rngs=rngs)
        self.bn = nnx.BatchNorm(width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(jax.nn.relu(self.lin(x)))


class NnxNet(nnx.Module):
    """stem, a list of Linear+BatchNorm blocks, head: attributes assigned in that order."""

    def __init__(self, width: int = 4, depth: int = 3, seed: int = 0):
        rngs = nnx.Rngs(seed)
        self.stem = nnx.Linear(3, width, rngs=rngs)
        self.blocks = nnx.List([NnxBlock(width, rngs) for _ in range(depth)])
        self.head = nnx.Linear(width, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def linen_style_params(seed: int = 0) -> dict:
    """A Flax Linen ``params`` dict (Dense_0, three Block_i, Dense_1), built by hand."""
    keys = iter(jax.random.split(jax.random.key(seed), 16))

    def dense(n_in: int, n_out: int) -> dict:
        return {"kernel": jax.random.normal(next(keys), (n_in, n_out)), "bias": jnp.zeros(n_out)}

    params = {"Dense_0": dense(3, 4)}
    for i in range(3):
        params[f"Block_{i}"] = {"Dense_0": dense(4, 4), "LayerNorm_0": {
            "scale": jnp.ones(4), "bias": jnp.zeros(4)}}
    params["Dense_1"] = dense(4, 2)
    return {"params": params}


def batch(seed: int = 1, n: int = 16, features: int = 3):
    kx, ky = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kx, (n, features)), jax.random.normal(ky, (n, 2))


def arrays_by_name(tree) -> dict:
    """Every array leaf of a (possibly holed) pytree as a NumPy array, by dotted key path."""
    import numpy as np

    def key(k):
        return str(getattr(k, "name", getattr(k, "idx", getattr(k, "key", k))))

    return {".".join(key(k) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0] if eqx.is_array(leaf)}
