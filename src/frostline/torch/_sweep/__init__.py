"""Sweeping the frost line: train each setting on a small budget and measure it.

Each setting is a plan (and optionally a linear-probe phase first, for LP-FT). Every setting
starts from ``make_model()`` under the same seed and sees the same batches, so the rows differ
only by what trains (and the learning rates, when a grid is given).

Modules, one job each: ``_settings`` (what is compared), ``_data`` (tensors, loaders and
iterables addressed by example index), ``_cache`` (the frozen prefix's features, any
architecture), ``_train`` (one setting at one learning rate, epoch by epoch), ``_halving``
(successive halving), ``_scale`` (settings spread over ``torch.distributed`` ranks), ``_run``
(``fl.sweep``), ``_choose`` (``fl.choose``), ``_result`` (rows and results), ``_progress``.

The cache skips only the forward pass of the frozen prefix: the groups that train still run
forward and backward, and settings that train the first group (full or surgical fine-tuning)
cannot use it, so the saving of a whole sweep depends on how the model's cost is spread.
"""

from ._cache import Boundary, FeatureCache, Layout
from ._choose import Choice, choose
from ._data import SweepDataError, accuracy, call_model
from ._result import Pruned, SweepResult, SweepRow
from ._run import sweep
from ._settings import LearningRates, Setting, default_settings
from ._train import frozen_prefix

__all__ = ["Boundary", "Choice", "choose", "FeatureCache", "LearningRates", "Layout", "Pruned", "Setting",
           "SweepDataError", "SweepResult", "SweepRow", "accuracy", "call_model",
           "default_settings", "frozen_prefix", "sweep"]
