"""fl.resolve: one path from a model to what trains, through wrappers, scopes and groupings."""

from __future__ import annotations

import pytest
import torch
from tiny_models import HandWritten
from torch import nn

import frostline as fl

torchvision = pytest.importorskip("torchvision")


def requires_grad(model: nn.Module) -> dict[str, bool]:
    return {n: p.requires_grad for n, p in model.named_parameters()}


def test_resolve_computes_view_groups_and_mask_once():
    model = HandWritten(depth=3)
    resolved = fl.resolve(model, fl.Plan.lock(2))
    assert resolved.model is model and resolved.wrapper is model
    assert resolved.groups is resolved.groups and resolved.mask is resolved.mask
    assert resolved.groups.names == ["stem", "blocks.0", "blocks.1", "blocks.2", "head"]
    top = {n for g in resolved.groups.groups[-2:] for n in g.parameter_names}
    assert set(resolved.trainable_names()) == top


def test_compiled_resnet_locks_the_same_tensors_as_the_bare_model():
    bare = torchvision.models.resnet18(num_classes=10)
    compiled = torch.compile(torchvision.models.resnet18(num_classes=10))
    fl.lock(bare, 2)
    plan = fl.lock(compiled, 2)
    assert plan == fl.Plan.lock(2)
    assert requires_grad(compiled._orig_mod) == requires_grad(bare)
    assert sum(p.requires_grad for p in compiled.parameters()) < len(list(compiled.parameters()))
    assert fl.groups(compiled).names == fl.groups(bare).names


def test_selectors_and_reports_use_the_inner_models_names_under_compile():
    compiled = torch.compile(torchvision.models.resnet18(num_classes=10))
    fl.apply(compiled, fl.Plan().freeze("layer1.* | conv1"))
    assert not compiled._orig_mod.layer1[0].conv1.weight.requires_grad
    assert compiled._orig_mod.layer2[0].conv1.weight.requires_grad
    rows = {row.name for row in fl.explain(compiled, fl.Plan().freeze("fc")).rows}
    assert "fc.weight" in rows and not any(name.startswith("_orig_mod") for name in rows)
    with pytest.raises(fl.SelectorError, match="closest"):
        fl.apply(compiled, fl.Plan().freeze("_orig_mod.layer1.*"))


@pytest.mark.slow
def test_a_thawed_group_of_a_compiled_model_gets_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    compiled = torch.compile(net, backend="aot_eager")
    fl.apply(compiled, fl.Plan().freeze("**").unfreeze("4"))
    x = torch.randn(3, 4)
    compiled(x).sum().backward()
    assert net[2].weight.grad is None and net[4].weight.grad is not None
    fl.apply(compiled, fl.Plan().freeze("**").unfreeze("2 | 4"))
    net.zero_grad(set_to_none=True)
    compiled(x).sum().backward()
    assert net[2].weight.grad is not None and net[2].weight.grad.abs().sum() > 0
    assert net[0].weight.grad is None


def test_data_parallel_uses_the_inner_models_groups_and_names():
    inner = HandWritten(depth=3)
    wrapped = nn.DataParallel(inner)
    assert fl.groups(wrapped).names == fl.groups(inner).names
    assert fl.groups(wrapped).source == fl.groups(inner).source
    fl.apply(wrapped, fl.Plan().freeze("**").unfreeze("head"))
    assert [n for n, p in inner.named_parameters() if p.requires_grad] == [
        "head.weight", "head.bias"]


def test_a_data_parallel_checkpoint_loads_into_the_bare_model(tmp_path):
    torch.manual_seed(0)
    trained = nn.DataParallel(HandWritten(depth=2))
    fl.lock(trained, 1)
    with torch.no_grad():
        trained.module.head.weight.add_(1.0)
    info = fl.save_trainable(trained, tmp_path / "head.safetensors")
    assert not any(name.startswith("module.") for name in info.tensors)
    torch.manual_seed(0)
    bare = HandWritten(depth=2)
    fl.load_trainable(bare, tmp_path / "head.safetensors")
    assert torch.equal(bare.head.weight, trained.module.head.weight)


def test_a_scoped_plan_leaves_everything_outside_its_scope_as_it_was():
    model = HandWritten(depth=3)
    model.head.bias.requires_grad_(False)  # frozen by hand, outside the scope
    fl.apply(model, fl.Plan().freeze("**").within("blocks.*"))
    state = requires_grad(model)
    assert not state["head.bias"] and state["head.weight"]
    assert not any(v for n, v in state.items() if n.startswith("blocks."))
    assert all(v for n, v in state.items() if n.startswith("embed."))


