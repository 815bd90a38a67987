"""Model specs on the command line: factories beside the user, --model-arg, --tower, hf: folders."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

import frostline as fl
from frostline.cli._models import parse_model_args

MYMODELS = textwrap.dedent("""
    import torch


    def small(width=4, bias=True):
        return torch.nn.Sequential(torch.nn.Linear(4, width, bias=bias), torch.nn.ReLU(),
                                   torch.nn.Linear(width, width), torch.nn.ReLU(),
                                   torch.nn.Linear(width, width), torch.nn.Linear(width, 2))
""")


@pytest.fixture
def workdir(tmp_path):
    """A temporary current directory holding ``mymodels.py`` (not on any path)."""
    (tmp_path / "mymodels.py").write_text(MYMODELS)
    return tmp_path


def _small(width=4, bias=True):
    return torch.nn.Sequential(torch.nn.Linear(4, width, bias=bias), torch.nn.ReLU(),
                               torch.nn.Linear(width, width), torch.nn.ReLU(),
                               torch.nn.Linear(width, width), torch.nn.Linear(width, 2))


def test_console_script_imports_a_factory_from_the_current_directory(cli, workdir):
    args = ("inspect", "mymodels:small", "--model-arg", "width=8", "--model-arg", "bias=false",
            "--json")
    by_script = cli.run(*args, script=True, cwd=workdir)
    by_module = cli.run(*args, cwd=workdir)
    assert by_script.returncode == 0, by_script.stderr
    assert by_module.returncode == 0, by_module.stderr
    data = json.loads(by_script.stdout)
    assert data == json.loads(by_module.stdout)
    assert data["total"] == sum(p.numel() for p in _small(8, bias=False).parameters())


def test_factory_that_does_not_take_an_argument_is_a_user_error(cli, workdir):
    done = cli.run("inspect", "mymodels:small", "--model-arg", "widht=8", script=True,
                   cwd=workdir)
    assert done.returncode == 2
    line = cli.error_line(done.stderr)
    assert "mymodels:small does not take --model-arg widht" in line


@pytest.mark.slow
def test_timm_model_args_build_a_digits_sized_resnet_in_the_console_script(cli, workdir):
    timm = pytest.importorskip("timm")
    done = cli.run("inspect", "timm:resnet18", "--model-arg", "num_classes=10",
                   "--model-arg", "in_chans=1", "--json", script=True, cwd=workdir)
    assert done.returncode == 0, done.stderr
    model = timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=1)
    data = json.loads(done.stdout)
    assert data["total"] == sum(p.numel() for p in model.parameters())
    head = next(g for g in data["groups"] if g["name"] == "fc")
    assert head["params"] == 512 * 10 + 10


def test_torchvision_model_args_reach_the_constructor(cli):
    models = pytest.importorskip("torchvision.models")
    data = cli.json("inspect", "torchvision:resnet18", "--model-arg", "num_classes=7", "--json")
    model = models.get_model("resnet18", weights=None, num_classes=7)
    assert data["total"] == sum(p.numel() for p in model.parameters())


def test_hf_model_args_set_the_config(cli):
    transformers = pytest.importorskip("transformers")
    data = cli.json("inspect", "hf:bert", "--model-arg", "num_hidden_layers=3",
                    "--model-arg", "vocab_size=100", "--json")
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=2,
                                     intermediate_size=128, vocab_size=100)
    model = transformers.AutoModel.from_config(config)
    assert data["total"] == sum(p.numel() for p in model.parameters())
    assert [g["name"] for g in data["groups"]] == fl.groups(model).names


def test_hf_folder_takes_model_args_and_missing_folders_say_so(cli, tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=50)
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    data = cli.json("inspect", f"hf:{tmp_path / 'bert'}", "--model-arg", "num_hidden_layers=1",
                    "--json")
    assert [g["name"] for g in data["groups"]][1] == "encoder.layer.0"
    assert not any("encoder.layer.1" in g["name"] for g in data["groups"])
    for spec, says in [(f"hf:{tmp_path / 'missing'}", "does not exist"),
                       (f"hf:{tmp_path}", "is a folder without config.json"),
                       ("hf:org/model-name", "'org/model-name' does not exist")]:
        code, _, err = cli.main("inspect", spec)
        assert code == 2
        assert says in cli.error_line(err)


def test_open_clip_tower_option_gives_that_towers_groups_and_lock(cli):
    open_clip = pytest.importorskip("open_clip")
    model = open_clip.create_model("ViT-S-32-alt", pretrained=None)
    data = cli.json("inspect", "open_clip:ViT-S-32-alt", "--tower", "text", "--json")
    assert [g["name"] for g in data["groups"]] == fl.groups(model, tower="text").names
    assert "token_embedding" in data["groups"][0]["modules"]
    planned = cli.json("plan", "open_clip:ViT-S-32-alt", "--tower", "image",
                       "--unlocked-groups", "1", "--json")
    fl.lock(model, 1, tower="image")
    assert planned["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    # The text tower stays trainable: the lock is scoped to the image tower.
    assert all(p.requires_grad for p in model.transformer.parameters())
    recommended = cli.json("recommend", "open_clip:ViT-S-32-alt", "--tower", "image",
                           "--n-train", "500", "--json")
    plan = fl.Plan.from_dict(recommended["plan"])
    assert plan == fl.Plan.lock(2, freeze_bn_stats=True, scope="visual").with_grouping(
        fl.Grouping(tower="image"))
    fl.lock(model, 2, freeze_bn_stats=True, tower="image")
    assert recommended["summary"]["trainable"] == sum(
        p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(("argv", "says"), [
    (["inspect", "timm:resnet18", "--model-arg", "num_clases=10"],
     "timm:resnet18 cannot be built with --model-arg num_clases=10: "),
    (["inspect", "torchvision:resnet18", "--model-arg", "num_classes=1.5"],
     "torchvision:resnet18 cannot be built with --model-arg num_classes=1.5: "),
    (["inspect", "hf:bert", "--model-arg", "num_hidden_layers=abc"],
     "--model-arg num_hidden_layers='abc' does not fit its BertConfig"),
    (["inspect", "hf:bert", "--model-arg", "num_hidden_layer=3"],
     "has no 'num_hidden_layer'; closest: num_hidden_layers"),
    (["inspect", "demo", "--model-arg", "width=3"], "takes no --model-arg"),
    (["inspect", "demo", "--model-arg", "width"], "expected KEY=VALUE"),
    (["inspect", "demo", "--model-arg", "a=1", "--model-arg", "a=2"], "given twice"),
    (["sweep", "--model-arg", "a=1"], "--model-arg builds MODEL for --data"),
    (["inspect", "demo", "--tower", "image"], "unknown tower 'image'"),
])
def test_model_option_mistakes_exit_2_with_one_line(cli, argv, says):
    code, _, err = cli.main(*argv)
    assert code == 2
    assert says in cli.error_line(err)


def test_model_arg_values_read_as_int_float_bool_or_string():
    assert parse_model_args(["a=3", "b=0.5", "c=1e-3", "d=True", "e=false", "f=avg", "g=",
                             "h=a=b"]) == {"a": 3, "b": 0.5, "c": 1e-3, "d": True, "e": False,
                                           "f": "avg", "g": "", "h": "a=b"}


def test_unquoted_yaml_selector_gets_a_hint_to_quote_it(cli, tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("rules:\n- freeze: '**'\n- unfreeze: group:-2:\n")
    code, _, err = cli.main("plan", "demo", "--check", str(path))
    assert code == 2
    line = cli.error_line(err)
    assert "at line 3" in line
    assert "Quote the selector: unfreeze: 'group:-2:'" in line
