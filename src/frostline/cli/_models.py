"""Building a model from a command-line spec, offline (no weights are downloaded)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from typing import Any

from .._errors import FrostlineError, closest

SPEC_HELP = ("timm:NAME, torchvision:NAME, hf:PATH_OR_MODEL_TYPE, open_clip:NAME, "
             "package.module:factory, or demo")
# A small configuration for `hf:MODEL_TYPE`, so a model builds in a second; only the keys the
# model's config knows are set.
HF_SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 128}


class ModelSpecError(FrostlineError):
    """A model spec names no model this machine can build."""


def load_model(spec: str) -> Any:
    """The model a spec names, randomly initialised (or from a local folder for ``hf:``).

    Raises:
        ModelSpecError: the spec's form is unknown, or the library does not know the name.
    """
    prefix, _, name = spec.partition(":")
    builders: dict[str, Callable[[str], Any]] = {
        "timm": _timm, "torchvision": _torchvision, "hf": _hf, "open_clip": _open_clip,
    }
    if spec == "demo":
        from ..demo import pretrained_digit_net

        return pretrained_digit_net()
    if prefix in builders and name:
        return builders[prefix](name)
    if name and all(part.isidentifier() for part in prefix.split(".")):
        return _factory(prefix, name)
    raise ModelSpecError(f"unknown model spec {spec!r}: expected {SPEC_HELP}.")


def _unknown(library: str, name: str, known: Iterable[str]) -> ModelSpecError:
    hint = closest(name, known)
    return ModelSpecError(
        f"{library} has no model {name!r}" + (f"; closest: {', '.join(hint)}" if hint else "")
        + f". List the names with the library ({library}) and pass one of them."
    )


def _import(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelSpecError(f"{module} is not installed: pip install 'frostline[{extra}]'.") from None


def _timm(name: str) -> Any:
    timm = _import("timm", "zoo")
    if name not in timm.list_models():
        raise _unknown("timm", name, timm.list_models())
    return timm.create_model(name, pretrained=False)


def _torchvision(name: str) -> Any:
    models = _import("torchvision.models", "zoo")
    known = models.list_models()
    if name not in known:
        raise _unknown("torchvision", name, known)
    return models.get_model(name, weights=None)


def _open_clip(name: str) -> Any:
    open_clip = _import("open_clip", "zoo")
    known = open_clip.list_models()
    if name not in known:
        raise _unknown("open_clip", name, known)
    return open_clip.create_model(name, pretrained=None)


def _hf(path_or_type: str) -> Any:
    transformers = _import("transformers", "zoo")
    if os.path.isdir(path_or_type):
        return transformers.AutoModel.from_pretrained(path_or_type, local_files_only=True)
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if path_or_type not in CONFIG_MAPPING:
        raise ModelSpecError(
            f"hf:{path_or_type} is neither a local model folder nor a transformers model type"
            + (f"; closest types: {', '.join(closest(path_or_type, CONFIG_MAPPING.keys()))}"
               if closest(path_or_type, CONFIG_MAPPING.keys()) else "")
            + ". Pass a folder with config.json, or a model type such as hf:bert."
        )
    config = transformers.AutoConfig.for_model(path_or_type)
    for key, value in HF_SMALL.items():
        if hasattr(config, key):
            setattr(config, key, value)
    return transformers.AutoModel.from_config(config)


def _factory(module_name: str, attr: str) -> Any:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelSpecError(
            f"cannot import {module_name!r} for the model factory {module_name}:{attr} ({exc}); "
            f"expected {SPEC_HELP}."
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelSpecError(
            f"{module_name} has no callable {attr!r}; pass package.module:factory where "
            "factory() returns the model."
        )
    return factory()
