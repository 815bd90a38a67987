"""The demo data: scikit-learn's 8x8 digits, split into a source task and two target tasks.

* source: digits 0-4 (500 images) — what the shipped network was trained on;
* ``new-digits``: digits 5-9, a new label set over the same kind of images (output-level
  shift): 300 training images, the rest for validation;
* ``noisy``: held-out images of digits 0-4 with Gaussian noise (sigma 0.3, clipped to [0, 1]):
  an input-level corruption with the same labels, so the source head is kept; 200 training
  images, the rest for validation.

Everything is fixed by one seed, and the digits ship with scikit-learn, so no download happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SEED = 0
SOURCE_TRAIN = 500
NEW_DIGITS_TRAIN = 300
NOISY_TRAIN = 200
NOISE_SIGMA = 0.3

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Task:
    """One transfer task of the demo.

    Attributes:
        name: short name ("new-digits", "noisy").
        description: what changed from the source task, in words.
        train: (images ``(N, 1, 8, 8)`` in [0, 1], labels).
        val: the same for validation.
        num_classes: number of labels.
        domain_shift: the shift kind passed to ``fl.recommend``.
        new_head: whether the task needs a freshly initialised head.
    """

    name: str
    description: str
    train: Split
    val: Split
    num_classes: int
    domain_shift: str
    new_head: bool

    @property
    def n_train(self) -> int:
        """Training examples."""
        return len(self.train[1])

    @property
    def n_val(self) -> int:
        """Validation examples."""
        return len(self.val[1])


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    return images, bunch.target.astype(np.int64)


def _split(images: np.ndarray, labels: np.ndarray, n_first: int, seed: int
           ) -> tuple[Split, Split]:
    order = np.random.default_rng(seed).permutation(len(labels))
    return _pair(images, labels, order[:n_first]), _pair(images, labels, order[n_first:])


def _pair(images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> Split:
    return torch.from_numpy(images[index]), torch.from_numpy(labels[index])


def source_data(seed: int = SEED) -> tuple[Split, Split]:
    """(training, held-out) images of digits 0-4, labels 0-4."""
    images, labels = _digits()
    low = labels < 5
    return _split(images[low], labels[low], SOURCE_TRAIN, seed)


def tasks(seed: int = SEED) -> tuple[Task, Task]:
    """The two target tasks, ``new-digits`` and ``noisy``."""
    images, labels = _digits()
    high = labels >= 5
    new_train, new_val = _split(images[high], labels[high] - 5, NEW_DIGITS_TRAIN, seed)
    _, (clean, held_labels) = source_data(seed)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    noisy = (clean + NOISE_SIGMA * noise).clamp(0.0, 1.0)
    return (
        Task("new-digits", "digits 5-9: new labels, same kind of images (new head)",
             new_train, new_val, 5, "output", True),
        Task("noisy", f"digits 0-4 with Gaussian noise (sigma {NOISE_SIGMA}): same labels, "
             "corrupted inputs (source head kept)",
             (noisy[:NOISY_TRAIN], held_labels[:NOISY_TRAIN]),
             (noisy[NOISY_TRAIN:], held_labels[NOISY_TRAIN:]), 5, "input", False),
    )
