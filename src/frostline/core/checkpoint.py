"""The framework-free half of trainable-only checkpoints: metadata, base checks, atomic writes.

A checkpoint is a safetensors file holding the trained tensors; its metadata (JSON strings)
holds the plan, the trainable state, the base model's architecture (names, kinds, dtypes,
shapes, ties) and a digest of every tensor not stored, so a checkpoint is never loaded onto the
wrong base. The backends (``frostline.torch``, ``frostline.jax``) read and write the tensors;
everything about the metadata and the file itself is here, once.

Example:
    >>> class M: pass
    >>> from .leaves import Leaf, Owner
    >>> view = TreeView((Leaf("w", ("w",), (Owner("", M),), (2,), "float32"),))
    >>> architecture(view)
    [['w', 'param', 'float32', [2], None]]
    >>> digest("float32", (2,), [b"\\x00" * 8]) == digest("float32", (2,), [b"\\x00" * 8])
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import CheckpointError, PlanError, show
from ._textfiles import check_depth
from .leaves import TreeView
from .plan import Plan

FORMAT = "frostline.trainable/1"
KEY_FORMAT = "frostline.format"
KEY_PLAN = "frostline.plan"
KEY_STATE = "frostline.state"
KEY_BASE = "frostline.base"
_SHOWN = 5


@dataclass(frozen=True)
class CheckpointInfo:
    """What ``save_trainable`` wrote or ``load_trainable`` restored.

    Attributes:
        path: the checkpoint file.
        tensors: names of the tensors stored in (or loaded from) the file, in model order.
        plan: the plan stored with the checkpoint (None when only the trainable state was stored).
        trainable: names of the parameters that train under the checkpoint's state.
        skipped: stored tensors the model does not have (only with ``strict=False``).
        written: False on the ranks of a sharded model that only helped gather (rank 0 writes).
    """

    path: str
    tensors: tuple[str, ...]
    plan: Plan | None
    trainable: tuple[str, ...]
    skipped: tuple[str, ...] = ()
    written: bool = True


def canonical_names(view: TreeView) -> list[str]:
    """One name per distinct tensor (the first in view order)."""
    canonical = view.canonical
    return [leaf.name for leaf in view if canonical[leaf.name] == leaf.name]


def architecture(view: TreeView) -> list[list[Any]]:
    """``[name, kind, dtype, shape, tied-to]`` per leaf: what a base must match."""
    canonical = view.canonical
    return [[leaf.name, leaf.kind, leaf.dtype, list(leaf.shape),
             canonical[leaf.name] if canonical[leaf.name] != leaf.name else None]
            for leaf in view]


def digest(dtype: str, shape: Iterable[int], chunks: Iterable[Any]) -> str:
    """A content digest of one tensor: its dtype, shape and the bytes in ``chunks``."""
    h = hashlib.sha256(f"{dtype}{tuple(shape)}".encode())
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()[:32]


def metadata(plan_dict: Mapping[str, Any] | None, trainable: Iterable[str],
             frozen_stats: Iterable[str], base: Mapping[str, Any]) -> dict[str, str]:
    """The safetensors metadata of a checkpoint (string values, as safetensors takes them)."""
    return {
        KEY_FORMAT: FORMAT,
        KEY_PLAN: json.dumps(plan_dict),
        KEY_STATE: json.dumps({"trainable": list(trainable), "frozen_stats": list(frozen_stats)}),
        KEY_BASE: json.dumps(base),
    }


def read_metadata(raw: Mapping[str, str], path: str) -> dict[str, Any]:
    """Parse and check the metadata of a checkpoint: ``{"plan", "state", "base"}``.

    Raises:
        CheckpointError: not a frostline checkpoint, damaged metadata, or an unreadable plan.
    """
    if raw.get(KEY_FORMAT) != FORMAT:
        raise CheckpointError(
            f"{path!r} is not a frostline trainable-only checkpoint (metadata "
            f"{KEY_FORMAT!r} is {raw.get(KEY_FORMAT)!r}, expected {FORMAT!r}); write it with "
            "fl.save_trainable."
        )
    try:
        meta = {"plan": _json(raw, KEY_PLAN), "state": _json(raw, KEY_STATE),
                "base": _json(raw, KEY_BASE)}
        _validate(meta)
    except (KeyError, TypeError, ValueError, RecursionError, PlanError) as exc:
        reason = show(exc.args[0]) if isinstance(exc, KeyError) else _first_line(exc)
        raise CheckpointError(f"{path!r} has damaged frostline metadata ({type(exc).__name__}: "
                              f"{reason}); write the checkpoint again with "
                              "fl.save_trainable.") from None
    if meta["plan"] is not None:
        try:
            meta["plan"] = Plan.from_dict(meta["plan"])
        except PlanError as exc:
            raise CheckpointError(f"{path!r} holds a plan that cannot be read: {exc}") from None
    return meta


def _json(raw: Mapping[str, str], key: str) -> Any:
    """One metadata entry as JSON, no deeper than any frostline writes."""
    data = json.loads(raw[key])
    check_depth(data)
    return data


def _validate(meta: dict[str, Any]) -> None:
    """Check the shape of every metadata entry, so later code meets only what it expects."""
    state, base = meta["state"], meta["base"]
    if not isinstance(state, dict) or not isinstance(base, dict):
        raise ValueError("the trainable state and the base must be mappings")
    digests = base["digests"]
    if not isinstance(digests, dict) or not all(
            isinstance(v, str) for v in digests.values()):
        raise ValueError("the digests must map tensor names to strings")
    for items in (state["trainable"], state["frozen_stats"]):
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise ValueError("the trainable state must hold lists of names")
    if meta["plan"] is not None and not isinstance(meta["plan"], dict):
        raise ValueError("the plan must be a mapping")
    if not isinstance(base["architecture"], list):
        raise ValueError("the architecture must be a list")
    for entry in base["architecture"]:
        if not (isinstance(entry, list) and len(entry) == 5
                and all(isinstance(x, str) for x in entry[:3])
                and isinstance(entry[3], list) and all(type(n) is int for n in entry[3])
                and (entry[4] is None or isinstance(entry[4], str))):
            raise ValueError(f"malformed architecture entry {show(entry)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:160] + "..."


def check_architecture(recorded: list[list[Any]], view: TreeView, path: str) -> None:
    """Raise :class:`CheckpointError` naming every tensor the base and this model differ in."""
    saved = {entry[0]: tuple(map(_hashable, entry[1:])) for entry in recorded}
    now = {row[0]: tuple(map(_hashable, row[1:])) for row in architecture(view)}
    missing = [n for n in saved if n not in now]
    extra = [n for n in now if n not in saved]
    changed = [f"'{n}' {_describe(saved[n])} -> {_describe(now[n])}"
               for n in saved if n in now and saved[n] != now[n]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors of the base are missing from this model "
                        f"({few(missing)})")
    if extra:
        problems.append(f"{len(extra)} tensors of this model were not in the base ({few(extra)})")
    if changed:
        problems.append(f"{len(changed)} tensors changed ({', '.join(changed[:_SHOWN])}"
                        + (", ..." if len(changed) > _SHOWN else "") + ")")
    if problems:
        raise CheckpointError(
            f"{path!r} was saved from a different base model: " + "; ".join(problems)
            + ". Load the base model the checkpoint was trained from, or pass check_base=False "
            "to load anyway."
        )


def check_digests(recorded: Mapping[str, str], digest_of: Callable[[str], str | None],
                  path: str) -> None:
    """Raise :class:`CheckpointError` when a frozen tensor differs from the base's.

    ``digest_of(name)`` gives the digest of this model's tensor, or None when it has none.
    """
    differ = [name for name, value in recorded.items() if digest_of(name) != value]
    if differ:
        raise CheckpointError(
            f"{path!r} was trained on other frozen weights: {len(differ)} frozen tensors of this "
            f"model differ from the base the checkpoint was saved from ({few(differ)}). Load "
            "the same pretrained weights, or pass check_base=False to load anyway."
        )


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over ``path``:
    a crash leaves the previous file intact.

    ``path`` is resolved first, so saving through a symbolic link writes the file it points to
    and the link stays. The file gets the permissions an ordinary new file gets (``0o666``
    less the umask), or keeps those of the file it replaces. A failed write removes its
    temporary file; temporary files that killed saves of the same path left behind are
    removed (see :func:`_remove_stale`).
    """
    path = os.path.realpath(path)
    directory, base = os.path.split(path)
    _remove_stale(directory, base)
    tmp = _create_temporary(directory, base)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


