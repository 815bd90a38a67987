"""PEFT recipe: LoRA on the lower layers, the top layers unfrozen and a new head, in one plan."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import frostline as fl  # noqa: E402

# peft calls a transformers method that transformers 5 deprecates; not frostline's to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

LORA_LAYERS = [0, 1, 2, 3]
PLAN = (fl.Plan().freeze("**")
        .unfreeze("name:lora_A | name:lora_B")  # the adapters of layers 0-3
        .unfreeze("group:-3:"))  # layers 4 and 5, and the head (pooler + new classifier)


def lora_minilm(minilm_path, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # the new head and the adapters start from this seed
    base = transformers.BertForSequenceClassification.from_pretrained(str(minilm_path),
                                                                      num_labels=2)
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                             target_modules=["query", "value"],
                             layers_to_transform=LORA_LAYERS, layers_pattern="layer")
    return peft.get_peft_model(base, config)


def batch(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(1000, 2000, (4, 8), generator=generator),
            "labels": torch.randint(0, 2, (4,), generator=generator)}


def layer_of(name: str) -> int | None:
    marker = ".encoder.layer."
    return int(name.split(marker)[1].split(".")[0]) if marker in name else None


@pytest.mark.slow
def test_lora_top_layers_and_head_train_save_and_load_in_one_plan(minilm_path, tmp_path):
    model = lora_minilm(minilm_path, seed=0)
    fl.apply(model, PLAN)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for n, _ in model.named_parameters()
                if ("lora_" in n and layer_of(n) in LORA_LAYERS) or layer_of(n) in (4, 5)
                or ".pooler." in n or ".classifier." in n}
    assert trainable == expected
    assert not any("lora_" in n for n in trainable if layer_of(n) in (4, 5))

    stem, *layers, head = fl.summary(model).rows  # embeddings, 6 encoder layers, head
    assert [row.modules for row in layers] == [
        (f"base_model.model.bert.encoder.layer.{i}",) for i in range(6)]
    lora_per_layer = 2 * (4 * 384 + 384 * 4)  # query and value, A (4 x 384) and B (384 x 4)
    assert [row.trainable for row in layers] == [lora_per_layer] * 4 + [
        layers[4].params, layers[5].params]
    assert stem.trainable == 0 and head.trainable == head.params
    total, _ = model.get_nb_trainable_parameters()
    assert fl.summary(model).trainable == total

    optimizer = torch.optim.AdamW(fl.param_groups(model, lr=1e-3, weight_decay=0.01))
    model.train()
    with fl.guard(model, require_trainable_moved=True):
        for step in range(3):
            optimizer.zero_grad()
            model(**batch(step)).loss.backward()
            optimizer.step()

    path = tmp_path / "lora-top2-head.safetensors"
    saved = fl.save_trainable(model, path)
    assert set(saved.tensors) == trainable
    fresh = lora_minilm(minilm_path, seed=1)  # other adapters and head until loaded
    probe = batch(99)["input_ids"]
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert not torch.equal(fresh(input_ids=probe).logits, model(input_ids=probe).logits)
        fl.load_trainable(fresh, path)
        assert torch.equal(fresh(input_ids=probe).logits, model(input_ids=probe).logits)
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == trainable


@pytest.mark.slow
def test_trainer_resumes_lora_and_unfrozen_layers_from_the_trainable_only_file(
        minilm_path, tmp_path):
    from frostline.integrations.transformers import FrostlineCallback

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_path))
    texts = ["a cat sat", "the dog ran far", "rain again today", "sunny and warm"]
    encoded = tokenizer(texts, padding="max_length", max_length=8, truncation=True)
    data = [{"input_ids": encoded["input_ids"][i], "labels": i % 2} for i in range(4)]

    def train(resume=None):
        model = lora_minilm(minilm_path, seed=0)
        callback = FrostlineCallback(PLAN, guard_every=1)
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2,
            learning_rate=1e-3, save_strategy="steps", save_steps=2, logging_strategy="no",
            report_to=[], use_cpu=True, seed=0, disable_tqdm=True)
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=data, callbacks=[callback],
            optimizer_cls_and_kwargs=callback.optimizer_cls_and_kwargs())
        trainer.train(resume_from_checkpoint=resume)
        return model

    final = {n: t.clone() for n, t in train().state_dict().items()}
    folder = tmp_path / "checkpoint-2"
    saved = json.loads((folder / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and not (folder / "model.safetensors").exists()
    resumed = train(resume=str(folder))  # the Trainer restores the adapters, frostline the rest
    for name, tensor in resumed.state_dict().items():
        assert torch.equal(tensor, final[name]), name

    (folder / "frostline-trainable.safetensors").unlink()
    with pytest.raises(fl.CheckpointError, match="would restart from the base"):
        train(resume=str(folder))
