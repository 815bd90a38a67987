"""The feature cache on any architecture: where it cuts, what it stores, when it refuses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import frostline as fl
from frostline.demo import pretrained_digit_net, reset_head, tasks
from frostline.demo._run import deterministic
from frostline.torch._sweep import FeatureCache, Layout, Setting
from frostline.torch._sweep._data import source


def _cache(model: nn.Module, x: torch.Tensor, y: torch.Tensor, wanted: set[int],
           memory_mb: float = 2048.0) -> FeatureCache:
    groups, view = fl.groups(model), fl.view(model)
    layout = Layout(model, groups, view, x[:3])
    src = source((x, y), "training")
    cache = FeatureCache(layout, model, {"train": src, "val": src}, memory_mb=memory_mb)
    cache.prepare(wanted)
    return cache


def _entry_inputs(model: nn.Module, entry: str, x: torch.Tensor) -> torch.Tensor:
    """The oracle: what the entry module receives in a plain forward of the model."""
    seen = []
    handle = dict(model.named_modules())[entry].register_forward_pre_hook(
        lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    return seen[0]


def _vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=3,
                             num_classes=3, pretrained=False)


def _torchvision_resnet():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=3)


@pytest.mark.parametrize(("make", "shape", "entries"), [
    (_vit, (3, 16, 16), {1: "blocks", 3: "blocks.2", 4: "head"}),
    (_torchvision_resnet, (3, 32, 32), {1: "layer1", 3: "layer3", 5: "fc"}),
    (pretrained_digit_net, (1, 8, 8), {1: "block1", 4: "head"}),
])
def test_every_boundary_stores_what_its_first_module_receives(make, shape, entries):
    model = make()
    x = torch.rand(20, *shape)
    with deterministic():
        cache = _cache(model, x, torch.zeros(20, dtype=torch.long), set(entries))
        assert {b: cache.cuts[b].entry for b in entries} == entries
        for b, entry in entries.items():
            stored = cache.stores[("train", b)].leaves[0]
            torch.testing.assert_close(stored, _entry_inputs(model, entry, x), rtol=0, atol=0)


def test_the_head_reads_pooled_features_and_the_pooling_is_stubbed():
    model = _torchvision_resnet()
    cache = _cache(model, torch.rand(6, 3, 32, 32), torch.zeros(6, dtype=torch.long), {5})
    assert cache.cuts[5].entry == "fc"
    assert {"avgpool", "layer4", "conv1", "maxpool"} <= set(cache.cuts[5].stubs)
    assert cache.stores[("train", 5)].leaves[0].shape == (6, 512)


def test_features_scaled_after_the_build_fail_the_sample_check():
    model = pretrained_digit_net()
    x = tasks()[0].train[0][:40]
    with deterministic():
        cache = _cache(model, x, torch.zeros(40, dtype=torch.long), {2, 4})
        assert cache.verify(4) is None
        cache.stores[("train", 4)].leaves[0].mul_(1.001)
        reason = cache.verify(4)
    assert reason is not None and "differ from the recomputed ones" in reason


class _SkipToHead(nn.Module):
    """The stem's output reaches the head past the blocks: the blocks' input is not enough."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.blocks = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        s = self.stem(x)
        return self.head(self.blocks(s) + s)


def test_a_model_that_reads_the_prefix_past_the_boundary_trains_uncached_with_the_reason():
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    groups = fl.groups(_SkipToHead())
    assert groups.names[0] == "stem" and len(groups) >= 3
    with deterministic():
        result = fl.sweep(_SkipToHead, (x, y), (x, y), [Setting.lock(len(groups) - 1)],
                          epochs=2, compare_uncached=True)
    assert result.rows[0].cached_groups == 0
    assert any("skip connection" in note for note in result.notes)
    assert result.rows[0].val_accuracy == result.baseline.rows[0].val_accuracy


def _dropout_prefix() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 16),
                         nn.ReLU(), nn.Linear(16, 2))


def test_a_frozen_prefix_with_dropout_trains_the_same_cached_and_uncached():
    # The prefix runs in eval mode in both runs; left in training mode, the uncached run would
    # drop features the cache keeps, and the accuracies would part.
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 2, (64,), generator=g)
    def neg_loss(logits, labels):  # continuous: any difference in training shows
        return -nn.functional.cross_entropy(logits, labels).item()

    with deterministic():
        result = fl.sweep(_dropout_prefix, (x, y), (x, y), [Setting.lock(1), Setting.lock(2)],
                          epochs=3, batch_size=16, compare_uncached=True, metric=neg_loss)
    assert [r.cached_groups for r in result.rows] == [2, 1]
    assert [r.val_accuracy for r in result.rows] == \
        [r.val_accuracy for r in result.baseline.rows]


def test_features_past_the_memory_budget_go_to_a_memory_mapped_file():
    model = pretrained_digit_net()
    x = tasks()[0].train[0][:40]
    with deterministic():
        in_memory = _cache(model, x, torch.zeros(40, dtype=torch.long), {2})
        mapped = _cache(model, x, torch.zeros(40, dtype=torch.long), {2}, memory_mb=0)
    mapped_rows = mapped.stores[("train", 2)].leaves[0]
    assert mapped_rows.untyped_storage().filename is not None
    assert in_memory.stores[("train", 2)].leaves[0].untyped_storage().filename is None
    assert torch.equal(mapped_rows, in_memory.stores[("train", 2)].leaves[0])
    assert mapped.verify(2) is None


def test_the_frozen_groups_run_once_per_example_in_a_whole_sweep():
    task = tasks()[0]
    train = (task.train[0][:64], task.train[1][:64])
    val = (task.val[0][:32], task.val[1][:32])
    seen = []

    def make():
        model = reset_head(pretrained_digit_net(), 5)
        # The convolution inside the stem: it runs only when the stem really computes (a stub
        # stands in for the whole stem).
        model.stem[0].register_forward_hook(lambda _m, args, _o: seen.append(len(args[0])))
        return model

    with deterministic():
        fl.sweep(make, train, val, [Setting.lock(1), Setting.lock(2), Setting.lp_ft(3)],
                 epochs=2)
    # Once per training and validation example (all three boundaries, 2, 3 and 4, captured in
    # the same pass), plus the sample check (8 examples of each split per boundary) and the
    # recording pass (3 examples); never again per setting or epoch.
    assert sum(seen) == 64 + 32 + 3 * 2 * 8 + 3


class _Boxed:
    """An output type that is no pytree: a stub can only hand back the recorded one."""

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value


class _BoxStem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 8)

    def forward(self, x):
        return _Boxed(self.linear(x))


class _BoxedModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _BoxStem()
        self.scale = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        boxed = self.stem(x)
        return self.head(self.scale(boxed.value) + boxed.value)


def test_a_model_that_fails_from_cached_features_trains_uncached_with_the_reason():
    torch.manual_seed(0)
    x, y = torch.randn(24, 4), torch.randint(0, 2, (24,))
    with deterministic():
        result = fl.sweep(_BoxedModel, (x, y), (x, y), [Setting.lock(2)], epochs=1,
                          compare_uncached=True)
    assert result.rows[0].cached_groups == 0
    assert any("feature caching off" in note for note in result.notes)
    assert result.rows[0].val_accuracy == result.baseline.rows[0].val_accuracy
