"""The one stage runner (grader/sandbox.py), driven directly: limits, the channel, nothing left behind.

Each test starts a small function as a stage, the way the grader starts a suite, and checks what the
caller sees. Where this system refuses namespaces the isolation checks are skipped and say so; the
level reached is what every grader result reports.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import pytest

from grader import sandbox

TOKEN = f"kata-sandbox-test-{secrets.token_hex(4)}"


def alive() -> list[str]:
    return [p.name for p in Path("/proc").iterdir()
            if p.name.isdigit() and TOKEN.encode() in _cmdline(p)]


def _cmdline(process: Path) -> bytes:
    try:
        return (process / "cmdline").read_bytes()
    except OSError:
        return b""


def run(target, tmp_path: Path, limits: sandbox.Limits | None = None, **kw) -> sandbox.Stage:
    stage = sandbox.start(target, limits or sandbox.Limits(wall=600), output=tmp_path / "out", **kw)
    stage.wait()
    return stage


def events(stage: sandbox.Stage) -> list[dict]:
    signed, problem = sandbox.verified(bytes(stage.data), stage.key)
    assert not problem, problem
    return [event for by, event in signed if by == "stage"]


def level_of(stage: sandbox.Stage) -> str:
    return next(e["level"] for by, e in sandbox.verified(bytes(stage.data), stage.key)[0] if e["event"] == "sandbox")


def test_a_stage_reports_signed_events_and_its_exit_code(tmp_path):
    def target(writer):
        writer.send({"event": "hello", "pid": os.getpid()})
        print("printed, never read as a result")
        return 3

    stage = run(target, tmp_path)
    assert stage.exitcode == 3 and events(stage)[0]["event"] == "hello"
    assert "never read as a result" in stage.tail()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process handling beyond a process group is Linux's")
@pytest.mark.parametrize("forced", ["", sandbox.SUBREAPER], ids=["strongest", "subreaper-fallback"])
def test_a_double_forked_setsid_process_does_not_outlive_its_stage(tmp_path, monkeypatch, forced):
    monkeypatch.setenv("KATA_ISOLATION", forced)  # subreaper: as on a system that refuses namespaces
    def target(writer):
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", TOKEN])
            os._exit(0)
        os.wait()
        time.sleep(0.5)  # the survivor is running now
        writer.send({"event": "alive", "count": len(alive())})
        return 0

    stage = run(target, tmp_path)
    assert events(stage)[0]["count"] >= 1 or level_of(stage) in (sandbox.NAMESPACES, sandbox.USER_NAMESPACES)
    assert level_of(stage) == sandbox.SUBREAPER or not forced
    assert not alive(), f"left running after the stage ({level_of(stage)}): {alive()}"


def test_the_cpu_limit_stops_an_endless_loop_and_says_it_was_cpu(tmp_path):
    def target(writer):
        while True:
            pass

    stage = run(target, tmp_path, sandbox.Limits(cpu=1, wall=600))
    assert stage.exitcode == -signal.SIGXCPU and stage.cpu >= 0.5, (stage.exitcode, stage.cpu)
    assert not stage.stopped, "CPU time, not the wall clock, stopped it"


def test_the_wall_clock_backstop_stops_a_stage_that_only_waits(tmp_path):
    def target(writer):
        time.sleep(600)

    stage = run(target, tmp_path, sandbox.Limits(cpu=60, wall=1))
    assert stage.stopped == "wall" and stage.exitcode == -9


def test_a_stage_cannot_write_a_file_larger_than_its_limit(tmp_path):
    def target(writer):
        try:
            with open("big", "wb") as handle:
                handle.write(b"\0" * (3 << 20))
        except OSError as error:
            writer.send({"event": "refused", "errno": error.errno})
        return 0

    home = sandbox.private_home(tmp_path)
    stage = run(target, tmp_path, sandbox.Limits(wall=600, file_mb=1), jail=sandbox.Jail(home, seal=False))
    assert events(stage) == [{"event": "refused", "errno": errno.EFBIG}]


def test_the_output_tail_is_read_from_the_end(tmp_path):
    def target(writer):
        sys.stdout.write("x" * 1_000_000 + "THE END")
        return 0

    stage = run(target, tmp_path)
    assert stage.tail(100).endswith("THE END") and len(stage.tail(100)) == 100


def test_a_sealed_stage_cannot_write_the_checkout_nor_read_what_is_hidden(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "answer.py").write_text("ANSWER = 42\n", encoding="utf-8")
    (checkout / "hidden").mkdir()
    (checkout / "hidden" / "test_secret.py").write_text("SECRET\n", encoding="utf-8")
    (tmp_path / "left_in_tmp.py").write_text("a copy of a hidden test\n", encoding="utf-8")  # not the checkout

    def target(writer):
        writer.send({"event": "sealed", "level": sandbox.seal()})
        seen = {"answer": (checkout / "answer.py").read_text(), "hidden": os.listdir(checkout / "hidden")}
        try:
            (checkout / "planted.py").write_text("x")
            seen["wrote"] = True
        except OSError:
            seen["wrote"] = False
        seen["home"] = Path("mine.txt").write_text("ok") == 2
        disks = [f"/dev/{d}" for d in os.listdir("/sys/block") if os.path.exists(f"/dev/{d}")]
        for path, flags in [("/proc/sys/kernel/core_pattern", os.O_WRONLY), ("/sys/kernel/uevent_helper", os.O_WRONLY),
                            *[(disk, os.O_RDONLY) for disk in disks[:1]]]:
            try:
                os.close(os.open(path, flags))  # opened, never written
                seen["opened"] = seen.get("opened", []) + [path]
            except OSError:
                pass
        seen["null"] = Path("/dev/null").write_text("fine") == 4
        seen["elsewhere"] = [p for p in (tmp_path / "left_in_tmp.py", Path.home() / ".bash_history") if p.exists()]
        seen["uid"] = os.getuid()
        seen["scratch"] = Path(f"/tmp/{TOKEN}").write_text("private") == 7  # torch writes its caches there
        writer.send({"event": "seen", **seen})
        return 0

    jail = sandbox.Jail(sandbox.private_home(tmp_path / "homes"), (checkout / "answer.py", checkout / "hidden"),
                        keep=(checkout,))
    stage = run(target, tmp_path, jail=jail)
    sealed, seen = events(stage)
    if not sealed["level"].startswith(("namespaces", "user-namespaces")):
        pytest.skip(f"this system refuses namespaces: {sealed['level']}")
    uid = seen.pop("uid")
    assert seen == {"event": "seen", "answer": "", "hidden": [], "wrote": False, "home": True, "null": True,
                    "elsewhere": [], "scratch": True}, seen
    assert not Path(f"/tmp/{TOKEN}").exists(), "the stage's /tmp is its own: nothing it writes there is left behind"
    assert sealed["level"] == sandbox.NAMESPACES and uid >= sandbox.STAGE_UIDS or os.getuid() != 0, (sealed, uid)
    assert not (checkout / "planted.py").exists()


def test_a_command_prints_its_result_on_the_channel(tmp_path):
    stage = run([sys.executable, "-c", "import sys; print('{\"ok\": 1}'); print('to the log', file=sys.stderr)"],
                tmp_path)
    assert stage.exitcode == 0 and stage.unsigned().strip() == b'{"ok": 1}'
    assert "to the log" in stage.tail()


def test_a_stage_graded_as_root_cannot_start_more_processes_than_its_limit(tmp_path):
    def target(writer):
        level, started = sandbox.seal(), 0
        try:
            for started in range(1, 200):
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
        except OSError as error:
            writer.send({"event": "refused", "level": level, "after": started, "errno": error.errno})
        return 0

    jail = sandbox.Jail(sandbox.private_home(tmp_path / "homes"))
    stage = run(target, tmp_path, sandbox.Limits(wall=600, processes=32), jail=jail)
    if os.getuid() != 0:
        pytest.skip("RLIMIT_NPROC is set where the grader runs as root and a stage becomes a user of its own")
    assert events(stage)[:1] and events(stage)[0]["errno"] == errno.EAGAIN and events(stage)[0]["after"] <= 32, \
        events(stage)


SEALED_PROBE = """
import json, os, sys
from pathlib import Path
from grader import sandbox
home = sandbox.private_home(Path(sys.argv[1]))
def target(writer):
    writer.send({"event": "sealed", "level": sandbox.seal(), "uid": os.getuid(), "passed": 1 + 1 == 2})
    return 0
stage = sandbox.start(target, sandbox.Limits(wall=600), output=Path(sys.argv[1]) / "out", jail=sandbox.Jail(home))
stage.wait()
print(json.dumps([event for by, event in sandbox.verified(bytes(stage.data), stage.key)[0] if by == "stage"]))
"""


def test_in_a_user_namespace_a_stage_stays_root_without_capabilities_and_says_why(tmp_path):
    # a batch run by a user: the grader is root of a user namespace, where no uid of a stage's own maps
    import shutil
    import subprocess

    if not shutil.which("unshare"):
        pytest.skip("no unshare command on this system")
    done = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c", SEALED_PROBE, str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=Path(sandbox.__file__).parent.parent)
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"this system refuses user namespaces: {done.stderr.strip()}")
    (sealed,) = json.loads(done.stdout.splitlines()[-1])
    assert sealed["passed"] and sealed["uid"] == 0, (sealed, done.stderr)
    assert sealed["level"].startswith(sandbox.NAMESPACES) and "as root without capabilities" in sealed["level"], sealed
