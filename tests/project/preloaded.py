"""A fork server for the project's tests: ``python -m grader ...`` without paying for ``import torch`` each time.

Most of a small grader run is importing torch (about 1 s of a 1.2 s run on the miniature kata). The tests
start hundreds of them, so each test process keeps one server that has imported torch, numpy and pytest
and nothing of this repository, and forks it once per command. What a test starts is still a process of
its own, with its own arguments, directory, environment and standard streams:

    command = preloaded.python_m(env) + ["grader", "--impl", "reference"]   # instead of [python, "-m"]
    subprocess.run(command, cwd=kata, env=env, ...)

``python_m`` returns ``[python, -S, this file, socket]``: a launcher (the standard library only, no
site) that hands its standard streams, directory, environment and arguments to the server, and then
stands in for the forked command: it exits with its exit status (or its signal) and passes on the
signals it gets. If the launcher dies, the server kills the command. The forked command imports the
repository's modules afresh from its own directory, as ``python -m`` does, runs the exit handlers and
joins its threads before it exits.

Where a fork would not behave as a fresh interpreter, ``python_m`` returns ``[python, "-m"]``: an
environment that differs from the server's in anything that torch, the C runtime or Python read when
they start (threads, CPU kernels, paths, coverage), no server (it failed to start), or a test that
watches the command's own children (``fresh=True``: the forked command is the server's child, not
the launcher's).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

# Read once, when the interpreter or torch starts: a command whose environment sets them otherwise is not forked.
STARTUP = ("OMP_", "MKL_", "KMP_", "GOMP_", "ATEN_", "TORCH", "PYTORCH", "CUDA", "OPENBLAS", "LD_", "PYTHON",
           "COVERAGE", "COV_CORE", "MALLOC", "LC_", "LANG")
# the forked command sets sys.dont_write_bytecode from the first; torch sets the second in a test process that
# compiled something, and reads it only when it compiles
HANDLED = {"PYTHONDONTWRITEBYTECODE", "TORCHINDUCTOR_CACHE_DIR"}
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_server: tuple | None = None  # (process, socket path, environment) of this test process's server


def _startup(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(STARTUP) and k not in HANDLED}


def python_m(env: dict[str, str], fresh: bool = False) -> list[str]:
    """The command that runs ``python -m <module> ...`` with ``env``: through the server where it is safe."""
    server = None if fresh else _start()
    if server is None or _startup(env) != _startup(server[2]):
        return [sys.executable, "-m"]
    return [sys.executable, "-S", __file__, server[1]]


def _start():
    """This process's server, started on first use (None where it cannot start)."""
    global _server
    import atexit
    import shutil
    import subprocess
    import tempfile

    if _server is not None:
        return _server if _server[0].poll() is None else None
    if not hasattr(socket, "AF_UNIX") or not hasattr(os, "fork"):  # Windows: every command in a fresh interpreter
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KATA_", "GITHUB_", "COV_CORE"))}
    folder = tempfile.mkdtemp(prefix="kata-fork-")
    path = os.path.join(folder, "server")
    process = subprocess.Popen([sys.executable, __file__, "--serve", path], env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, start_new_session=True)
    ready = process.stdout.readline()  # written once it listens
    atexit.register(shutil.rmtree, folder, True)
    atexit.register(process.kill)
    _server = (process, path, env)
    return _server if ready == b"ready\n" else None


# ---------------------------------------------------------------- the launcher (no imports beyond the above)

def _launch(path: str, argv: list[str]) -> None:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(path)
    header = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    socket.send_fds(connection, [struct.pack("!I", len(header)) + header], [0, 1, 2])
    replies = connection.makefile("rb")
    pid = int(replies.readline())
    for number in FORWARDED:
        signal.signal(number, lambda n, _frame: os.kill(pid, n))
    status = int(replies.readline() or b"-1")  # -1: the server went away
    if status >= 0 and os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    sys.exit(os.waitstatus_to_exitcode(status) if status >= 0 else 1)


# ---------------------------------------------------------------- the server

def _serve(path: str) -> None:
    import selectors

    import numpy  # noqa: F401  what the commands would import first; nothing of this repository
    import pytest  # noqa: F401
    import torch  # noqa: F401

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    parent = os.getppid()
    running: dict[int, socket.socket] = {}  # pid -> its launcher's connection
    select = selectors.DefaultSelector()
    select.register(listener, selectors.EVENT_READ)
    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.flush()
    while os.getppid() == parent:
        for key, _ in select.select(timeout=0.02):
            if key.fileobj is listener:
                connection, _ = listener.accept()
                try:
                    pid = _fork(connection, [listener, *running.values()])
                except (OSError, ValueError):  # a launcher that died while it asked
                    connection.close()
                    continue
                running[pid] = connection
                select.register(connection, selectors.EVENT_READ, pid)
                try:
                    connection.sendall(b"%d\n" % pid)
                except OSError:
                    _kill(pid)
            elif not _alive(key.fileobj):  # the launcher is gone: so is its command
                select.unregister(key.fileobj)
                _kill(key.data)
        while running and (ended := os.waitpid(-1, os.WNOHANG))[0]:
            connection = running.pop(ended[0])
            if connection in (key.fileobj for key in select.get_map().values()):
                select.unregister(connection)
            try:
                connection.sendall(b"%d\n" % ended[1])
            except OSError:  # its launcher is gone
                pass
            connection.close()
    for pid in running:
        _kill(pid)


def _alive(connection: socket.socket) -> bool:
    try:
        return bool(connection.recv(1))
    except OSError:
        return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _receive(connection: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
    size = struct.unpack("!I", data[:4])[0]
    data = data[4:]
    while len(data) < size:
        data += connection.recv(size - len(data))
    return json.loads(data), fds


def _fork(connection: socket.socket, close: list[socket.socket]) -> int:
    request, fds = _receive(connection)
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        return pid
    try:
        for other in (*close, connection):
            other.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        code = _run(request)
    except BaseException:  # noqa: BLE001  whatever happens, this fork never returns into the server
        code = 1
    os._exit(code)


def _run(request: dict) -> int:
    """``python -m`` in this fork: streams, directory, environment, path, arguments, exit handlers."""
    import atexit
    import io
    import runpy
    import threading
    import traceback
    import types

    env = request["env"]
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(env)
    sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8",
                                  line_buffering=os.isatty(1))
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    sys.path[0] = request["cwd"]
    sys.argv = ["-m", *request["argv"][1:]]
    sys.modules["__main__"] = types.ModuleType("__main__")
    code = 0
    try:
        runpy._run_module_as_main(request["argv"][0])
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:  # noqa: BLE001  as the interpreter does: the traceback, exit 1
        traceback.print_exc()
        code = 1
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code & 0xFF


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        _serve(sys.argv[2])
    else:
        _launch(sys.argv[1], sys.argv[2:])
