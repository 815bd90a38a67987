"""The small protocol every backend implements, and the registry that picks one per model.

A backend knows one framework: it builds the tree view of a model, its default layer groups,
and turns a framework-neutral :class:`~frostline.core.mask.Mask` into effects. Backends register
by module path and are imported only when a model of theirs shows up, so the core never imports
a framework.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .._errors import BackendError
from .groups import Grouping, Groups
from .leaves import TreeView
from .mask import Mask

if TYPE_CHECKING:
    from .resolve import Resolved


class Backend(Protocol):
    name: str

    def handles(self, model: Any) -> bool:
        """Cheap check, importing nothing: is ``model`` one of this backend's models?"""

    def unwrap(self, model: Any) -> Any:
        """The model inside any wrappers the framework puts around it (compile, data parallel)."""

    def view(self, model: Any) -> TreeView:
        """The model's ordered leaves, with their current state."""

    def groups(self, model: Any, view: TreeView, grouping: Grouping) -> Groups:
        """The model's layer groups, built as ``grouping`` says."""

    def apply(self, resolved: Resolved) -> Any:
        """Make the resolved mask true on the model (or return what the framework needs)."""

    def native_mask(self, model: Any, mask: Mask) -> Any:
        """The mask in the framework's own form (filter spec pytree, {name: bool}, ...)."""


_REGISTERED: list[str] = ["frostline.torch._backend", "frostline.jax._backend"]
_LOADED: dict[str, Backend | None] = {}


def register_backend(module_path: str) -> None:
    """Register a backend module exposing ``BACKEND`` (tried before the built-in ones)."""
    if module_path not in _REGISTERED:
        _REGISTERED.insert(0, module_path)


def _load(module_path: str) -> Backend | None:
    if module_path not in _LOADED:
        try:
            _LOADED[module_path] = importlib.import_module(module_path).BACKEND
        except ModuleNotFoundError as exc:
            if not is_missing_dependency(exc, module_path):
                raise
            _LOADED[module_path] = None
    return _LOADED[module_path]


def is_missing_dependency(exc: ModuleNotFoundError, our_module: str) -> bool:
    """True when ``exc`` says a third-party package is not installed; False when the missing
    module is ``our_module`` or a part of frostline (a bug there must raise, never fall back
    silently to another backend or to automatic groups)."""
    missing = exc.name or ""
    return bool(missing) and missing.split(".")[0] != "frostline" and missing != our_module


def backend_for(model: Any) -> Backend:
    """The backend that handles ``model``.

    Raises:
        BackendError: when no installed backend recognises the model.
    """
    for module_path in _REGISTERED:
        probe = _probe(module_path)
        if probe is not None and not probe(model):
            continue
        backend = _load(module_path)
        if backend is not None and backend.handles(model):
            return backend
    raise BackendError(
        f"frostline does not know how to handle a {type(model).__module__}."
        f"{type(model).__qualname__}: expected a torch.nn.Module, an Equinox or Flax NNX module, "
        "or a pytree of JAX arrays. Install the matching extra (frostline[torch] or "
        "frostline[jax]) or pass the model itself rather than a wrapper."
    )


def _probe(module_path: str) -> Callable[[Any], bool] | None:
    """A framework-free pre-check, so a JAX model never imports the torch backend and back."""
    import sys

    if module_path == "frostline.torch._backend":
        return lambda model: "torch" in sys.modules and _mro_mentions(model, "torch")
    if module_path == "frostline.jax._backend":
        return lambda model: not _mro_mentions(model, "torch")
    return None


def _mro_mentions(model: Any, package: str) -> bool:
    return any(
        (cls.__module__ or "").split(".")[0] == package for cls in type(model).__mro__
    )
