"""Regenerate the coverage table of docs/coverage.md: which families frostline groups, how, and
whether the groups agree with the library's own grouping or locking (checked live, not copied).

Usage:
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/coverage_table.py          # rewrite docs/coverage.md
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/coverage_table.py --print  # print the table only

Models are built offline (pretrained=False, tiny configs); big ones on the meta device, since
grouping and locking look at names and module classes only.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

import frostline as fl

DOC = Path(__file__).resolve().parent.parent / "docs" / "coverage.md"
BEGIN, END = "<!-- coverage-table:begin -->", "<!-- coverage-table:end -->"
NA = "not applicable"

TIMM = ["resnet18", "convnext_atto", "efficientnet_b0", "mobilenetv3_small_050", "regnetx_002",
        "vit_tiny_patch16_224", "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224",
        "levit_128s", "coat_lite_tiny", "edgenext_xx_small", "ghostnet_050", "mixer_s32_224",
        "rexnet_100", "hrnet_w18_small", "densenet121", "dla34", "dpn68", "cspresnet50",
        "nf_resnet26", "res2net50_14w_8s", "vgg11", "xcit_nano_12_p16_224", "fastvit_t8",
        "maxvit_nano_rw_256", "eva02_tiny_patch14_224", "poolformer_s12"]


def _meta(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return build()


def _frozen(model: nn.Module) -> set[str]:
    from torchvision.ops.misc import FrozenBatchNorm2d

    out = {n for n, p in model.named_parameters() if not p.requires_grad}
    for path, module in model.named_modules():
        if isinstance(module, FrozenBatchNorm2d):
            out |= {f"{path}.weight", f"{path}.bias"}
    return out


def _fixed_bn(model: nn.Module) -> set[str]:
    from torchvision.ops.misc import FrozenBatchNorm2d

    model.train()
    return {p for p, m in model.named_modules() if isinstance(m, FrozenBatchNorm2d) or (
        isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.training)}


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _lock_parity(model: nn.Module, theirs_lock: Callable[[nn.Module, int, bool], None],
                 ks: range, bn_values: tuple[bool, ...], **options) -> bool:
    for freeze_bn_stats in bn_values:
        for k in ks:
            theirs, ours = copy.deepcopy(model), copy.deepcopy(model)
            with _device_of(model):  # OpenCLIP creates FrozenBatchNorm2d on the default device
                theirs_lock(theirs, k, freeze_bn_stats)
            fl.lock(ours, k, freeze_bn_stats=freeze_bn_stats, **options)
            if _frozen(ours) != _frozen(theirs) or _fixed_bn(ours) != _fixed_bn(theirs):
                return False
    return True


def _top_bug(tower: nn.Module, n: int) -> str:
    """At k = n with freeze_bn_stats, OpenCLIP 3.3.0 fixes every BatchNorm: say so if it does."""
    every = {p for p, m in tower.named_modules() if isinstance(m, nn.BatchNorm2d)}
    theirs, ours = copy.deepcopy(tower), copy.deepcopy(tower)
    with _device_of(tower):
        theirs.lock(unlocked_groups=n, freeze_bn_stats=True)
    fl.lock(ours, n, freeze_bn_stats=True)
    if every and _fixed_bn(theirs) == every and not _fixed_bn(ours):
        return (f"; at k = n with freeze_bn_stats OpenCLIP fixes all {len(every)} BatchNorms "
                "(its bug), frostline none")
    return ""


def _timm_rows() -> Iterator[tuple[str, str, Any, str]]:
    import timm
    from timm.models import group_parameters

    for name in TIMM:
        model = _meta(lambda: timm.create_model(name, pretrained=False, num_classes=10))
        if not hasattr(model, "group_matcher"):
            yield "timm", name, model, "no group_matcher: automatic groups"
            continue
        canonical = {n for n, _ in model.named_parameters()}
        same = all(
            [set(g.parameter_names) & canonical for g in fl.groups(model, coarse=c)]
            == [set(v) for _, v in sorted(group_parameters(model, model.group_matcher(c)).items())]
            for c in (False, True))
        yield "timm", name, model, ("yes" if same else "NO") + " (group_parameters, both coarse)"


def _open_clip_rows() -> Iterator[tuple[str, str, Any, str]]:
    import open_clip
    from open_clip.hf_model import HFTextEncoder
    from transformers import RobertaConfig

    text = dict(layers=3, width=32, heads=2, context_length=8, vocab_size=64)
    tower_lock = lambda m, k, b: m.lock(unlocked_groups=k, freeze_bn_stats=b)  # noqa: E731
    vit = open_clip.CLIP(16, dict(layers=3, width=32, patch_size=8, image_size=32,
                                        head_width=16), text)
    n = len(fl.groups(vit.visual))
    same = _lock_parity(vit.visual, tower_lock, range(n + 1), (False, True))
    yield "OpenCLIP", "VisionTransformer", vit.visual, _yes(same, "lock, every k")
    text_groups = fl.groups(vit, tower="text")
    same = _lock_parity(vit, lambda m, k, b: m.lock_text_tower(k), range(len(text_groups) + 1),
                        (False,), tower="text")
    yield "OpenCLIP", "CLIP text tower (tower='text')", text_groups, _yes(
        same, "lock_text_tower, every k")
    for label, cfg in [("TimmModel convnext_tiny", dict(timm_model_name="convnext_tiny",
                                                        timm_proj="linear", image_size=32)),
                       ("TimmModel MobileCLIP-S1 (fastvit_mci1)",
                        {**open_clip.get_model_config("MobileCLIP-S1")["vision_cfg"],
                         "image_size": 64})]:
        tower = _meta(lambda: open_clip.CustomTextCLIP(16, cfg, text)).visual
        n = len(fl.groups(tower))
        same = _lock_parity(tower, tower_lock, range(n), (False, True))
        yield "OpenCLIP", label, tower, _yes(same, "lock, every k < n" + _top_bug(tower, n))
    rn = open_clip.CLIP(16, dict(layers=[1, 1, 1, 1], width=8, image_size=64, head_width=8),
                         text).visual
    same = _lock_parity(rn, tower_lock, range(1), (False, True))
    yield "OpenCLIP", "ModifiedResNet (RN50 layout)", rn, _yes(
        same, "k = 0; OpenCLIP refuses k > 0, frostline locks by group")
    config = RobertaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=40)
    clip = open_clip.CustomTextCLIP(16, dict(layers=2, width=32, patch_size=8, image_size=32,
                                                head_width=16),
                                    text)
    clip.text = HFTextEncoder("roberta-base", 16, config=config, pooler_type="mean_pooler",
                              proj_type="linear", pretrained=False)
    text_groups = fl.groups(clip, tower="text")
    same = _lock_parity(clip, lambda m, k, b: m.lock_text_tower(k), range(len(text_groups) + 1),
                        (False,), tower="text")
    yield "OpenCLIP", "HFTextEncoder (RoBERTa config)", text_groups, _yes(
        same, "lock_text_tower, every k")


def _transformers_rows() -> Iterator[tuple[str, str, Any, str]]:
    import transformers as T

    layers = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64)
    decoder = dict(vocab_size=64, num_key_value_heads=1, max_position_embeddings=32, **layers)
    builds = {
        "BERT": lambda: T.BertModel(T.BertConfig(vocab_size=64, **layers)),
        "RoBERTa": lambda: T.RobertaForMaskedLM(T.RobertaConfig(
            vocab_size=64, max_position_embeddings=40, **layers)),
        "DistilBERT": lambda: T.DistilBertModel(T.DistilBertConfig(
            vocab_size=64, dim=32, n_layers=2, n_heads=2, hidden_dim=64)),
        "ViT": lambda: T.ViTModel(T.ViTConfig(image_size=16, patch_size=8, **layers)),
        "GPT-2 (tied lm_head)": lambda: T.GPT2LMHeadModel(T.GPT2Config(
            vocab_size=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)),
        "Llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**decoder)),
        "Mistral": lambda: T.MistralForCausalLM(T.MistralConfig(**decoder)),
        "Qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**decoder)),
        "T5 (encoder, then decoder)": lambda: T.T5ForConditionalGeneration(T.T5Config(
            vocab_size=64, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2)),
        "CLIP (text tower, then vision tower)": lambda: T.CLIPModel(T.CLIPConfig(
            text_config=dict(vocab_size=64, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                             **layers),
            vision_config=dict(image_size=16, patch_size=8, **layers))),
        "Whisper (encoder, then decoder)": lambda: T.WhisperForConditionalGeneration(
            T.WhisperConfig(vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=2,
                            encoder_attention_heads=2, decoder_attention_heads=2,
                            encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8,
                            pad_token_id=0, bos_token_id=1, eos_token_id=2,
                            decoder_start_token_id=1)),
    }
    # Two layers per stack keep the table fast; a model's group count is its layers + 2 or so
    # (a 12-layer BERT has 14 groups), so the label says the depth.
    for label, build in builds.items():
        yield "transformers", f"{label}, 2-layer config", build(), NA
    model = T.Wav2Vec2ForCTC(T.Wav2Vec2Config(
        vocab_size=16, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
        num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, **layers))
    theirs, ours = copy.deepcopy(model), copy.deepcopy(model)
    theirs.freeze_feature_encoder()
    fl.lock(ours, len(fl.groups(ours)) - 1)
    yield "transformers", "wav2vec2, 2-layer config", model, _yes(_frozen(ours) == _frozen(theirs),
                                                   "freeze_feature_encoder")


def _torchvision_rows() -> Iterator[tuple[str, str, Any, str]]:
    import timm
    import torchvision

    twins = {"resnet18": ("resnet18", True), "convnext_tiny": ("convnext_tiny", True),
             "efficientnet_b0": ("efficientnet_b0", True), "mobilenet_v3_small": None,
             "vit_b_16": ("vit_base_patch16_224", False),
             "swin_t": ("swin_tiny_patch4_window7_224", True)}
    for name, twin in twins.items():
        model = _meta(lambda: getattr(torchvision.models, name)(weights=None))
        if twin is None:
            yield "torchvision", name, model, NA
            continue
        other = _meta(lambda: timm.create_model(twin[0], pretrained=False))
        same = _sizes(model) == _sizes(other, coarse=twin[1])
        yield "torchvision", name, model, (
            f"{NA} (no own grouping); group sizes equal timm {twin[0]}: "
            + ("yes" if same else "NO"))


def _sizes(model: nn.Module, **options) -> list[int]:
    view = fl.view(model)
    return [sum(view[n].numel for n in g.parameter_names) for g in fl.groups(model, **options)]


def _yes(same: bool, what: str) -> str:
    return ("yes" if same else "NO") + f" ({what})"


def table() -> str:
    """The coverage table as Markdown, every parity check run now."""
    lines = ["| family | model | groups | source | parity with the library's own |",
             "|---|---|---|---|---|"]
    for rows in (_open_clip_rows, _timm_rows, _transformers_rows, _torchvision_rows):
        for family, label, model, parity in rows():
            found = model if isinstance(model, fl.Groups) else fl.groups(model)
            lines.append(f"| {family} | {label} | {len(found)} | {found.source} | {parity} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the table, change nothing")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()):  # OpenCLIP's HFTextEncoder.lock prints
        text = table()
    if args.print:
        sys.stdout.write(text)
        return
    doc = DOC.read_text(encoding="utf-8")
    start, stop = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    DOC.write_text(doc[:start] + "\n" + text + doc[stop:], encoding="utf-8")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
