"""Building a model from a command-line spec, offline (no weights are downloaded).

``--model-arg KEY=VALUE`` options become keyword arguments of the constructor (timm, torchvision,
OpenCLIP, a factory) or attributes of the configuration (``hf:``); values read as int, float,
bool or string:

    >>> parse_model_args(["num_classes=10", "in_chans=1", "drop_rate=0.1", "global_pool=avg"])
    {'num_classes': 10, 'in_chans': 1, 'drop_rate': 0.1, 'global_pool': 'avg'}
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .._errors import FrostlineError, closest, shorten

SPEC_HELP = ("timm:NAME, torchvision:NAME, hf:PATH_OR_MODEL_TYPE, open_clip:NAME, "
             "package.module:factory, or demo")
# A small configuration for `hf:MODEL_TYPE`, so a model builds in a second; only the keys the
# model's config knows are set.
HF_SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 128}


class ModelSpecError(FrostlineError):
    """A model spec names no model this machine can build, or its arguments do not fit it."""


def add_model_arg_option(parser: argparse.ArgumentParser) -> None:
    """``--model-arg KEY=VALUE``, repeatable."""
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                        dest="model_args", help="an argument for the model's constructor, e.g. "
                        "num_classes=10 (a config value for hf:); repeatable")


def model_from_args(args: argparse.Namespace) -> Any:
    """The model of ``args.model`` built with ``args.model_args``."""
    return load_model(args.model, parse_model_args(args.model_args))


def parse_model_args(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as keyword arguments: ints, floats, ``true``/``false``, else strings.

    Raises:
        ModelSpecError: an item is not ``KEY=VALUE`` with an identifier as key, or a key repeats.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ModelSpecError(f"--model-arg {item!r}: expected KEY=VALUE with a Python name "
                                 "as KEY, e.g. --model-arg num_classes=10.")
        if key in out:
            raise ModelSpecError(f"--model-arg {key} is given twice; pass each key once.")
        out[key] = _value(text)
    return out


def _value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def load_model(spec: str, model_args: Mapping[str, Any] | None = None) -> Any:
    """The model a spec names, randomly initialised (or from a local folder for ``hf:``).

    Args:
        spec: ``timm:NAME``, ``torchvision:NAME``, ``hf:PATH_OR_MODEL_TYPE``, ``open_clip:NAME``,
            ``package.module:factory`` (imported from the current directory too) or ``demo``.
        model_args: keyword arguments for the constructor, or configuration values for ``hf:``.

    Raises:
        ModelSpecError: the spec's form is unknown, the library does not know the name, or the
            model does not take one of ``model_args``.
    """
    kwargs = dict(model_args or {})
    prefix, _, name = spec.partition(":")
    builders: dict[str, Callable[[str, dict[str, Any]], Any]] = {
        "timm": _timm, "torchvision": _torchvision, "hf": _hf, "open_clip": _open_clip,
    }
    if spec == "demo":
        if kwargs:
            raise ModelSpecError("the demo network takes no --model-arg; it is built as shipped.")
        from ..demo import pretrained_digit_net

        return pretrained_digit_net()
    if prefix in builders and name:
        return _with_parameters(builders[prefix](name, kwargs), spec)
    if name and all(part.isidentifier() for part in prefix.split(".")):
        return _with_parameters(_factory(prefix, name, kwargs), spec)
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


def _build(spec: str, build: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``build(**kwargs)``; with model arguments, a TypeError or ValueError is a user error.

    The names are known and build without arguments, so what fails with them is the arguments:
    an unknown keyword, or a value of the wrong kind (``num_classes=ten``).
    """
    try:
        return build(**kwargs)
    except (TypeError, ValueError) as exc:
        if not kwargs:
            raise
        given = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
        raise ModelSpecError(
            f"{spec} cannot be built with --model-arg {given}: {str(exc).splitlines()[0]}. "
            "Pass only arguments its constructor takes, with values of the right kind."
        ) from None


def _timm(name: str, kwargs: dict[str, Any]) -> Any:
    timm = _import("timm", "zoo")
    if name not in timm.list_models():
        raise _unknown("timm", name, timm.list_models())
    return _build(f"timm:{name}", lambda **kw: timm.create_model(name, pretrained=False, **kw),
                  kwargs)


def _torchvision(name: str, kwargs: dict[str, Any]) -> Any:
    models = _import("torchvision.models", "zoo")
    known = models.list_models()
    if name not in known:
        raise _unknown("torchvision", name, known)
    return _build(f"torchvision:{name}", lambda **kw: models.get_model(name, weights=None, **kw),
                  kwargs)


def _open_clip(name: str, kwargs: dict[str, Any]) -> Any:
    open_clip = _import("open_clip", "zoo")
    known = open_clip.list_models()
    if name not in known:
        raise _unknown("open_clip", name, known)
    return _build(f"open_clip:{name}",
                  lambda **kw: open_clip.create_model(name, pretrained=None, **kw), kwargs)


