"""The ``frostline`` command line: inspect, plan, recommend, sweep, choose, demo.

``frostline ...`` and ``python -m frostline ...`` are the same program. Exit codes: 0 success,
2 a user error (bad arguments, an unknown model, a plan that does not fit: one line on stderr
saying what to do), 1 a failure during the work.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .._errors import FrostlineError

USER_ERROR = 2
FAILURE = 1


class UsageError(FrostlineError):
    """The command line itself is wrong (unknown option, missing argument, bad value)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake raises :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    from . import _choosing, _commands, _sweeping

    parser = _Parser(prog="frostline", description="Decide, apply and prove which parameters of "
                     "a pretrained model train during fine-tuning.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback when something fails")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    _commands.add_inspect(commands)
    _commands.add_plan(commands)
    _commands.add_recommend(commands)
    _sweeping.add_sweep(commands)
    _choosing.add_choose(commands)
    _sweeping.add_demo(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Example:
        >>> main(["plan", "demo", "--unlocked-groups", "9"])
        2
    """
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except FrostlineError as exc:
        if debug:
            raise
        _error(str(exc))
        return USER_ERROR
    except BrokenPipeError:
        # The reader went away (``frostline ... | head``): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return FAILURE
    except KeyboardInterrupt:
        _error("interrupted")
        return FAILURE
    except Exception as exc:  # noqa: BLE001 - any failure of the work is reported in one line
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        _error(f"failed: {type(exc).__name__}: {first} (rerun with --debug for the traceback)")
        return FAILURE


def _error(message: str) -> None:
    sys.stderr.write(f"frostline: error: {' '.join(message.split())}\n")


__all__ = ["build_parser", "main"]
