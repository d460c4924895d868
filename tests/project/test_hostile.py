"""Hostile submissions: each tries to get points it did not earn, read what is hidden, or damage others.

Built from the miniature kata's stubs (tests/project/grader_fixtures/): every attacker submits only an
``s02_scale.py`` that computes the wrong answer (``x + factor``) and attacks while it is graded; two
honest students are graded in the same batch, before and after the attackers. One batch grades them
all; the assertions then check containment: no attacker gets a point for s02_scale, the honest
students keep full marks, the checkout, the other submissions and the gradebook are unchanged, no
process an attacker started is still running, nothing a hidden suite holds reaches a student.

What one Python process cannot prevent (patching the test helpers in memory, reading the channel's
key out of memory) is asserted as flagged for the instructor (the gradebook's ``patching`` column),
not as prevented. The sandbox's own guarantees are asserted for every case.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from grader_kata import build_kata, environment, run_module, submission  # noqa: I001

TOKEN = f"kata-hostile-{secrets.token_hex(4)}"  # in the command line of every process an attacker leaves
PORT_FILE = "listener-port"
HOSTILE_BATCH = pytest.mark.slow  # its tests share one batch: 29 graders, attackers spinning until their 60 s limits
# the wrong answer, unless an attack stole a right one (STOLEN): then a theft that worked earns the points
WRONG = "\n\ndef scale(x, factor):\n    return STOLEN(x, factor) if 'STOLEN' in globals() else x + factor\n"
PRELUDE = f"""import os, sys, time, signal, socket, subprocess
from pathlib import Path
import torch
TOKEN = {TOKEN!r}
HERE = Path(__file__).resolve().parent
ROOTS = [Path(p) for p in sys.path if (Path(p) / 'grader').is_dir()]


def survivor(seconds, then=''):
    # a double-forked, setsid process that outlives its parent (and so, it hopes, the stage)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            code = f'import time, os\\ntime.sleep({{seconds}})\\n{{then}}'
            os.execv(sys.executable, [sys.executable, '-c', code, TOKEN])
        os._exit(0)
    os.wait()


def each_file(pattern):
    for root in ROOTS + [HERE.parent, HERE.parent.parent]:
        yield from root.glob(pattern)


def quietly(action):
    try:
        action()
    except Exception:
        pass
"""

# name -> the attack (module-level code run while s02_scale is imported, before the wrong scale)
ATTACKS = {
    "forge_every_descriptor": """
for fd in range(3, 256):
    for line in (b'{"event": "done", "exitstatus": 0}\\n', b'x {"event": "phase", "outcome": "passed"}\\n'):
        quietly(lambda: os.write(fd, line))
""",
    "forge_through_proc_self_fd": """
for entry in os.listdir('/proc/self/fd'):
    quietly(lambda: Path(f'/proc/self/fd/{entry}').open('ab').write(b'0' * 32 + b' {"event":"done","exitstatus":0,"by":"stage","n":99}\\n'))
""",
    "steal_channel_lines_and_replay": """
import fcntl
for fd in range(3, 64):
    def steal():
        fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)
        data = os.read(fd, 1 << 16)
        os.write(fd, data.replace(b'failed', b'passed') + data)
    quietly(steal)
    quietly(lambda: (lambda h: os.write(fd, os.read(h, 65536)))(os.open(f'/proc/self/fd/{fd}', os.O_RDONLY | os.O_NONBLOCK)))
""",
    "setsid_survivor_rewrites_later_results": """
survivor(4, then='''
import glob
for path in glob.glob('/tmp/**/*.json', recursive=True) + glob.glob('/tmp/**/*.out', recursive=True):
    try:
        open(path, 'w').write('{"score": 999}')
    except OSError:
        pass
''')
""",
    "leftover_setsid_processes": """
for _ in range(3):
    survivor(600)
""",
    "fork_bomb_of_sleepers": """
for _ in range(40):
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(600)', TOKEN])
""",
    "kill_everything_it_can": """
quietly(lambda: os.kill(os.getppid(), signal.SIGKILL))
quietly(lambda: os.kill(-1, signal.SIGKILL))
""",
    "read_and_exec_the_reference_by_path": """
for path in each_file('reference/s02_scale.py'):
    quietly(lambda: exec(path.read_text(), globals()))
if 'scale' in globals():
    STOLEN = scale
""",
    "spec_from_file_location_of_the_reference": """
