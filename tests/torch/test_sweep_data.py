"""What the sweep trains on: dict and tuple inputs, loaders, iterables, bad data, divergence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import frostline as fl
from frostline.demo._run import deterministic
from frostline.torch._sweep import Setting, SweepDataError


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


def _tiny_bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def _text(n: int = 24):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 50, (n, 8), generator=g)
    mask = torch.ones(n, 8, dtype=torch.long)
    mask[::2, 5:] = 0  # padded examples: the attention mask matters
    return {"input_ids": ids, "attention_mask": mask}, torch.randint(0, 3, (n,), generator=g)


def test_dict_inputs_and_logits_outputs_of_a_hugging_face_model_train_cached_as_uncached():
    inputs, labels = _text()
    with deterministic():
        result = fl.sweep(_tiny_bert, (inputs, labels), (inputs, labels),
                          [Setting.lock(1), Setting.lock(2)], epochs=2, batch_size=8,
                          compare_uncached=True)
    assert [r.cached_groups for r in result.rows] == [4, 3]
    assert [r.val_accuracy for r in result.rows] == \
        [r.val_accuracy for r in result.baseline.rows]
    assert any("'bert.encoder.layer.2'" in note for note in result.notes)


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left, self.right, self.head = nn.Linear(3, 4), nn.Linear(2, 4), nn.Linear(8, 2)

    def forward(self, a, b):
        return self.head(torch.cat([self.left(a), self.right(b)], dim=1))


def test_tuple_inputs_are_passed_as_positional_arguments():
    a, b, y = torch.randn(16, 3), torch.randn(16, 2), torch.randint(0, 2, (16,))
    result = fl.sweep(_TwoInputs, ((a, b), y), ((a, b), y), [Setting.lock(1)], epochs=1)
    assert result.rows[0].trainable_params == 8 * 2 + 2
    assert result.rows[0].steps == 1


def test_a_shuffling_data_loader_gives_the_same_rows_twice_and_cached_as_uncached():
    x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8,
                                         shuffle=True)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    settings = [Setting.lock(1), Setting.lock(2), Setting.lock(3)]
    first = fl.sweep(_mlp, loader, val, settings, epochs=3, compare_uncached=True)
    second = fl.sweep(_mlp, loader, val, settings, epochs=3)
    assert [r.val_accuracy for r in first.rows] == [r.val_accuracy for r in second.rows]
    assert [r.val_accuracy for r in first.rows] == [r.val_accuracy for r in first.baseline.rows]
    assert [r.cached_groups for r in first.rows] == [2, 1, 0]
    assert first.rows[0].steps == 3 * 5


class _Augmented(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.x, self.y = torch.randn(24, 4), torch.randint(0, 2, (24,))

    def __len__(self) -> int:
        return 24

    def __getitem__(self, i):
        return self.x[i] + 0.1 * torch.randn(4), self.y[i]


def test_inputs_that_change_between_reads_are_not_cached():
    loader = torch.utils.data.DataLoader(_Augmented(), batch_size=8)
    result = fl.sweep(_mlp, loader, loader, [Setting.lock(1)], epochs=1)
    assert result.rows[0].cached_groups == 0
    assert any("change between reads" in note and "deterministic=True" in note
               for note in result.notes)
    # Declared deterministic, the sample check still sees other features: still uncached.
    declared = fl.sweep(_mlp, loader, loader, [Setting.lock(1)], epochs=1, deterministic=True)
    assert declared.rows[0].cached_groups == 0
    assert any("differ from the recomputed ones" in note for note in declared.notes)


def test_a_list_of_batches_is_cached_and_a_one_shot_iterator_is_refused():
    x, y = torch.randn(24, 4), torch.randint(0, 2, (24,))
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8)]
    result = fl.sweep(_mlp, batches, batches, [Setting.lock(1)], epochs=2, compare_uncached=True)
    assert result.rows[0].cached_groups == 2
    assert result.rows[0].val_accuracy == result.baseline.rows[0].val_accuracy
    with pytest.raises(SweepDataError, match="one-shot iterator"):
        fl.sweep(_mlp, iter(batches), batches, [Setting.lock(1)], epochs=1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_refused(bad):
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    x[3, 1] = bad
    with pytest.raises(SweepDataError, match="1 NaN or infinite value"):
        fl.sweep(_mlp, (x, y), (x.nan_to_num(0.0, 0.0, 0.0), y), epochs=1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    with pytest.raises(SweepDataError, match="NaN or infinite"):
        fl.sweep(_mlp, loader, loader, [Setting.lock(3)], epochs=1, cache=False)


def _bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_a_batchnorm_model_trains_when_the_last_batch_would_hold_one_example():
    x, y = torch.randn(33, 4), torch.randint(0, 2, (33,))
    everything = Setting.lock(len(fl.groups(_bn_net())))  # BatchNorm in training mode
    result = fl.sweep(_bn_net, (x, y), (x, y), [everything], epochs=2, batch_size=32)
    assert result.rows[0].steps == 2  # the 33rd example joins the batch before it
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    result = fl.sweep(_bn_net, loader, loader, [everything], epochs=2)
    assert result.rows[0].steps == 2  # the batch of one is skipped


def test_a_diverging_setting_is_reported_as_diverged_and_never_best():
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    # The body's rate overflows the weights; the linear probe never uses it.
    result = fl.sweep(_mlp, (x, y), (x, y), [Setting.lock(3), Setting.lock(1)], epochs=3,
                      lr=1e-2, body_lr=1e30)
    deep, probe = result.rows
    assert deep.diverged and deep.val_accuracy != deep.val_accuracy  # NaN
    assert not probe.diverged
    assert result.best is probe
    assert result.to_dict()["best"] == "1"


def test_loss_and_metric_callables_replace_cross_entropy_and_accuracy():
    x, y = torch.randn(24, 4), torch.randint(0, 2, (24,))
    losses, seen = [], []

    def loss(logits, labels):
        value = nn.functional.multi_margin_loss(logits, labels)
        losses.append(value.item())
        return value

    def metric(logits, labels):
        seen.append((tuple(logits.shape), labels.tolist()))
        return -float(nn.functional.cross_entropy(logits, labels))

    result = fl.sweep(_mlp, (x, y), (x, y), [Setting.lock(3)], epochs=2, batch_size=8,
                      loss=loss, metric=metric)
    assert len(losses) == result.rows[0].steps == 6
    assert seen == [((24, 2), y.tolist())]
    assert result.rows[0].val_accuracy < 0  # the metric's value, not an accuracy


def test_data_of_the_wrong_form_is_refused():
    x = torch.randn(8, 4)
    with pytest.raises(SweepDataError, match="first dimension"):
        fl.sweep(_mlp, (x, torch.zeros(5, dtype=torch.long)), (x, x), epochs=1)
    with pytest.raises(SweepDataError, match="must be"):
        fl.sweep(_mlp, 3, 4, epochs=1)


def test_a_device_and_mixed_precision_train_cached_as_uncached():
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    with deterministic():
        result = fl.sweep(_mlp, (x, y), (x, y), [Setting.lock(1), Setting.lock(2)], epochs=2,
                          batch_size=8, device="cpu", amp=True, compare_uncached=True)
    assert [r.cached_groups for r in result.rows] == [2, 1]
    assert [r.val_accuracy for r in result.rows] == \
        [r.val_accuracy for r in result.baseline.rows]
    assert result.rows[0].steps == 8
