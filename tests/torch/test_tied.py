"""Shared (tied) weights: detection, consistent plans, and the error naming both paths."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

import frostline as fl


def tiny_gpt2():
    config = GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=16,
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight
    return model


def requires_grad(model):
    return {n: p.requires_grad for n, p in model.named_parameters(remove_duplicate=False)}


def test_tied_embeddings_are_detected_by_both_names():
    view = fl.view(tiny_gpt2())
    assert view["lm_head.weight"].tied_to == ("transformer.wte.weight",)
    assert view["transformer.wte.weight"].tied_to == ("lm_head.weight",)
    assert view.canonical["lm_head.weight"] == "transformer.wte.weight"


def test_freezing_one_path_of_a_shared_tensor_names_both_paths():
    model = tiny_gpt2()
    before = requires_grad(model)
    with pytest.raises(fl.TiedWeightError,
                       match=r"'transformer\.wte\.weight' and 'lm_head\.weight' are the same "
                             r"\(shared\) tensor.*'transformer\.wte\.weight' frozen \(rule 0: "
                             r"freeze name:wte\) and 'lm_head\.weight' trainable"):
        fl.apply(model, fl.Plan().freeze("name:wte"))
    assert requires_grad(model) == before


def test_unfreezing_one_path_after_freezing_both_is_refused_too():
    model = tiny_gpt2()
    with pytest.raises(fl.TiedWeightError, match=r"rule 1: unfreeze lm_head"):
        fl.apply(model, fl.Plan().freeze("**").unfreeze("lm_head"))


def test_a_plan_that_selects_both_paths_applies():
    model = tiny_gpt2()
    fl.apply(model, fl.Plan().freeze("name:wte | lm_head"))
    assert not model.lm_head.weight.requires_grad
    assert model.transformer.h[0].attn.c_attn.weight.requires_grad


def test_tied_error_is_a_plan_error():
    assert issubclass(fl.TiedWeightError, fl.PlanError)


def test_shared_tensor_lives_in_one_group_and_lock_is_consistent():
    model = tiny_gpt2()
    found = fl.groups(model)
    homes = [g.name for g in found if "lm_head.weight" in g.aliases]
    assert homes == ["stem"]
    assert "transformer.wte.weight" in found["stem"].leaf_names
    listed = [n for g in found for n in g.parameter_names]
    assert listed == [n for n, _ in model.named_parameters()]  # each tensor once, by its name
    for k in range(len(found) + 1):
        fl.lock(model, unlocked_groups=k)
        state = requires_grad(model)
        assert state["lm_head.weight"] == state["transformer.wte.weight"]


def test_a_module_reached_by_two_paths_must_be_treated_alike():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(3, 1))
    with pytest.raises(fl.TiedWeightError, match=r"'0\.weight' and '2\.weight'"):
        fl.apply(model, fl.Plan().freeze("0"))
    fl.apply(model, fl.Plan().freeze("0 | 2"))
    assert not shared.weight.requires_grad and model[3].weight.requires_grad


def test_a_frozen_tied_weight_does_not_move_in_training():
    torch.manual_seed(0)
    model = tiny_gpt2()
    fl.apply(model, fl.Plan().freeze("name:wte | lm_head"))
    embedding = model.transformer.wte.weight.detach().clone()
    block = model.transformer.h[1].mlp.c_fc.weight.detach().clone()
    optimizer = torch.optim.AdamW(fl.trainable_parameters(model), lr=1e-2, weight_decay=0.1)
    ids = torch.randint(0, 50, (2, 8))
    for _ in range(3):
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    assert torch.equal(model.lm_head.weight, embedding)
    assert not torch.equal(model.transformer.h[1].mlp.c_fc.weight, block)
