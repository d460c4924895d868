"""The one stage runner: start a stage, limit it, collect what it reports, kill everything it started.

    caller ── keeper ── [init ──] stage      (keeper and init are trusted; the stage may run learner code)

The keeper, a fork of the caller, becomes a child subreaper and, on Linux where the kernel lets it,
enters new PID, mount, IPC and network namespaces (a user namespace first when not root): when the
stage ends, its namespace's init ends and the kernel kills every process left. Elsewhere the keeper
kills every descendant itself. The stage gets CPU-time, file-size, process and memory limits and a
private folder and bytecode cache; once sealed (``seal``, called before learner code runs) every
mount but that folder is read-only, the hidden paths are emptied and no capability is left. The
caller keeps a wall-clock backstop. ``LEVELS`` names what was reached; every result says which.

Results come back on a socket pair (not reopenable through /proc, not readable back from the stage's
end), one event a line, each line numbered per writer and signed (HMAC-SHA256) with a key that exists
only in memory: a forged, dropped or reordered line is detected. Code inside the stage's own Python
process can find the key in memory: documented and flagged (docs/grader.md), not claimed prevented.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import hmac
import json
import linecache
import math
import os
import resource
import secrets
import select
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

NAMESPACES = "namespaces"  # as root: PID/mount/IPC/net namespaces, read-only filesystem, no capabilities
USER_NAMESPACES = "user-namespaces"  # not root: the same inside a user namespace
SUBREAPER = "subreaper"  # no namespaces: every descendant is hunted down and killed, the filesystem is yours
GROUP = "process group"  # no Linux: the stage's process group is killed
_SEALED = ("read-only filesystem but the stage's own folder, hidden tests and the stage's reference emptied, "
           "/tmp, /root, /home and the like empty but for the checkout and Python, "
           "no network, no capabilities, and as root: a user of its own")
LEVELS = {NAMESPACES: f"PID, mount, IPC and network namespaces: {_SEALED}",
          USER_NAMESPACES: f"a user namespace with PID, mount, IPC and network namespaces: {_SEALED}",
          SUBREAPER: "no namespaces (refused by this system): descendants killed through a child subreaper; "
                     "the checkout stays writable by learner code",
          GROUP: "no Linux isolation: only the stage's process group is killed"}
CAP_OUTPUT = 32 * 1024 * 1024  # bytes of channel data kept per stage (a flood is itself a finding)
_NEWNS, _NEWIPC, _NEWUSER, _NEWPID, _NEWNET = 0x20000, 0x8000000, 0x10000000, 0x20000000, 0x40000000
_RDONLY, _BIND, _REMOUNT, _REC, _PRIVATE = 1, 4096, 32, 16384, 1 << 18
_KEPT_FLAGS = {2: 2, 4: 4, 8: 8, 1024: 1024, 2048: 2048, 4096: 1 << 21}  # statvfs ST_* -> MS_* (locked in a userns)
EMPTIED = ("/tmp", "/var/tmp", "/dev/shm", "/root", "/home", "/mnt", "/media", "/srv", "/opt")  # other people's files
SCRATCH = EMPTIED[:3]  # emptied but writable (64 MiB, the stage's alone): libraries write there (torch's caches)
libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None  # mount, unshare, prctl
STAGE_UIDS = 1_000_000  # as root, a stage becomes uid STAGE_UIDS + a random number: a user of its own, owning no file


@dataclass
class Limits:
    cpu: float = 0.0  # CPU seconds of the stage process (RLIMIT_CPU); 0 = none
    wall: float = 0.0  # wall-clock backstop, seconds; 0 = none
    memory_mb: int = 0  # address space the stage may add to what it starts with; 0 = none
    file_mb: int = 256  # the largest file the stage may write (RLIMIT_FSIZE)
    processes: int = max(256, 8 * (os.cpu_count() or 1))  # RLIMIT_NPROC once the stage is a user of its own


@dataclass
class Jail:
    """What an untrusted stage may see once sealed: all read-only but ``home``, ``hidden`` emptied."""

    home: Path  # the private working folder (cwd, TMPDIR, HOME, bytecode cache)
    hidden: tuple[Path, ...] = ()
    keep: tuple[Path, ...] = ()  # what must stay readable in the emptied folders (the checkout, the graded tree)
    seal: bool = True  # False: a trusted stage (the reference, a mutant) keeps its folder, nothing more


@dataclass(eq=False)
class Stage:
    """A started stage, as the caller sees it."""

    pid: int  # the keeper
    sock: socket.socket
    key: bytes
    limits: Limits
    output: Path | None
    started: float = field(default_factory=time.monotonic)
    data: bytearray = field(default_factory=bytearray)
    exitcode: int | None = None  # the keeper's view of the stage: negative = killed by that signal
    cpu: float = 0.0  # CPU seconds the stage and its waited children used
    stopped: str = ""  # '' or why the caller stopped it ("wall", "budget")
    done: bool = False
    _status: int | None = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def pump(self) -> bool:
        """Read what is waiting on the channel; False when nothing is."""
        try:
            chunk = self.sock.recv(1 << 16)
        except OSError:
            return False
        self.data += chunk[: max(0, CAP_OUTPUT - len(self.data))]
        return bool(chunk)

    def _reap(self, block: bool = False) -> int | None:
        if self._status is None:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            self._status = status if pid else None
        return self._status

    def poll(self) -> bool:
        """True once the keeper has exited (and the stage's fate is read)."""
        if self.done:
            return True
        if self._reap() is None:
            if not self.limits.wall or time.monotonic() - self.started <= self.limits.wall:
                return False
            self.stop("wall")
        while self.pump():  # all the stage wrote is waiting: its writers are dead
            pass
        self.sock.close()
        self.done = True
        ends = {by: e for by, e in verified(bytes(self.data), self.key, strict=False)[0] if e.get("event") == "exit"}
        ended = ends.get("init", ends.get("keeper", {"code": decode(self._status), "cpu": 0.0}))
        self.exitcode, self.cpu = int(ended["code"]), float(ended["cpu"])
        return True

    def stop(self, why: str) -> None:
        """Have the keeper kill the stage and all it started; kill the keeper if it does not."""
        self.stopped = self.stopped or why
        if self._reap() is not None:
            return
        os.kill(self.pid, signal.SIGTERM)  # a zombie until reaped: never another process
        deadline = time.monotonic() + 5
        while self._reap() is None and time.monotonic() < deadline:
            self.pump()
            time.sleep(0.01)
        if self._status is None:
            os.killpg(self.pid, signal.SIGKILL)
            self._reap(block=True)

    def wait(self) -> None:
        while not self.poll():
            select.select([self], [], [], 0.05)
            self.pump()

    def unsigned(self) -> bytes:
        """What a (trusted) command printed: the channel without the keeper's signed lines."""
        return b"\n".join(line for line in bytes(self.data).split(b"\n") if not _genuine(self.key, line))

    def tail(self, size: int = 4000) -> str:
        """The last ``size`` bytes of the stage's output, read without reading the rest."""
        try:
            with open(self.output, "rb") as handle:
                handle.seek(max(0, os.fstat(handle.fileno()).st_size - size))
                return handle.read(size).decode("utf-8", errors="replace")
        except (OSError, TypeError):
            return ""


def decode(status: int) -> int:
    """A wait status as an exit code, negative for the signal that killed the process."""
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def run_all(items: list, start: Callable, finish: Callable, jobs: int, *, waiting: Callable = lambda item: False,
            deadline: float = 0.0, expire: Callable = lambda item, why: None) -> None:
    """The one scheduler: ``start(item)``, ``jobs`` at a time, once ``waiting(item)`` is false; ``finish(item, stage)``
    as each ends (None: ``start`` ran nothing). Past ``deadline`` (monotonic) running stages stop ("budget") and
    ``expire(item, why)`` ends the rest ("budget"; "stuck": can never start). Leaving early stops what runs."""
    queue, running = list(items), {}
    try:
        while queue or running:
            if deadline and time.monotonic() > deadline:
                for stage in running:
                    stage.stop("budget")
                for item in queue:
                    expire(item, "budget")
                queue = []
            ready = [item for item in queue if not waiting(item)][: max(1, jobs) - len(running)]
            for item in ready:
                queue.remove(item)
                if (stage := start(item)) is None:
                    finish(item, None)
                else:
                    running[stage] = item
            if queue and not running and not ready:  # cannot happen with a valid plan; never hang on it
                for item in queue:
                    expire(item, "stuck")
                queue = []
            for stage in select.select(list(running), [], [], 0.05)[0] if running else ():
                stage.pump()
            for stage in [s for s in running if s.poll()]:
                finish(running.pop(stage), stage)
    finally:
        for stage in running:
            stage.stop("interrupted")


# ---------------------------------------------------------------- the signed channel


def _sign(key: bytes, by: str, number: int, event: dict) -> bytes:
    body = json.dumps(event | {"by": by, "n": number}, separators=(",", ":")).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest()[:32].encode() + b" " + body + b"\n"


class Writer:
    """The sending end: numbers and signs each event. Lives in the stage's memory only."""

    def __init__(self, fd: int, key: bytes, by: str):
        self._fd, self._key, self._by, self._n = fd, key, by, 0

    def send(self, event: dict) -> None:
        data = _sign(self._key, self._by, self._n, event)
        self._n += 1
        while data:
            data = data[os.write(self._fd, data):]


def _genuine(key: bytes, line: bytes) -> bool:
    mac, _, body = line.partition(b" ")
    return hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).hexdigest()[:32].encode())


