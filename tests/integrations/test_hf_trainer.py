"""FrostlineCallback: a real transformers.Trainer run on the real MiniLM weights, on the CPU."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import frostline as fl  # noqa: E402
from frostline.integrations._hf_trainer import TRAINABLE_FILE  # noqa: E402
from frostline.integrations.transformers import FrostlineCallback  # noqa: E402

SENTENCES = ["a cat sat", "the dog ran far", "rain again today", "sunny and warm",
             "stocks fell", "markets rose", "he sang loudly", "she read quietly"]


def classifier(minilm_path) -> torch.nn.Module:
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification.from_pretrained(
        str(minilm_path), num_labels=2)


def dataset(minilm_path) -> list[dict]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_path))
    encoded = tokenizer(SENTENCES, padding="max_length", max_length=8, truncation=True)
    return [{"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i],
             "labels": i % 2} for i in range(len(SENTENCES))]


def arguments(out, max_steps: int, **extra) -> transformers.TrainingArguments:
    options = dict(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=2,
                   learning_rate=1e-3, weight_decay=0.01, lr_scheduler_type="cosine",
                   save_strategy="steps", save_steps=2, logging_strategy="no", report_to=[],
                   use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0)
    return transformers.TrainingArguments(**{**options, **extra})


class Rates(transformers.TrainerCallback):
    """The optimizer's groups (name -> lr, param count) at the start of every step."""

    def __init__(self) -> None:
        self.seen: list[dict[str, tuple[float, int]]] = []

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self.seen.append({g["name"]: (g["lr"], len(g["params"])) for g in optimizer.param_groups})


def run(minilm_path, out, max_steps: int, *, model=None, resume=None, unit="step",
        before=(), **extra):
    model = model if model is not None else classifier(minilm_path)
    every = 2 if unit == "step" else 1
    callback = FrostlineCallback(fl.UnfreezeSchedule.gradual(every=every, start=1, unit=unit),
                                 layer_decay=0.8, guard_every=1)
    rates = Rates()
    trainer = transformers.Trainer(
        model=model, args=arguments(out, max_steps, **extra), train_dataset=dataset(minilm_path),
        callbacks=[*before, callback, rates],
        optimizer_cls_and_kwargs=callback.optimizer_cls_and_kwargs())
    trainer.train(resume_from_checkpoint=resume)
    return model, trainer, rates


def names_in(groups: fl.Groups, *indices: int) -> set[str]:
    return {n for i in indices for n in groups[i].parameter_names}


