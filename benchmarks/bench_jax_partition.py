"""A jitted training step through ``fl.partition`` against the alternatives, side by side.

Model: stem, 12 residual MLP blocks, head; the last 2 blocks and the head train
(``Plan.lock(3)``), AdamW with weight decay. Four steps, each jitted with ``eqx.filter_jit``:

- ``frostline``: ``fl.partition`` once, outside the step; ``fl.combine`` inside; gradients of
  the trainable part only.
- ``eqx.partition``: the same, with a filter spec written by hand (the reference: 1.00).
- ``multi_transform``: full gradients, ``optax.multi_transform`` with ``set_to_zero`` on the
  frozen leaves.
- ``full fine-tuning``: every leaf trains.

Rounds interleave the variants so machine load affects them alike; the figure per variant is
the median over rounds of the mean step time. Run:

    XLA_FLAGS=--xla_force_host_platform_device_count=1 .venv/bin/python benchmarks/bench_jax_partition.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import frostline as fl


class Block(eqx.Module):
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear

    def __init__(self, width: int, *, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.fc1 = eqx.nn.Linear(width, 2 * width, key=k1)
        self.fc2 = eqx.nn.Linear(2 * width, width, key=k2)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.fc2(jax.nn.gelu(self.fc1(x)))


class Net(eqx.Module):
    stem: eqx.nn.Linear
    layers: list
    head: eqx.nn.Linear

    def __init__(self, width: int, depth: int, *, key: jax.Array):
        keys = jax.random.split(key, depth + 2)
        self.stem = eqx.nn.Linear(32, width, key=keys[0])
        self.layers = [Block(width, key=k) for k in keys[1:-1]]
        self.head = eqx.nn.Linear(width, 10, key=keys[-1])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x)
        for block in self.layers:
            x = block(x)
        return self.head(x)


def loss_fn(model: Net, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)


def partitioned_step(tx, combine):
    @eqx.filter_jit
    def step(trainable, frozen, opt_state, x, y):
        grads = eqx.filter_grad(lambda t: loss_fn(combine(t, frozen), x, y))(trainable)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(trainable, eqx.is_array))
        return eqx.apply_updates(trainable, updates), opt_state

    return step


def full_step(tx):
    @eqx.filter_jit
    def step(model, opt_state, x, y):
        grads = eqx.filter_grad(loss_fn)(model, x, y)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state

    return step


def hand_spec(model: Net, depth: int):
    """The filter spec a user writes by hand: the last two blocks and the head."""
    def trainable(path, leaf):
        top = path[0].name
        return eqx.is_array(leaf) and (
            top == "head" or (top == "layers" and path[1].idx >= depth - 2))

    return jax.tree_util.tree_map_with_path(trainable, model)


def build_variants(model: Net, depth: int):
    adamw = optax.adamw(1e-3, weight_decay=0.05)
    plan = fl.Plan.lock(3)
    variants = {}

    trainable, frozen = fl.partition(model, plan)
    step = partitioned_step(adamw, fl.combine)
    variants["frostline"] = (step, [trainable, frozen,
                                    adamw.init(eqx.filter(trainable, eqx.is_array))])

    trainable, frozen = eqx.partition(model, hand_spec(model, depth))
    step = partitioned_step(adamw, eqx.combine)
    variants["eqx.partition"] = (step, [trainable, frozen,
                                        adamw.init(eqx.filter(trainable, eqx.is_array))])

    masked = optax.multi_transform({"trainable": adamw, "frozen": optax.set_to_zero()},
                                   fl.optax_labels(model, plan))
    variants["multi_transform"] = (full_step(masked), [
        model, masked.init(eqx.filter(model, eqx.is_array))])

    variants["full fine-tuning"] = (full_step(adamw), [
        model, adamw.init(eqx.filter(model, eqx.is_array))])
    return variants


def run_steps(step, state, n, x, y):
    """``n`` steps; the first argument and the optimizer state carry over. Returns seconds."""
    start = time.perf_counter()
    for _ in range(n):
        out = step(*state, x, y)
        state = [out[0], *state[1:-1], out[1]]
    jax.block_until_ready(state)
    return time.perf_counter() - start, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    model = Net(args.width, args.depth, key=jax.random.key(0))
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (args.batch, 32))
    y = jax.random.normal(ky, (args.batch, 10))
    variants = build_variants(model, args.depth)
    states = {}
    for name, (step, state) in variants.items():
        _, states[name] = run_steps(step, state, 2, x, y)  # compile and warm up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (step, _) in variants.items():
            seconds, states[name] = run_steps(step, states[name], args.steps, x, y)
            times[name].append(seconds / args.steps)

    view = fl.view(model)
    trainable = set(fl.mask(model, fl.Plan.lock(3)).trainable_names())
    n_train = sum(leaf.numel for leaf in view if leaf.name in trainable)
    n_all = sum(leaf.numel for leaf in view)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.device_count()}; "
          f"width {args.width}, depth {args.depth}, batch {args.batch}; "
          f"trainable {n_train:,} / {n_all:,} params; "
          f"{args.rounds} rounds x {args.steps} steps")
    reference = statistics.median(times["eqx.partition"])
    print(f"{'variant':<18}{'ms/step':>10}{'ratio':>8}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<18}{median * 1e3:>10.2f}{median / reference:>8.2f}")


if __name__ == "__main__":
    main()