def verified(data: bytes, key: bytes, strict: bool = True) -> tuple[list[tuple[str, dict]], str]:
    """(the genuine events in order as (writer, event), '' or why the channel was tampered with).

    ``strict``: a line not signed with ``key`` is tampering; else it is skipped (a command's output)."""
    events: list[tuple[str, dict]] = []
    counts: dict[str, int] = {}
    lines = data.split(b"\n")
    for index, line in enumerate(lines):
        if not line:
            continue
        if not _genuine(key, line):
            if not strict:
                continue  # a command's own output, around the keeper's lines
            if index == len(lines) - 1:
                break  # a last line cut short when the stage was killed mid-write
            return events, "a line on the result channel was not written by the grader (forged?)"
        event = json.loads(line.partition(b" ")[2])
        by, number = event.pop("by"), event.pop("n")
        if number != counts.get(by, 0):
            return events, "the result channel lost or repeated an event (tampered with?)"
        counts[by] = number + 1
        events.append((by, event))
    return events, ""


# ---------------------------------------------------------------- starting a stage


def start(target: Callable[[Writer], int] | list[str], limits: Limits, *, output: Path | None = None,
          jail: Jail | None = None, env: dict | None = None, job: dict | None = None) -> Stage:
    """Start ``target`` (a function run in a fork, or a command) under a keeper; returns at once.

    A function receives the stage's Writer and returns the exit code; its output goes to ``output``
    (None: where the caller's goes). A command's standard output is the channel itself, its standard
    error goes to ``output``, and ``job`` (with the channel's key added) arrives on its standard input.
    """
    key = secrets.token_bytes(32)
    stdin = json.dumps((job or {}) | {"key": key.hex()}).encode() if job is not None else b""
    if not hasattr(os, "fork"):  # Windows: a plain process, no keeper
        return _popen(target, limits, key, output, stdin, env)
    mine, theirs = socket.socketpair()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the keeper: never return into the caller's code
        code = 70
        try:
            mine.close()
            code = _keeper(target, limits, theirs.detach(), key, output, jail, env, stdin)
        finally:
            os._exit(code)
    theirs.close()
    mine.setblocking(False)
    return Stage(pid, mine, key, limits, output)