def _looks_like_path(text: str) -> bool:
    # Model types are single words ("bert", "xlm-roberta"); a separator or a leading dot or tilde
    # means the user meant a folder.
    return os.sep in text or "/" in text or text.startswith((".", "~"))


def _hf(path_or_type: str, kwargs: dict[str, Any]) -> Any:
    transformers = _import("transformers", "zoo")
    folder = os.path.expanduser(path_or_type)
    if os.path.isdir(folder):
        return _hf_folder(path_or_type, folder, kwargs)
    if _looks_like_path(path_or_type):
        what = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
        raise ModelSpecError(
            f"hf:{shorten(path_or_type)}: the folder {shorten(folder)} {what}. Pass a folder with "
            "config.json (save_pretrained() writes one); frostline builds models offline, so a "
            "Hub name must be downloaded first (huggingface-cli download NAME --local-dir FOLDER)."
        )
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if path_or_type not in CONFIG_MAPPING:
        hint = closest(path_or_type, CONFIG_MAPPING.keys())
        raise ModelSpecError(
            f"hf:{path_or_type} is neither a local model folder nor a transformers model type"
            + (f"; closest types: {', '.join(hint)}" if hint else "")
            + ". Pass a folder with config.json, or a model type such as hf:bert."
        )
    config = transformers.AutoConfig.for_model(path_or_type)
    for key, value in HF_SMALL.items():
        if hasattr(config, key):
            setattr(config, key, value)
    _configure(f"hf:{path_or_type}", config, kwargs)
    return _build(f"hf:{path_or_type}",
                  lambda **_: transformers.AutoModel.from_config(config), kwargs)


def _hf_folder(spec_name: str, folder: str, kwargs: dict[str, Any]) -> Any:
    """The model saved in ``folder`` (``save_pretrained``), its config changed by ``kwargs``."""
    transformers = _import("transformers", "zoo")
    spec = f"hf:{shorten(spec_name)}"
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ModelSpecError(
            f"{spec} is a folder without config.json; pass a folder saved with save_pretrained "
            "(config.json and the weights), or a model type such as hf:bert."
        )
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        _configure(spec, config, kwargs)
        return _build(spec, lambda **_: transformers.AutoModel.from_pretrained(
            folder, config=config, local_files_only=True), kwargs)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelSpecError(f"{spec} cannot be loaded by transformers: {first[:200]}") from None


def _configure(spec: str, config: Any, kwargs: dict[str, Any]) -> None:
    """Set ``kwargs`` on a transformers config, refusing keys it does not have."""
    known = config.to_dict()
    unknown = [key for key in kwargs if key not in known]
    if unknown:
        hint = closest(unknown[0], known)
        raise ModelSpecError(
            f"{spec}: its {type(config).__name__} has no {unknown[0]!r}"
            + (f"; closest: {', '.join(hint)}" if hint else "")
            + ". --model-arg sets configuration values the config already has."
        )
    for key, value in kwargs.items():
        try:
            setattr(config, key, value)
        except Exception as exc:  # noqa: BLE001 - configs validate values (strict dataclasses)
            why = " ".join(str(exc).split())
            raise ModelSpecError(f"{spec}: --model-arg {key}={value!r} does not fit its "
                                 f"{type(config).__name__}: {why}.") from None


def _factory(module_name: str, attr: str, kwargs: dict[str, Any]) -> Any:
    # `python -m frostline` imports from the current directory (it is sys.path[0]); the console
    # script's sys.path[0] is its own folder instead. Both must find `mymodels.py` beside the user.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except SystemExit as exc:
        raise ModelSpecError(f"importing {module_name} for the model factory called "
                             f"exit({exc.code!r}); import a module that defines the factory "
                             "without exiting.") from None
    except ImportError as exc:
        raise ModelSpecError(
            f"cannot import {module_name!r} for the model factory {module_name}:{attr} ({exc}) "
            f"from {os.getcwd()} or the installed packages; expected {SPEC_HELP}."
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelSpecError(
            f"{module_name} has no callable {shorten(attr)}; pass package.module:factory where "
            "factory() returns the model."
        )
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise ModelSpecError(f"{module_name}:{attr} does not take --model-arg "
                             f"{', '.join(kwargs)}: {exc}.") from None
    except ValueError:
        pass  # no signature to check (a builtin): the call itself will tell
    try:
        return factory(**kwargs)
    except SystemExit as exc:
        # An exit from inside the factory would end the command with its code (0: success).
        raise ModelSpecError(
            f"the model factory {module_name}:{attr} called exit({exc.code!r}) instead of "
            "returning a model; make factory() return the model."
        ) from None