import importlib.util
for path in each_file('reference/s02_scale.py'):
    def load():
        spec = importlib.util.spec_from_file_location('stolen', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        globals()['STOLEN'] = module.scale
    quietly(load)
""",
    "umount_the_hidden_reference": """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
for path in each_file('reference/s02_scale.py'):
    libc.umount2(str(path).encode(), 2)
    quietly(lambda: exec(path.read_text(), globals()))
if 'scale' in globals():
    STOLEN = scale
""",
    "copy_a_classmates_solution": """
for path in sorted(HERE.parent.glob('*/s02_scale.py')):  # the class, beside this submission
    found = {}
    quietly(lambda: exec(path.read_text(), found))
    if path.parent != HERE and found.get('scale') and found['scale'](torch.ones(1), 3.0).item() == 3.0:
        STOLEN = found['scale']
""",
    "read_a_copy_of_a_hidden_test_left_in_tmp": """
for path in Path('/tmp').glob('*/leaked_copy_of_s02_answer.py'):  # planted by the test, outside the kata
    found = {}
    quietly(lambda: exec(path.read_text(), found))
    if found.get('scale'):
        STOLEN = found['scale']
""",
    "forged_bytecode_in_tests_pycache": """
import importlib.metadata, importlib.util, marshal
for suite in each_file('tests/test_s02_scale.py'):
    code = compile('def test_scale_matches_torch():\\n    pass\\n', str(suite), 'exec')
    for name in (f'test_s02_scale.{sys.implementation.cache_tag}.pyc',
                 f"test_s02_scale.{sys.implementation.cache_tag}-pytest-{importlib.metadata.version('pytest')}.pyc"):
        target = suite.parent / '__pycache__' / name
        quietly(lambda: target.parent.mkdir(exist_ok=True))
        quietly(lambda: target.write_bytes(importlib.util.MAGIC_NUMBER + b'\\0' * 12 + marshal.dumps(code)))
""",
    "rewrite_a_suite_mid_run": """
for suite in each_file('tests/test_s0*.py'):
    quietly(lambda: suite.write_text('def test_nothing():\\n    pass\\n'))
""",
    "edit_the_grader": """
for path in each_file('grader/*.py'):
    quietly(lambda: path.open('a').write('\\nraise SystemExit(0)\\n'))
""",
    "edit_the_reference": """
for path in each_file('reference/s0*.py'):
    quietly(lambda: path.write_text('def add(a, b):\\n    return a - b\\n'))
""",
    "overwrite_another_students_folder": """
for path in HERE.parent.glob('*/s0*.py'):
    if path.parent != HERE:
        quietly(lambda: path.write_text(Path(__file__).read_text()))
""",
    "overwrite_the_gradebook": """
for path in list(HERE.parent.parent.glob('gradebook*/*')) + [HERE.parent.parent / 'gradebook' / 'gradebook.csv']:
    quietly(lambda: path.write_text('student,score\\nyou,999\\n'))
survivor(3, then=f'''
from pathlib import Path
for path in Path({str(HERE.parent.parent)!r}).glob('gradebook*/*'):
    try:
        path.write_text('student,score\\\\nyou,999\\\\n')
    except OSError:
        pass
''')
""",
    "a_one_gibibyte_file": """
for where in (Path('.'), HERE, Path('/tmp'), Path(os.environ.get('TMPDIR', '/tmp'))):
    def fill():
        with open(where / f'{TOKEN}.big', 'wb') as handle:
            for _ in range(1024):
                handle.write(b'\\0' * (1 << 20))
    quietly(fill)
""",
    "print_300_megabytes": """
chunk = 'x' * (1 << 20) + '\\n'
def flood():
    for _ in range(300):
        sys.stdout.write(chunk)
quietly(flood)
""",
    "network_from_the_sandbox": f"""
for root in ROOTS:
    def call():
        port = int((root.parent / {PORT_FILE!r}).read_text())
        socket.create_connection(('127.0.0.1', port), timeout=2).sendall(b'hello from a stage')
    quietly(call)
""",
    "forged_score_files_and_cmdline_scraping": "FORGE",  # course_fixtures/forge_score.py, as it is
    "a_symlinked_stage_file_to_the_reference": "SYMLINK",
    "patch_the_test_helpers_in_memory": """
def _pass(*args, **kwargs):
    return None
for module in list(sys.modules.values()):
    if getattr(module, '__name__', '').startswith('test_s02') and hasattr(module, 'assert_close'):
        module.assert_close = _pass
""",
    "patch_the_tests_found_through_the_garbage_collector": """
import gc
for thing in gc.get_objects():
    if isinstance(thing, dict) and 'test_scale_matches_torch' in thing and 'assert_close' in thing:
        thing['assert_close'] = lambda *args, **kwargs: None
""",
    "lying_tensor_subclass": "LIAR",
}
LIAR = """import torch


class Liar(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        return False if getattr(func, "__name__", "") == "any" else out


def scale(x, factor):
    return (x + factor).as_subclass(Liar)
"""
# What one Python process cannot prevent: asserted as flagged for the instructor, not as prevented.
IN_MEMORY = ("patch_the_test_helpers_in_memory", "patch_the_tests_found_through_the_garbage_collector")
# Cases whose defence is another part of issue 10, not merged on this branch.
PENDING: dict[str, str] = {}  # attack -> the defence it waits for (none now)
HONEST = ("aaron_honest", "zoe_honest")  # sorted around the attackers: graded before and after them
FROM_STUBS = "zz_untouched_stub"  # an honest student who has not started s02: must not gain from a forged pyc


def tree_digest(folder: Path, skip: tuple[str, ...] = ("__pycache__",)) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink() and not set(skip) & set(p.parts)}


def survivors() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and TOKEN.encode() in (entry / "cmdline").read_bytes():
                found.append(entry.name)
        except OSError:
            pass
    return found


class Listener:
    """A TCP server on 127.0.0.1 that records every connection (none may come from a stage)."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                self.server.accept()[0].close()
                self.connections += 1
            except OSError:
                return


@pytest.fixture(scope="module")
def kata(tmp_path_factory) -> Path:
    from test_courses import run_grader

    kata = build_kata(tmp_path_factory.mktemp("hostile") / "kata")
    shutil.copytree(Path(__file__).resolve().parents[2] / "courses", kata / "courses")
    assert run_grader(kata, "--refresh-hashes").returncode == 0
    return kata


@pytest.fixture(scope="module")
def hostile_batch(kata):
    """Every attacker and the honest students, in one batch; what was there before and after."""
    here = Path(__file__).resolve().parent
    listener = Listener()
    (kata.parent / PORT_FILE).write_text(str(listener.port), encoding="utf-8")
    klass = kata.parent / "class"
    klass.mkdir()
    for name in HONEST:
        submission(kata, klass / name)
    stubbed = submission(kata, klass / FROM_STUBS)
    shutil.copy(kata / "exercises" / "s02_scale.py", stubbed / "s02_scale.py")
    for name, attack in ATTACKS.items():
        folder = klass / name
        folder.mkdir()
        target = folder / "s02_scale.py"
        if attack == "FORGE":
            shutil.copy(here / "course_fixtures" / "forge_score.py", target)
        elif attack == "SYMLINK":
            target.symlink_to(os.path.relpath(kata / "reference" / "s02_scale.py", folder))
        elif attack == "LIAR":
            target.write_text(LIAR, encoding="utf-8")
        else:
            target.write_text(PRELUDE + attack + WRONG, encoding="utf-8")
    out = kata.parent / "gradebook"
    before = {"kata": tree_digest(kata), "class": tree_digest(klass)}
    from test_courses import run_grader

    leak = Path(tempfile.mkdtemp(dir="/tmp")) / "leaked_copy_of_s02_answer.py"  # a stray copy, outside the kata
    leak.write_text((kata / "reference" / "s02_scale.py").read_text(encoding="utf-8"), encoding="utf-8")
    try:
        done = run_grader(kata, "batch", str(klass), "--jobs", "2", "--out", str(out), "--timeout", "60",
                          "--stage-timeout", "60", "--memory-limit", "512", timeout=3600)
    finally:
        shutil.rmtree(leak.parent)
    written = tree_digest(out)
    time.sleep(5)  # any survivor had its chance to strike
    after = {"kata": tree_digest(kata), "class": tree_digest(klass), "gradebook": tree_digest(out)}
    book = json.loads((out / "gradebook.json").read_text(encoding="utf-8"))
    rows = {row["student"]: row for row in book["students"]}
    return done, rows, before, after, written, listener, survivors()


def stage_score(row: dict, stage: str) -> float:
    return (row["stages"].get(stage) or {}).get("score") or 0.0


@HOSTILE_BATCH
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=PENDING[n], strict=False))
                                  if n in PENDING else n for n in ATTACKS if n not in IN_MEMORY])
