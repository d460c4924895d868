"""tests/project/preloaded.py: a command forked from the server behaves as ``python -m`` in a fresh interpreter.

The project's tests start most ``python -m grader ...`` commands through it; were it to differ from a fresh
interpreter (exit status, streams, directory, environment, signals), every such test would prove less.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import preloaded
import pytest
from grader_kata import build_kata, environment


def both(where, *argv, stdin=None, **env):
    """The same command forked from the server and in a fresh interpreter: (forked, fresh)."""
    environ = environment(**env)
    forked, fresh = preloaded.python_m(environ), [sys.executable, "-m"]
    assert forked != fresh, "the server did not start, or the test environment differs from it"
    return [subprocess.run([*prefix, *argv], cwd=where, env=environ, input=stdin, capture_output=True, text=True,
                           timeout=300) for prefix in (forked, fresh)]


def test_a_plain_environment_is_forked_one_torch_reads_at_start_is_not():
    env = environment()
    assert preloaded.python_m(env)[:3] == [sys.executable, "-S", preloaded.__file__]
    assert preloaded.python_m(environment(OMP_NUM_THREADS="3")) == [sys.executable, "-m"]
    assert preloaded.python_m(environment(ATEN_CPU_CAPABILITY="default")) == [sys.executable, "-m"]
    assert preloaded.python_m(env, fresh=True) == [sys.executable, "-m"]


def test_exit_status_streams_directory_arguments_environment_and_imports_are_those_of_python_m(tmp_path):
    (tmp_path / "helper.py").write_text("WORD = 'beside'\n", encoding="utf-8")
    (tmp_path / "probe.py").write_text(
        "import os, sys\nimport helper\n"
        "print(helper.WORD, os.getcwd(), sys.argv[1:], os.environ['PROBE'], sys.stdin.read(), sys.dont_write_bytecode)\n"
        "print('to stderr', file=sys.stderr)\nsys.exit(int(sys.argv[1]))\n", encoding="utf-8")
    forked, fresh = both(tmp_path, "probe", "3", "--flag", stdin="piped in", PROBE="set")
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr) == (
        3, f"beside {tmp_path} ['3', '--flag'] set piped in True\n", "to stderr\n")
    assert not (tmp_path / "__pycache__").exists(), "PYTHONDONTWRITEBYTECODE is honoured"


def test_an_uncaught_exception_is_a_traceback_and_exit_1(tmp_path):
    (tmp_path / "boom.py").write_text("raise ValueError('no')\n", encoding="utf-8")
    forked, fresh = both(tmp_path, "boom")
    assert forked.returncode == fresh.returncode == 1
    assert forked.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1] == "ValueError: no"


def test_a_signal_reaches_the_command_and_its_status_comes_back(tmp_path):
    (tmp_path / "sleeper.py").write_text("import time\nprint('ready', flush=True)\ntime.sleep(120)\n", encoding="utf-8")
    env = environment()
    process = subprocess.Popen([*preloaded.python_m(env), "sleeper"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == -signal.SIGTERM


@pytest.mark.slow  # four graders in fresh interpreters, on purpose
def test_the_grader_prints_and_exits_the_same_either_way(tmp_path):
    kata = build_kata(tmp_path / "kata")
    before = sorted(os.listdir(kata / "exercises"))
    for argv in (("grader", "--impl", "reference"), ("grader",), ("grader", "2", "--impl", "reference"),
                 ("grader", "--no-such-option")):
        forked, fresh = both(kata, *argv)
        assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr), argv
    assert sorted(os.listdir(kata / "exercises")) == before, "nothing is written beside the stubs"