class _Popen(Stage):
    """Where there is no fork (Windows): a plain process, its output read by a thread."""

    def _reap(self, block: bool = False) -> int | None:
        code = self.process.wait() if block else self.process.poll()
        if code is not None:
            self.reader.join()
        return None if code is None else (code & 0xFF) << 8

    def pump(self) -> bool:
        return False

    def stop(self, why: str) -> None:
        self.stopped = self.stopped or why
        self.process.kill()


def _popen(target, limits: Limits, key: bytes, output: Path | None, stdin: bytes, env: dict | None) -> Stage:
    import subprocess
    import threading

    with open(output or os.devnull, "wb") as err:
        process = subprocess.Popen(target, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                   env=dict(os.environ, **(env or {})))
    process.stdin.write(stdin)
    process.stdin.close()
    stage = _Popen(process.pid, socket.socket(), key, limits, output)
    stage.process, stage.reader = process, threading.Thread(target=lambda: stage.data.extend(process.stdout.read()))
    stage.reader.start()
    return stage


def _keeper(target, limits: Limits, channel: int, key: bytes, output: Path | None, jail: Jail | None,
            env: dict | None, stdin: bytes) -> int:
    os.setpgid(0, 0)
    if output:
        out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
    read, write = os.pipe()
    os.write(write, stdin)  # a job is small: it fits in the pipe
    os.close(write)
    os.dup2(read, 0)
    if isinstance(target, list):
        os.dup2(channel, 1)
    os.closerange(3, channel)
    os.closerange(channel + 1, 65536)
    writer = Writer(channel, key, "keeper")
    level = _enter_namespaces()
    writer.send({"event": "sandbox", "level": level})
    owner = STAGE_UIDS + secrets.randbelow(1 << 30)  # not a pid: those repeat in the nested namespaces of a batch
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            code = _stage(target, limits, channel, key, jail, env, level, owner)
        except BaseException:  # noqa: BLE001 - say why in the stage's output, then exit
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
    _, status, usage = os.wait4(pid, 0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kill_descendants()
    writer.send({"event": "exit", "code": decode(status), "cpu": usage.ru_utime + usage.ru_stime})
    return 0


def _enter_namespaces() -> str:
    if libc is None:
        return GROUP
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come back to the keeper
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.environ.get("KATA_ISOLATION") == SUBREAPER:  # as where namespaces are refused (tests, docs/grader.md)
        return SUBREAPER
    flags = _NEWPID | _NEWNS | _NEWNET | _NEWIPC
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(flags) == 0:
        level = NAMESPACES
    elif libc.unshare(flags | _NEWUSER) == 0:
        try:
            Path("/proc/self/setgroups").write_text("deny")
            Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
            Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
        except OSError:
            return SUBREAPER  # a PID namespace without a usable user: still, all dies with the stage
        level = USER_NAMESPACES
    else:
        return SUBREAPER
    libc.mount(None, b"/", None, _REC | _PRIVATE, None)
    return level


def _stage(target, limits: Limits, channel: int, key: bytes, jail: Jail | None, env: dict | None, level: str,
           owner: int) -> int:
    if libc is not None:
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: the stage dies with its keeper
    if level in (NAMESPACES, USER_NAMESPACES):  # this is process 1 of the namespace: stay a plain init
        libc.mount(b"proc", b"/proc", b"proc", 2 | 4 | 8, None)  # this namespace's processes only
        pid = os.fork()
        if pid:
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)
            while True:  # reap every orphan until the stage itself ends; then the kernel kills the rest
                ended, status, usage = os.wait4(-1, 0)
                if ended == pid:
                    Writer(channel, key, "init").send({"event": "exit", "code": decode(status),
                                                       "cpu": usage.ru_utime + usage.ru_stime})
                    return 0
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    if limits.cpu:  # SIGXCPU, then SIGKILL if ignored
        resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(limits.cpu), math.ceil(limits.cpu) + 5))
    if limits.file_mb:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb << 20, limits.file_mb << 20))
    if limits.memory_mb and not isinstance(target, list):  # a fresh interpreter sets it once torch is in
        limit_memory(limits.memory_mb)
    os.environ.update(env or {})
    if jail is not None:
        if level in (NAMESPACES, USER_NAMESPACES):  # its own mount: stays writable when all else is sealed
            libc.mount(os.fsencode(jail.home), os.fsencode(jail.home), None, _BIND, None)
        os.chdir(jail.home)
        os.environ.update(TMPDIR=str(jail.home), HOME=str(jail.home), PYTHONPYCACHEPREFIX=str(jail.home / "pycache"))
        sys.pycache_prefix = str(jail.home / "pycache")  # never read tests/__pycache__ (nor write there)
        tempfile.tempdir = str(jail.home)
        global _SEAL
        _SEAL = dict(home=str(jail.home), hidden=list(map(str, jail.hidden)), keep=list(map(str, jail.keep)),
                     level=level, processes=limits.processes, owner=owner) if jail.seal else None
    if isinstance(target, list):
        os.environ["KATA_SEAL"] = json.dumps(_SEAL)  # for the seal() of the fresh interpreter
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.execvp(target[0], target)
    return target(Writer(channel, key, "stage"))