def test_an_unscoped_plan_decides_every_parameter():
    model = HandWritten(depth=3)
    model.head.bias.requires_grad_(False)
    fl.apply(model, fl.Plan().freeze("blocks.*"))
    assert requires_grad(model)["head.bias"]


def test_plans_compose_as_one_then_the_other():
    model = HandWritten(depth=3)
    both = fl.Plan().freeze("**").within("embed") + fl.Plan().freeze("**").within("head")
    fl.apply(model, both)
    state = requires_grad(model)
    assert not state["embed.weight"] and not state["head.weight"]
    assert all(v for n, v in state.items() if n.startswith("blocks."))
    in_sequence = HandWritten(depth=3)
    for step in both.steps:
        fl.apply(in_sequence, step)
    assert requires_grad(in_sequence) == state


def test_a_composed_scoped_plan_round_trips_through_yaml():
    plan = (fl.Plan.lock(1, freeze_bn_stats=True, scope="blocks.* | head").with_grouping(coarse=True)
            + fl.Plan().freeze("name:bias").within("head"))
    loaded = fl.Plan.from_yaml(plan.to_yaml())
    assert loaded == plan
    assert str(loaded.scope) == "(blocks.* | head)" and str(loaded.then[0].scope) == "head"
    model_a, model_b = HandWritten(depth=3), HandWritten(depth=3)
    fl.apply(model_a, plan)
    fl.apply(model_b, loaded)
    assert requires_grad(model_a) == requires_grad(model_b)


def test_explain_names_the_step_and_the_kept_state():
    model = HandWritten(depth=2)
    plan = fl.Plan().freeze("embed").within("embed") + fl.Plan().freeze("name:bias").within("head")
    rows = {row.name: row.decided_by for row in fl.explain(model, plan).rows}
    assert rows["embed.weight"] == "rule 0: freeze embed"
    assert rows["head.bias"] == "rule 1: freeze name:bias"
    assert rows["blocks.0.fc.weight"] == "outside the plan's scope: kept as it was"


def test_fixed_statistics_outside_a_scope_stay_fixed():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4), nn.BatchNorm1d(4))
    fl.apply(model, fl.Plan().freeze("0 | 1").with_bn(freeze_bn_stats=True))
    assert fl.resolve(model).frozen_stats == {"1"}
    fl.apply(model, fl.Plan().freeze("**").within("2 | 3").with_bn(freeze_bn_stats=True))
    assert fl.resolve(model).frozen_stats == {"1", "3"}
    model.train()
    assert not model[1].training and not model[3].training
    fl.apply(model, fl.Plan())  # unscoped, no policy: everything trains again
    assert fl.resolve(model).frozen_stats == frozenset() and model[1].training


def test_param_groups_evaluate_no_decay_on_the_spec_groups():
    model = HandWritten(depth=3)
    spec = ["embed | blocks.0", "blocks.1 | blocks.2", "head"]
    grouping = fl.Grouping(spec=spec)
    out = fl.param_groups(model, lr=1.0, weight_decay=0.1, no_decay="group:-2:",
                          grouping=grouping)
    no_decay = {id(p) for g in out if g["weight_decay"] == 0 for p in g["params"]}
    expected = {id(p) for n, p in model.named_parameters()
                if n.startswith(("blocks.1", "blocks.2", "head"))}
    assert no_decay == expected


def test_an_error_inside_an_integration_raises_instead_of_falling_back(monkeypatch, tmp_path):
    from frostline.torch import _groups

    (tmp_path / "broken_rules.py").write_text("import frostline.no_such_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_groups, "_RULE_MODULES", ["broken_rules", *_groups._RULE_MODULES])
    with pytest.raises(ModuleNotFoundError, match="frostline.no_such_module"):
        fl.groups(HandWritten(depth=2))


def test_a_missing_third_party_package_only_skips_its_integration(monkeypatch, tmp_path):
    from frostline.torch import _groups

    (tmp_path / "absent_rules.py").write_text("import not_installed_package_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_groups, "_RULE_MODULES", ["absent_rules", *_groups._RULE_MODULES])
    assert fl.groups(HandWritten(depth=2)).names == fl.groups(HandWritten(depth=2)).names


def test_resolve_refuses_what_is_not_a_plan():
    with pytest.raises(fl.PlanError, match="expected a frostline Plan"):
        fl.resolve(HandWritten(), "freeze **")
    with pytest.raises(fl.PlanError, match="expected a frostline Grouping"):
        fl.resolve(HandWritten(), grouping={"coarse": True})