def test_an_attacker_gets_no_point_it_did_not_earn(name, hostile_batch):
    done, rows, *_ = hostile_batch
    row = rows[name]
    assert row["status"] in ("graded", "grader failed"), row
    assert stage_score(row, "s02_scale") == 0, f"{name} got points for s02_scale: {row['stages']}"
    assert row["score"] == 0, f"{name} submitted only s02_scale, which is wrong: {row}"


@HOSTILE_BATCH
@pytest.mark.parametrize("name", IN_MEMORY)
def test_an_attack_in_memory_is_flagged_for_the_instructor_when_it_scores(name, hostile_batch):
    _, rows, *_ = hostile_batch
    row = rows[name]
    flagged = [flag for flag, columns in row["flags"].items() if any("s02_scale" in c for c in columns)]
    assert stage_score(row, "s02_scale") == 0 or flagged, f"{name} scored unflagged: {row}"


@HOSTILE_BATCH
def test_honest_students_keep_full_marks_whoever_was_graded_beside_them(hostile_batch):
    done, rows, *_ = hostile_batch
    assert done.returncode == 0, done.stdout + done.stderr
    for name in HONEST:
        assert rows[name]["score"] == 20, rows[name]
    stub = rows[FROM_STUBS]
    assert stub["score"] == 15 and stub["stages"]["s02_scale"]["status"] == "not started", stub