_SEAL: dict | None = json.loads(os.environ.pop("KATA_SEAL", "null"))  # set in the stage (a command: by its keeper)


def seal() -> str:
    """Called in the stage once the tests are loaded, before learner code runs: make everything
    read-only but the stage's folder, empty the hidden paths and ``EMPTIED`` (but for what the stage
    needs), give up privileges and, as root, become a user of its own. Returns the level reached."""
    if _SEAL is None:
        return ""
    level, home, note = _SEAL["level"], _SEAL["home"], ""
    linecache.clearcache()  # the tests' source, read while they were collected, is not left in memory
    if level not in (NAMESPACES, USER_NAMESPACES):
        return level
    for path in _SEAL["hidden"]:
        if os.path.isdir(path):
            libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", _RDONLY, b"size=4k")
        elif os.path.exists(path):
            libc.mount(b"/dev/null", os.fsencode(path), None, _BIND, None)
    for name in ("null", "zero", "full", "random", "urandom", "tty", "proc/sys"):  # kept usable / sealed below
        path = f"/{'dev/' * (name != 'proc/sys')}{name}".encode()
        libc.mount(path, path, None, _BIND, None)
    libc.mount(b"/dev/null", b"/proc/sysrq-trigger", None, _BIND, None)
    needed = (home, *_SEAL["keep"], sys.prefix, sys.base_prefix, sys.exec_prefix, *filter(None, sys.path))
    needed = [os.path.realpath(path) for path in needed if os.path.exists(path)]
    scratch = _empty(needed)
    for point in _mount_points():  # read-only; /dev also without devices (but the few above)
        if point in (home, "/proc", "/dev/pts", *scratch) or point.startswith("/dev/") and point != "/dev/shm":
            continue
        try:
            kept = sum(ms for st, ms in _KEPT_FLAGS.items() if os.statvfs(point).f_flag & st)
        except OSError:
            continue
        kept |= 4 | 2 if point == "/dev" else 0  # MS_NODEV | MS_NOSUID: no disk, no memory device
        if libc.mount(None, os.fsencode(point), None, _REMOUNT | _BIND | _RDONLY | kept, None) != 0 and point == "/":
            note = f" (but the filesystem could not be made read-only: errno {ctypes.get_errno()})"
    libc.prctl(28, 0x2F, 0, 0, 0)  # PR_SET_SECUREBITS: root gets no capabilities for being root
    for capability in range(64):
        libc.prctl(24, capability, 0, 0, 0)  # PR_CAPBSET_DROP
    if level == NAMESPACES:
        closed = [p for p in needed if not _open_to_all(p, mine=p == home)]
        try:
            if closed:
                raise PermissionError(0, f"{closed[0]} is not readable by other users")
            owner = _SEAL["owner"]
            for folder, _, files in os.walk(home):
                for name in [folder, *(os.path.join(folder, f) for f in files)]:
                    os.lchown(name, owner, owner)
            os.setgroups([])
            os.setresgid(owner, owner, owner)
            os.setresuid(owner, owner, owner)
        except OSError as error:  # also: root of a user namespace (a batch run by a user), where no uid but 0 maps
            note += f" (but as root without capabilities: {error.strerror})"
        else:
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # a change of user clears PR_SET_PDEATHSIG
            if _SEAL["processes"]:  # counts every process and thread of the user: this stage's only
                resource.setrlimit(resource.RLIMIT_NPROC, (_SEAL["processes"], _SEAL["processes"]))
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: exec cannot give any back
    header, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
    if libc.syscall(126 if os.uname().machine == "x86_64" else 91, header, data) != 0:  # capset: none
        note += " (but its capabilities could not be dropped)"
    return level + note


