"""Exit codes and one-line messages: 2 for user mistakes, 1 for failures during the work."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize(("argv", "says"), [
    (["inspect", "timm:resnet1"], "closest: resnet18"),
    (["inspect", "nosuchthing"], "unknown model spec"),
    (["inspect", "torchvision:resnet_18"], "torchvision has no model"),
    (["inspect"], "required: MODEL"),
    (["bogus"], "invalid choice"),
    (["plan", "demo"], "nothing to plan"),
    (["plan", "demo", "--unlocked-groups", "9"], "cannot unlock 9 groups"),
    (["plan", "demo", "--freeze", "stme.*"], "matches nothing"),
    (["plan", "demo", "--check", "/nonexistent/plan.yaml"], "cannot read plan file"),
    (["recommend", "demo", "--n-train", "-3"], "non-negative"),
    (["sweep", "--unlocked", "0-9"], "use counts from 1 to 5"),
    (["sweep", "--epochs", "0"], "positive integer"),
    (["inspect", "no_such_module_xyz:factory"], "cannot import"),
])
def test_user_errors_exit_2_with_one_line(cli, argv, says):
    code, out, err = cli.main(*argv)
    assert code == 2
    assert says in cli.error_line(err)


def test_user_error_in_a_subprocess_has_no_traceback(cli):
    done = cli.run("inspect", "timm:resnet1")
    assert done.returncode == 2
    assert "closest: resnet18" in cli.error_line(done.stderr)


def test_failure_during_the_work_exits_1_with_one_line(cli, factories):
    done = cli.run("inspect", "cli_factories:broken", pythonpath=factories)
    assert done.returncode == 1
    assert "RuntimeError: boom" in cli.error_line(done.stderr)


def test_console_script_and_python_m_are_the_same_program(cli):
    args = ("plan", "demo", "--unlocked-groups", "1", "--json")
    by_module, by_script = cli.run(*args), cli.run(*args, script=True)
    assert by_module.returncode == by_script.returncode == 0
    assert json.loads(by_module.stdout) == json.loads(by_script.stdout)