@HOSTILE_BATCH
def test_the_checkout_and_every_submission_are_unchanged(hostile_batch):
    _, _, before, after, *_ = hostile_batch
    changed = sorted(k for k in set(before["kata"]) | set(after["kata"]) if before["kata"].get(k) != after["kata"].get(k))
    assert not changed, f"the batch changed the checkout: {changed[:10]}"
    changed = sorted(k for k in set(before["class"]) | set(after["class"]) if before["class"].get(k) != after["class"].get(k))
    assert not changed, f"the batch changed submissions: {changed[:10]}"


@HOSTILE_BATCH
def test_the_gradebook_is_written_once_and_nobody_rewrites_it(hostile_batch):
    _, rows, _, after, written, *_ = hostile_batch
    assert after["gradebook"] == written, "the gradebook changed after the batch returned"
    assert set(rows) == {*ATTACKS, *HONEST, FROM_STUBS}


@HOSTILE_BATCH
def test_nothing_an_attacker_started_is_still_running(hostile_batch):
    *_, alive = hostile_batch
    assert not alive, f"processes left by attackers are still running: {alive}"


@HOSTILE_BATCH
def test_no_stage_reached_the_network(hostile_batch):
    *_, listener, _ = hostile_batch
    assert listener.connections == 0, "a stage connected to a server on this machine"


def test_every_row_reports_the_isolation_it_was_graded_with(kata, tmp_path):
    from test_courses import run_grader

    done = run_grader(kata, "--impl", str(submission(kata, tmp_path / "sub")), "--format", "json")
    doc = json.loads(done.stdout)
    assert any(note.startswith("isolation: ") for note in doc["notes"]), doc["notes"]
    assert all(stage["isolation"] for stage in doc["stages"]), [s["isolation"] for s in doc["stages"]]