@pytest.mark.slow
def test_trainer_trains_what_the_schedule_thaws_and_saves_it_trainable_only(minilm_path, tmp_path):
    base = classifier(minilm_path)
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    model, trainer, rates = run(minilm_path, tmp_path, max_steps=4, model=base)
    groups = fl.groups(model)
    below, top = groups.names[-2:]  # the last encoder layer, and pooler + classifier
    assert set(groups[-1].parameter_names) >= {"classifier.weight", "bert.pooler.dense.weight"}
    assert set(groups[-2].parameter_names) == {
        n for n, _ in model.named_parameters() if n.startswith("bert.encoder.layer.5.")}
    head, layer5 = names_in(groups, len(groups) - 1), names_in(groups, len(groups) - 2)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == head | layer5
    assert {n for n, p in model.named_parameters() if p.requires_grad} == head | layer5
    optimizer_names = [n for g in trainer.optimizer.param_groups for n in g["param_names"]]
    assert sorted(optimizer_names) == sorted(head | layer5)
    assert [sorted(step) for step in rates.seen] == [
        [f"{top}/decay", f"{top}/no_decay"]] * 2 + [
        sorted([f"{below}/decay", f"{below}/no_decay", f"{top}/decay", f"{top}/no_decay"])] * 2
    for step in rates.seen[2:]:  # thawed at step 2, half-way down the cosine
        assert step[f"{below}/decay"][0] == pytest.approx(0.8 * step[f"{top}/decay"][0])
    assert rates.seen[2][f"{top}/decay"][0] == pytest.approx(1e-3 * 2 / 4)

    # The trainable-only checkpoints: the head alone at step 2, layer 5 and the head at step 4.
    early = fl.load_trainable(classifier(minilm_path), tmp_path / "checkpoint-2" / TRAINABLE_FILE)
    assert set(early.trainable) == head
    path = tmp_path / "checkpoint-4" / TRAINABLE_FILE
    assert (tmp_path / "checkpoint-4" / "model.safetensors").stat().st_size > 5 * path.stat(
        ).st_size
    fresh = classifier(minilm_path)
    torch.nn.init.normal_(fresh.classifier.weight)  # the new head differs until loaded
    assert set(fl.load_trainable(fresh, path).trainable) == head | layer5
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_resumed_run_restores_thawed_groups_and_ends_where_an_unbroken_run_ends(
        minilm_path, tmp_path):
    unbroken, _, _ = run(minilm_path, tmp_path, max_steps=4, save_steps=3)
    final = {n: t.clone() for n, t in unbroken.state_dict().items()}
    # Saved after step 3, when layer 5 had thawed at step 2: the optimizer has 4 groups.
    resumed, trainer, rates = run(minilm_path, tmp_path, max_steps=4, save_steps=3,
                                  resume=str(tmp_path / "checkpoint-3"))
    assert [len(step) for step in rates.seen] == [4]  # layer 5 and the head, each in 2 groups
    assert len(trainer.lr_scheduler.base_lrs) == len(trainer.lr_scheduler.lr_lambdas) == 4
    callback = next(c for c in trainer.callback_handler.callbacks
                    if isinstance(c, FrostlineCallback))
    assert callback.loaded.path == str(tmp_path / "checkpoint-3" / TRAINABLE_FILE)
    for name, tensor in resumed.state_dict().items():
        assert torch.equal(tensor, final[name]), name

    record = tmp_path / "checkpoint-3" / "frostline-state.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "run": "another"}))
    with pytest.raises(fl.CheckpointError, match="frostline files of another run"):
        run(minilm_path, tmp_path, max_steps=4, save_steps=3,
            resume=str(tmp_path / "checkpoint-3"))


@pytest.mark.slow
def test_schedule_in_epochs_thaws_at_the_epoch_boundary(minilm_path, tmp_path):
    _, _, rates = run(minilm_path, tmp_path, max_steps=-1, unit="epoch", num_train_epochs=2,
                      per_device_train_batch_size=4, save_strategy="no")
    assert [len(step) for step in rates.seen] == [2, 2, 4, 4]


class Nudge(transformers.TrainerCallback):
    """Moves one frozen weight after the second step, as a stray in-place update would."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 2:
            with torch.no_grad():
                model.bert.embeddings.word_embeddings.weight[0, 0] += 1e-3


@pytest.mark.slow
def test_guard_names_a_frozen_weight_that_moved(minilm_path, tmp_path):
    with pytest.raises(fl.GuardError, match="bert.embeddings.word_embeddings.weight"):
        run(minilm_path, tmp_path, max_steps=3, before=[Nudge()], save_strategy="no")


@pytest.mark.slow
def test_trainer_with_its_own_optimizer_is_refused(minilm_path, tmp_path):
    callback = FrostlineCallback(fl.Plan.lock(1))
    trainer = transformers.Trainer(model=classifier(minilm_path), args=arguments(tmp_path, 1),
                                   train_dataset=dataset(minilm_path), callbacks=[callback])
    with pytest.raises(fl.PlanError, match="optimizer_cls_and_kwargs=callback"):
        trainer.train()


def test_schedule_of_wrong_type_is_refused():
    with pytest.raises(fl.PlanError, match="expects a Plan or an UnfreezeSchedule, got dict"):
        FrostlineCallback({0: fl.Plan()})
    with pytest.raises(fl.PlanError, match="guard_every must be None or an int >= 1"):
        FrostlineCallback(fl.Plan(), guard_every=0)
