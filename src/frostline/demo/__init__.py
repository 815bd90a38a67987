"""The embedded demo: a small BatchNorm CNN pretrained on digits 0-4, two transfer tasks."""

from ._data import Task, source_data, tasks
from ._model import digit_net, pretrained_digit_net, reset_head
from ._run import TaskResult, run_demo

__all__ = ["Task", "TaskResult", "digit_net", "pretrained_digit_net", "reset_head", "run_demo",
           "source_data", "tasks"]
