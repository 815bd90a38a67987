"""Building a model from a command-line spec, offline (no weights are downloaded)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from typing import Any

from .._errors import FrostlineError, closest, shorten

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
        return _with_parameters(builders[prefix](name), spec)
    if name and all(part.isidentifier() for part in prefix.split(".")):
        return _with_parameters(_factory(prefix, name), spec)
    raise ModelSpecError(f"unknown model spec {shorten(spec)}: expected {SPEC_HELP}.")


def _with_parameters(model: Any, spec: str) -> Any:
    """The model, if frostline knows its kind and it has parameters to freeze or train."""
    from ..core.backend import backend_for
    from ..core.leaves import PARAM

    view = backend_for(model).view(model)
    if not any(leaf.kind == PARAM for leaf in view):
        raise ModelSpecError(
            f"{shorten(spec)} built a {type(model).__name__} without parameters: there is "
            "nothing to freeze or train. Pass a model spec whose model has parameters."
        )
    return model


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
        if not os.path.isfile(os.path.join(path_or_type, "config.json")):
            raise ModelSpecError(
                f"hf:{shorten(path_or_type)} is a folder without config.json; pass a folder "
                "saved with save_pretrained (config.json and the weights), or a model type "
                "such as hf:bert."
            )
        try:
            return transformers.AutoModel.from_pretrained(path_or_type, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelSpecError(
                f"hf:{shorten(path_or_type)} cannot be loaded by transformers: {first[:200]}"
            ) from None
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
    except SystemExit as exc:
        raise ModelSpecError(f"importing {module_name} for the model factory called "
                             f"exit({exc.code!r}); import a module that defines the factory "
                             "without exiting.") from None
    except ImportError as exc:
        raise ModelSpecError(
            f"cannot import {module_name!r} for the model factory {module_name}:{attr} ({exc}); "
            f"expected {SPEC_HELP}."
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelSpecError(
            f"{module_name} has no callable {shorten(attr)}; pass package.module:factory where "
            "factory() returns the model."
        )
    try:
        return factory()
    except SystemExit as exc:
        # An exit from inside the factory would end the command with its code (0: success).
        raise ModelSpecError(
            f"the model factory {module_name}:{attr} called exit({exc.code!r}) instead of "
            "returning a model; make factory() return the model."
        ) from None
