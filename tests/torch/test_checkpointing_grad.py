"""Activation checkpointing with frozen lower layers: trainable layers above still get gradients."""

from __future__ import annotations

import pytest
import timm
import timm.layers
import torch
from tiny_models import tiny_vit
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

import frostline as fl


def tiny_bert() -> nn.Module:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config)


@pytest.fixture
def reentrant_timm():
    timm.layers.set_reentrant_ckpt(True)
    yield
    timm.layers.set_reentrant_ckpt(False)


def grads(model: nn.Module, run) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    run(model).square().mean().backward()
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def vit_run(model: nn.Module) -> torch.Tensor:
    return model(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))


def bert_run(model: nn.Module) -> torch.Tensor:
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(1))
    return model(ids).logits


def assert_same_grads(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for name, grad in expected.items():
        assert got[name] is not None, name
        torch.testing.assert_close(got[name], grad)


def block_params_without_grad(found: dict) -> list[str]:
    return [n for n, g in found.items() if g is None]


def test_reentrant_timm_checkpointing_starves_trainable_blocks(reentrant_timm):
    model = tiny_vit(depth=4)
    fl.lock(model, unlocked_groups=3)
    model.set_grad_checkpointing(True)
    found = grads(model, vit_run)
    starved = block_params_without_grad(found)
    assert starved and all(n.startswith("blocks.") for n in starved)
    assert found["head.weight"] is not None


def test_enable_input_grads_restores_gradients_under_reentrant_timm_checkpointing(reentrant_timm):
    model = tiny_vit(depth=4)
    fl.lock(model, unlocked_groups=3)
    expected = grads(model, vit_run)
    handles = fl.enable_input_grads(model)
    model.set_grad_checkpointing(True)
    assert_same_grads(grads(model, vit_run), expected)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    for handle in handles:
        handle.remove()
    assert block_params_without_grad(grads(model, vit_run))


def test_non_reentrant_timm_checkpointing_needs_no_help():
    model = tiny_vit(depth=4)
    fl.lock(model, unlocked_groups=3)
    expected = grads(model, vit_run)
    model.set_grad_checkpointing(True)
    assert_same_grads(grads(model, vit_run), expected)


@pytest.mark.parametrize("reentrant", [False, True])
def test_transformers_checkpointing_reaches_trainable_layers(reentrant):
    model = tiny_bert().train()
    fl.lock(model, unlocked_groups=3)
    expected = grads(model, bert_run)
    model.activation_checkpointing_enable({"use_reentrant": reentrant})
    assert_same_grads(grads(model, bert_run), expected)


def test_transformers_reentrant_trap_without_its_input_hook_and_the_fix():
    model = tiny_bert().train()
    fl.lock(model, unlocked_groups=3)
    expected = grads(model, bert_run)
    model.activation_checkpointing_enable({"use_reentrant": True})
    model.disable_input_require_grads()
    starved = block_params_without_grad(grads(model, bert_run))
    assert starved and all(".encoder.layer." in n for n in starved)
    fl.enable_input_grads(model)
    assert_same_grads(grads(model, bert_run), expected)


def test_unknown_input_module_is_reported():
    with pytest.raises(fl.GroupError, match="'patch_embd' is not a submodule"):
        fl.enable_input_grads(tiny_vit(depth=4), "patch_embd")