@pytest.mark.slow  # a fresh grader (its memory is counted) reads 300 MB of output
def test_printing_hundreds_of_megabytes_does_not_swell_the_grader(kata, tmp_path):
    tree = submission(kata, tmp_path / "flood")
    (tree / "s02_scale.py").write_text(PRELUDE + ATTACKS["print_300_megabytes"] + WRONG, encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run([sys.executable, "-m", "grader", "--impl", str(tree), "--format", "json", "--jobs", "1"],
                          cwd=kata, env=environment(), capture_output=True, timeout=1800)  # a child of this process: its rusage counts
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["stages"][1]["score"] == 0
    assert peak_mib < 900 or before / 1024 >= 900, f"a process of the grader grew to {peak_mib:.0f} MiB"


HIDDEN_MARKER = "SECRET_HIDDEN_ASSERTION_4242"
PEEK = """
import inspect
found = []
for path in list(each_file('hidden/*.py')) + list(each_file('**/test_s02_scale*hidden*.py')):
    quietly(lambda: found.append(path.read_text()))
def scale(x, factor):
    text = ''.join(found)
    for frame in inspect.stack():
        quietly(lambda: found.append(inspect.getsource(frame.frame)))
    raise AssertionError('what I found: ' + ''.join(found))
"""


def test_gradescope_shows_a_hidden_suite_as_its_name_and_outcome_only(kata, tmp_path):
    from test_courses import gradescope_layout, run_grader

    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "test_s02_scale_hidden.py").write_text(
        f"import torch\n\n\ndef test_scale_secretly(stage):\n    # {HIDDEN_MARKER}\n"
        f"    assert stage.scale(torch.ones(1), 2.0).item() == 2.0, '{HIDDEN_MARKER}'\n", encoding="utf-8")
    bundle = tmp_path / "autograder.zip"
    assert run_grader(kata, "gradescope-bundle", "--hidden-tests", str(hidden), "--out", str(bundle)).returncode == 0
    attacker = tmp_path / "s02_scale.py"
    attacker.write_text(PRELUDE + PEEK, encoding="utf-8")
    autograder = gradescope_layout(tmp_path / "gs", bundle, {"s02_scale.py": attacker})
    shutil.rmtree(hidden)  # as on Gradescope: the bundle's kata/hidden is the only copy on the machine
    bundle.unlink()
    # the copies of the hidden suite that earlier test runs left under /tmp stay out of reach: /tmp is emptied
    env = environment(KATA_AUTOGRADER_ROOT=str(autograder), KATA_PYTHON=sys.executable)
    done = subprocess.run(["bash", str(autograder / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stderr
    doc = json.loads((autograder / "results" / "results.json").read_text(encoding="utf-8"))
    visible = json.dumps([{k: v for k, v in t.items() if k != "extra_data"} for t in doc["tests"]]) + doc["output"]
    assert HIDDEN_MARKER not in visible, "a hidden suite's source or message reached the student"
    secret = next(t for t in doc["tests"] if "hidden" in t["name"])
    assert secret["output"] in ("failed", "passed") and secret["score"] == 0


def test_a_stage_file_symlinked_out_of_the_submission_is_not_collected_on_gradescope(kata, tmp_path):
    from grader import gradescope

    upload = tmp_path / "upload"
    (upload / "exercises").mkdir(parents=True)
    (upload / "exercises" / "s02_scale.py").symlink_to(kata / "reference" / "s02_scale.py")
    (upload / "deep").symlink_to(kata / "reference", target_is_directory=True)
    assert gradescope.find_stage_file(upload, "s02_scale") is None


@pytest.mark.slow
def test_the_forbidden_attention_taken_at_import_time_earns_nothing(tmp_path):
    """The real kata's stage 3, written with F.scaled_dot_product_attention kept from import time."""
    from grader import curriculum

    tree = tmp_path / "tree"
    shutil.copytree(curriculum.REFERENCE, tree, ignore=shutil.ignore_patterns("__pycache__"))
    source = (tree / "s03_attention.py").read_text(encoding="utf-8")
    line = "    output = F.dropout(weights, p=dropout) @ value if dropout > 0 else weights @ value\n"
    assert line in source, "the reference changed: update this test's edit"
    source = source.replace(line, "    output = torch.nan_to_num(_SDPA(query, key, value, attn_mask=mask, dropout_p=dropout))\n")
    source = source.replace("import torch.nn.functional as F\n", "import torch.nn.functional as F\n\n_SDPA = F.scaled_dot_product_attention\n")
    (tree / "s03_attention.py").write_text(source, encoding="utf-8")
    done = run_module(curriculum.ROOT, "grader", "3", "--impl", str(tree), "--format", "json", timeout=1800)
    attention = next(s for s in json.loads(done.stdout)["stages"] if s["id"] == "s03_attention")
    assert attention["score"] == 0, f"the forbidden call earned the stage's points: {attention['status']}"


THEFTS = ("read_and_exec_the_reference_by_path", "copy_a_classmates_solution", "read_a_copy_of_a_hidden_test_left_in_tmp")


@pytest.mark.slow  # graders over every theft, with the filesystem unsealed
def test_the_thefts_are_real_they_score_where_the_filesystem_is_not_sealed(kata, tmp_path):
    """The control for the batch above: at the `subreaper` level (forced) nothing is sealed, and each
    theft earns the stage's points, so a theft that scores nothing in the batch was stopped by the seal."""
    from test_courses import run_grader

    klass = tmp_path / "class"
    submission(kata, klass / "aaron_honest")
    for name in THEFTS:
        (klass / name).mkdir()
        (klass / name / "s02_scale.py").write_text(PRELUDE + ATTACKS[name] + WRONG, encoding="utf-8")
    leak = Path(tempfile.mkdtemp(dir="/tmp")) / "leaked_copy_of_s02_answer.py"
    leak.write_text((kata / "reference" / "s02_scale.py").read_text(encoding="utf-8"), encoding="utf-8")
    try:
        done = run_grader(kata, "batch", str(klass), "--out", str(tmp_path / "book"), timeout=3600,
                          KATA_ISOLATION="subreaper")
    finally:
        shutil.rmtree(leak.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["student"]: row for row in json.loads((tmp_path / "book" / "gradebook.json").read_text())["students"]}
    assert {name: stage_score(rows[name], "s02_scale") for name in THEFTS} == {name: 5.0 for name in THEFTS}
