"""fl.partition / fl.combine on an Equinox model sharded over 2 host devices, under jax.jit.

scripts/test.sh sets XLA_FLAGS=--xla_force_host_platform_device_count=2 before JAX starts.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax_models import batch, eqx_net

import frostline as fl

pytestmark = pytest.mark.skipif(
    jax.device_count() < 2,
    reason="needs 2 JAX devices: run with XLA_FLAGS=--xla_force_host_platform_device_count=2",
)

PLAN = fl.Plan.lock(2)


def arrays(tree) -> dict[str, jax.Array]:
    """Every array leaf of a (possibly holed) pytree, by key path."""
    return {jax.tree_util.keystr(path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0] if eqx.is_array(leaf)}


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    return Mesh(np.array(jax.devices()[:2]), ("data",))


def shard(model, mesh: Mesh):
    """Split every array with an even first dimension over the 2 devices; replicate the rest."""
    def place(x):
        if not eqx.is_array(x):
            return x
        spec = P("data") if x.ndim and x.shape[0] % 2 == 0 else P()
        return jax.device_put(x, NamedSharding(mesh, spec))

    return jax.tree_util.tree_map(place, model)


def train(model, mesh: Mesh | None, steps: int = 3):
    """AdamW through partition/combine, the combine inside the jitted step."""
    trainable, frozen = fl.partition(model, PLAN)
    tx = optax.adamw(1e-2, weight_decay=0.1)
    opt_state = tx.init(eqx.filter(trainable, eqx.is_array))
    x, y = batch()
    if mesh is not None:
        x, y = (jax.device_put(a, NamedSharding(mesh, P("data"))) for a in (x, y))

    @eqx.filter_jit
    def step(trainable, opt_state):
        def loss(t):
            return jnp.mean((jax.vmap(fl.combine(t, frozen))(x) - y) ** 2)

        grads = eqx.filter_grad(loss)(trainable)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(trainable, eqx.is_array))
        return eqx.apply_updates(trainable, updates), opt_state

    for _ in range(steps):
        trainable, opt_state = step(trainable, opt_state)
    return fl.combine(trainable, frozen), opt_state


@pytest.fixture(scope="module")
def sharded_run(mesh):
    """(model before, model after, optimizer state) of one sharded training run."""
    model = shard(eqx_net(), mesh)
    trained, opt_state = train(model, mesh)
    return model, trained, opt_state


def test_partition_keeps_every_sharded_array_as_it_is(mesh):
    model = shard(eqx_net(), mesh)
    trainable, frozen = fl.partition(model, PLAN)
    whole, parts = arrays(model), {**arrays(trainable), **arrays(frozen)}
    assert parts.keys() == whole.keys()
    assert all(parts[k] is whole[k] for k in whole)
    assert any(len(a.sharding.device_set) == 2 and not a.sharding.is_fully_replicated
               for a in arrays(frozen).values())


def test_partition_inside_jit_gives_the_same_halves_with_the_same_sharding(mesh):
    model = shard(eqx_net(), mesh)
    outside = fl.partition(model, PLAN)
    inside = eqx.filter_jit(lambda m: fl.partition(m, PLAN))(model)
    for ours, theirs in zip(inside, outside):
        assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(theirs)
        a, b = arrays(ours), arrays(theirs)
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k]) for k in a)
        assert all(a[k].sharding.is_equivalent_to(b[k].sharding, b[k].ndim) for k in a)


def test_combine_inside_jit_rebuilds_the_sharded_model(mesh):
    model = shard(eqx_net(), mesh)
    trainable, frozen = fl.partition(model, PLAN)
    rebuilt = eqx.filter_jit(fl.combine)(trainable, frozen)
    a, b = arrays(rebuilt), arrays(model)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert all(a[k].sharding.is_equivalent_to(b[k].sharding, b[k].ndim) for k in a)


def test_sharded_training_keeps_frozen_arrays_bit_identical_and_in_place(sharded_run):
    model, trained, _ = sharded_run
    mask = fl.mask(model, PLAN)
    before, after = arrays(model), arrays(trained)
    frozen_keys = [k for k in before if k in arrays(fl.partition(model, PLAN)[1])]
    trainable_keys = [k for k in before if k not in frozen_keys]
    assert len(frozen_keys) == len(mask.frozen_names()) > 0
    assert all(np.array_equal(before[k], after[k]) for k in frozen_keys)
    assert all(after[k].sharding.is_equivalent_to(before[k].sharding, before[k].ndim)
               for k in frozen_keys)
    assert all(not np.array_equal(before[k], after[k]) for k in trainable_keys)


def test_sharded_training_matches_single_device_training(sharded_run):
    _, sharded, _ = sharded_run
    single, _ = train(eqx_net(), None)
    a, b = arrays(sharded), arrays(single)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-5, atol=1e-6)


def test_optimizer_state_covers_only_the_trainable_shards(sharded_run):
    model, _, opt_state = sharded_run
    trainable = arrays(fl.partition(model, PLAN)[0])
    moments = [leaf for leaf in jax.tree_util.tree_leaves(opt_state) if leaf.ndim]
    # adamw keeps two moments (mu, nu) per trainable array, nothing for frozen ones.
    assert sorted(m.shape for m in moments) == sorted(
        [a.shape for a in trainable.values()] * 2)
    assert sum(m.size for m in moments) == 2 * sum(a.size for a in trainable.values())
    assert all(len(m.sharding.device_set) == 2 for m in moments)