# Temporary files are named ".<file>.<pid>-<host>.<random>.tmp": a later save of the same file
# can tell that the process which wrote one is gone.
_STALE_AFTER_SECONDS = 24 * 3600


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _create_temporary(directory: str, base: str) -> str:
    """Create an empty temporary file beside ``base`` with the mode ``open`` would give it."""
    while True:
        tmp = os.path.join(directory, f".{base}.{os.getpid()}-{_host()}.{secrets.token_hex(4)}.tmp")
        try:
            # 0o666 less the umask, as for any new file (mkstemp would make it 0o600).
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def _remove_stale(directory: str, base: str) -> None:
    """Remove temporary files of ``base`` left by saves that were killed: written on this host
    by a process that no longer runs, or untouched for a day (from any host)."""
    prefix, now = f".{base}.", time.time()
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        middle = name[len(prefix):-len(".tmp")]
        owner = middle.split(".", 1)[0]
        pid, _, host = owner.partition("-")
        full = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            dead = host == _host() and pid.isdigit() and not _running(int(pid))
            if dead or now - os.lstat(full).st_mtime > _STALE_AFTER_SECONDS:
                os.unlink(full)


def _running(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill(pid, 0) is a probe on POSIX only (on Windows it terminates)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # it exists (owned by another user), or the check cannot tell
    return True


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _describe(entry: tuple[Any, ...]) -> str:
    kind, dtype, shape, tie = entry
    return f"{kind} {dtype} {tuple(shape)}" + (f" shared with '{tie}'" if tie else "")


def few(names: list[str]) -> str:
    """The first few names, quoted, each cut to a readable length (names may come from a
    file's metadata)."""
    shown = ", ".join(f"'{n}'" if len(n) <= 80 else f"'{n[:80]}...'" for n in names[:_SHOWN])
    return shown + (", ..." if len(names) > _SHOWN else "")


def read_file(path: str, framework: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tensors (``framework``: ``"pt"`` or ``"numpy"``) and the checked metadata of a
    trainable-only file.

    Raises:
        CheckpointError: no file at ``path``, or one that is not a readable safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework=framework) as handle:
            raw = handle.metadata() or {}
            payload = {key: handle.get_tensor(key) for key in handle.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path!r}.") from None
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path!r} is not a readable safetensors file: {exc}.") from None
    return payload, read_metadata(raw, path)
