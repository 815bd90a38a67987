"""Small real Flax Linen models for the JAX backend tests (names as Linen and big_vision give them)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class Deep(nn.Module):
    """Thirteen Dense layers named by Linen itself: Dense_0 .. Dense_12."""

    depth: int = 13

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth - 1):
            x = jax.nn.relu(nn.Dense(4)(x))
        return nn.Dense(2)(x)


class Mixed(nn.Module):
    """Dense_0, three Block_i, Dense_1: Linen's per-class counters say nothing of their order."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4)(x)
        for _ in range(3):
            x = x + Block()(x)
        return nn.Dense(2)(x)


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(nn.LayerNorm()(x))


class BnBlock(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        return nn.BatchNorm(use_running_average=not train)(jax.nn.relu(nn.Dense(4)(x)))


class BnNet(nn.Module):
    """stem, three Dense+BatchNorm blocks, head; statistics in ``batch_stats``."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Dense(4, name="stem")(x)
        for _ in range(3):
            x = BnBlock()(x, train)
        return nn.Dense(2, name="head")(x)


class EncoderBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm()(x)
        y = nn.MultiHeadDotProductAttention(num_heads=2)(y, y)
        x = x + y
        return x + nn.Dense(8)(nn.LayerNorm()(x))


class Encoder(nn.Module):
    depth: int

    @nn.compact
    def __call__(self, x):
        for i in range(self.depth):
            x = EncoderBlock(name=f"encoderblock_{i}")(x)
        return nn.LayerNorm(name="encoder_norm")(x)


class ViT(nn.Module):
    """big_vision's ViT layout: embedding, cls, pos_embedding, Transformer/encoderblock_i, head."""

    depth: int = 12

    @nn.compact
    def __call__(self, image):
        x = nn.Conv(8, (4, 4), strides=(4, 4), name="embedding")(image)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        cls = self.param("cls", nn.initializers.zeros, (1, 1, c))
        x = jnp.concatenate([jnp.tile(cls, (n, 1, 1)), x], axis=1)
        x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, h * w + 1, c))
        x = Encoder(self.depth, name="Transformer")(x)
        return nn.Dense(3, name="head")(x[:, 0])


def init(module: nn.Module, x: jax.Array, seed: int = 0) -> dict:
    return module.init(jax.random.key(seed), x)


def after_jitted_step(module: nn.Module, variables: dict, x: jax.Array) -> dict:
    """The variables after one jitted adamw step on all params: JAX hands dicts back sorted."""
    tx = optax.adamw(1e-2, weight_decay=0.1)

    @jax.jit
    def step(variables, opt_state):
        def loss(params):
            out = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
            out = out[0] if isinstance(out, tuple) else out
            return jnp.mean(out ** 2)

        grads = jax.grad(loss)(variables["params"])
        updates, opt_state = tx.update(grads, opt_state, variables["params"])
        return {**variables, "params": optax.apply_updates(variables["params"], updates)}

    return step(variables, tx.init(variables["params"]))


class ScannedBlock(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return x + nn.Dense(4)(nn.LayerNorm()(x)), None


class ScannedEncoder(nn.Module):
    """big_vision's ``scan=True`` layout: one ``encoderblock`` whose params stack the layers."""

    depth: int = 4

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4, name="embedding")(x)
        stack = nn.scan(ScannedBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                        length=self.depth)
        x, _ = stack(name="encoderblock")(x, None)
        return nn.Dense(2, name="head")(x)