def _empty(keep: list[str]) -> list[str]:
    """Mount an empty folder over each of ``EMPTIED`` (other students' files, copies of hidden tests),
    each path of ``keep`` inside it mounted back in its place from a handle opened before. Returns
    the folders of ``SCRATCH`` emptied (they stay writable)."""
    keep = [p for p in keep if os.path.isdir(p) and any(p.startswith(top + "/") for top in EMPTIED)]
    keep = [p for p in keep if not any(p.startswith(q + "/") for q in keep)]  # the outermost of nested paths
    emptied = []
    for top in EMPTIED:
        if not os.path.isdir(top) or os.path.islink(top):
            continue
        inside = [(p, os.open(p, os.O_PATH)) for p in keep if p.startswith(top + "/")]
        scratch = top in SCRATCH
        if libc.mount(b"tmpfs", os.fsencode(top), b"tmpfs", 0, b"mode=1777,size=64m" if scratch else b"mode=755") == 0:
            emptied += [top] if scratch else []
        for path, handle in inside:
            os.makedirs(path, exist_ok=True)
            libc.mount(f"/proc/self/fd/{handle}".encode(), os.fsencode(path), None, _BIND | _REC, None)
            os.close(handle)
    return emptied


def _open_to_all(path, mine: bool = False) -> bool:
    """Whether a user with no rights of its own reaches ``path`` (every folder on the way searchable)
    and reads it (``mine``: it will own it)."""
    try:
        return all(os.stat(p).st_mode & 0o001 for p in Path(path).parents) and (
            mine or os.stat(path).st_mode & 0o004)
    except OSError:
        return False


def _mount_points() -> list[str]:
    try:
        lines = Path("/proc/self/mountinfo").read_bytes().splitlines()
    except OSError:
        return []
    return [os.fsdecode(line.split()[4]).replace("\\040", " ") for line in lines]


def limit_memory(megabytes: int) -> None:
    """Cap this process's address space at what it uses now plus ``megabytes`` (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    with open("/proc/self/statm") as handle:
        now = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = now + megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def kill_descendants() -> None:
    """Kill every process this one started until none is left (orphans come back to a subreaper)."""
    children = Path(f"/proc/self/task/{os.getpid()}/children")
    for _ in range(10000):  # bounded: a fork bomb cannot hold the keeper here forever
        found = children.read_text().split() if children.exists() else ()  # no /proc: the caller kills the group
        if not found:
            return
        for pid in map(int, found):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)



def private_home(parent: Path) -> Path:
    """A fresh folder for one stage, with its bytecode cache."""
    home = Path(os.path.realpath(parent)) / secrets.token_hex(8)
    (home / "pycache").mkdir(parents=True, mode=0o700)
    return home
