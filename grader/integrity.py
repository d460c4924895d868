"""Integrity checks for courses (docs/instructors.md has the threat model): the hash manifest
grader/test_hashes.json over the files that decide a grade (``check_hashes``; a batch's ``snapshot``
and ``changed_since``), no credit for a stage file that imports the answer key or the test machinery
(``scan_stage``), and ``flags`` for the tools that can patch the tests in memory, for a reviewer.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path

from . import curriculum, loader

MANIFEST = Path("grader", "test_hashes.json")  # the hash manifest, in any copy of the kata
HASHES = curriculum.ROOT / MANIFEST
FORBIDDEN_TOPS = {  # a stage file that imports one of these gets no credit
    "reference": "imports the answer key (reference/)", "grader": "imports the grader",
    "tests": "imports the test suites", "checks": "imports the test helpers",
    "conftest": "imports the test configuration", "pytest": "imports pytest (stage code never needs it)",
    "_pytest": "imports pytest's internals", "pluggy": "imports pytest's plugin machinery",
}

# What a stage uses that can patch the tests, the grader or torch in memory, or run code where the
# grader's guards do not reach: a dotted name (import aliases resolved) or a prefix of one -> why.
FLAGGED_NAMES = {name: why for why, names in {
    "can patch the tests or the grader in memory": "sys vars globals",
    "reaches any object in memory": "gc ctypes cffi",
    "loads modules by path or by a computed name": "importlib runpy __import__",
    "runs code built at run time": "exec eval compile marshal types.CodeType types.FunctionType",
    "inspects frames and the tests' code": "inspect sys._getframe",
    "patches Python's builtins": "builtins __builtins__",
    "starts or signals processes that can outlive the stage": "os.fork os.forkpty os.setsid os.setpgid os.kill "
        "os.killpg os.system os.popen os.posix_spawn os.posix_spawnp os.spawnv os.spawnl os.execv os.execl os.execve "
        "os.execvp subprocess multiprocessing pty signal",
    "can run torch outside the forbidden-call guard": "threading _thread concurrent torch.overrides torch._C "
        "torch.utils._python_dispatch torch.jit torch.compile torch._dynamo torch.library torch.ops",
}.items() for name in names.split()}
FLAGGED_ATTRIBUTES = {name: why for why, names in {  # attributes that reach frames, code or dispatch, on any object
    "inspects frames": "f_back f_globals f_locals f_builtins tb_frame gi_frame cr_frame ag_frame",
    "rewrites, disguises or inspects functions": "__globals__ __code__ __closure__ co_filename __wrapped__",
    "searches objects in memory": "__subclasses__ __dict__",
    "overrides torch's dispatch, which can lie to the checks": "__torch_function__ __torch_dispatch__",
}.items() for name in names.split()}
BUILTINS = ("exec", "eval", "compile", "__import__", "__builtins__", "vars", "globals")
FLAG_NOTE = "flagged for review:"  # the report note for a flag; the gradebook's patching column reads it
SAFE_SYS = {"sys.stdout", "sys.stderr", "sys.maxsize", "sys.float_info", "sys.version_info", "sys.platform"}
FLAGGED_TEXT = re.compile(r"/proc\b|/dev/fd|pytest|conftest|\bchecks\b|\btest_\w+|\btests?[/.]|\breference\b"
                          r"|_kata_plan")


def hashed_files(root: Path = curriculum.ROOT) -> list[Path]:
    """The files whose content decides a grade, in a stable order (the manifest itself excluded)."""
    named = [root / name for name in ("tests/checks.py", "tests/conftest.py", "curriculum.toml")]
    globbed = [p for pattern in ("grader/*.py", "reference/*.py", "data/*.txt") for p in sorted(root.glob(pattern))]
    return [f for f in sorted(root.glob("tests/test_*.py")) + named + globbed if f.is_file()]  # data: the corpus


def current_hashes(root: Path = curriculum.ROOT, manifest: bool = False) -> dict[str, str]:
    files = hashed_files(root) + ([root / MANIFEST] if manifest else [])
    return {f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes().replace(b"\r\n", b"\n")).hexdigest()
            for f in files if f.is_file()}


def refresh(root: Path = curriculum.ROOT, manifest: Path = HASHES) -> dict[str, str]:
    hashes = current_hashes(root)
    manifest.write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return hashes


def differences(expected: dict[str, str], actual: dict[str, str], version: str, listing: str) -> list[str]:
    """One line per file changed, removed, or added since ``version``, whose hashes ``listing`` holds."""
    problems = [f"{n} differs from {version} (edited?)" if n in actual else f"{n} is missing (it is in {listing})"
                for n in sorted(expected) if actual.get(n) != expected[n]]
    return problems + [f"{name} is not in {listing} (added?)" for name in sorted(set(actual) - set(expected))]


def check_hashes(root: Path = curriculum.ROOT, manifest: Path = HASHES) -> list[str]:
    """One line per problem: a file changed, removed, or added since the manifest was written."""
    try:
        expected = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"no hash manifest ({manifest.name}): run python -m grader --refresh-hashes"]
    except (OSError, ValueError) as error:
        return [f"the hash manifest {manifest.name} cannot be read ({error})"]
    return differences(expected, current_hashes(root), "the shipped version", manifest.name)


def snapshot(root: Path = curriculum.ROOT) -> dict[str, str]:
    """Every graded file's hash, the manifest's included: take it before a batch grades anyone."""
    return current_hashes(root, manifest=True)


def changed_since(before: dict[str, str], root: Path = curriculum.ROOT) -> list[str]:
    """What a submission changed in the tree that grades everyone (empty: grade the next one)."""
    return differences(before, snapshot(root), "the start of the batch", "the batch's snapshot")


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str:
    """``F.softmax`` -> torch.nn.functional.softmax: a name rooted in an import or a builtin, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    known = isinstance(node, ast.Name) and (node.id in aliases or node.id in BUILTINS)
    return ".".join([aliases.get(node.id, node.id), *reversed(parts)]) if known else ""


def _imports(tree: ast.AST):
    """(node, module name, (local name, what it names) or None) a name imported, import_module("...") too."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:  # import a.b binds a; import a.b as c binds c to a.b
                yield node, alias.name, (alias.asname, alias.name) if alias.asname else (alias.name.split(".")[0],) * 2
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node, node.module, None
            for alias in node.names:
                yield node, f"{node.module}.{alias.name}", (alias.asname or alias.name, f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            yield node, node.args[0].value, None


def _parse(source: str) -> ast.AST:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return ast.Module(body=[], type_ignores=[])  # nothing to scan: the run itself reports the syntax error


def _flag_of(name: str) -> tuple[str, str] | None:
    """(what to show, why) when this dotted name is flagged: itself or a prefix is in FLAGGED_NAMES."""
    if name == "sys" or name.startswith(tuple(SAFE_SYS)):
        return None  # import sys, sys.stderr: harmless; what is done with it is flagged
    keys = [key for n in range(name.count(".") + 1) if (key := name.rsplit(".", n)[0]) in FLAGGED_NAMES]
    return ((".".join(name.split(".")[:2]) if keys[0] == "sys" else keys[0]), FLAGGED_NAMES[keys[0]]) if keys else None


def flags(source: str) -> list[str]:
    """What in this stage file can tamper with grading from inside the process, one line each:
    ``line 4: sys.modules (can patch the tests or the grader in memory)``. Empty when clean."""
    tree = _parse(source)
    aliases = dict(bound for _, _, bound in _imports(tree) if bound)
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    found: dict[str, tuple[int, str]] = {}

    def note(node: ast.AST, what: str, why: str) -> None:
        if what not in found or node.lineno < found[what][0]:
            found[what] = (node.lineno, f"line {node.lineno}: {what} ({why})")

    for node, name, _ in _imports(tree):
        if flagged := _flag_of(name):
            note(node, *flagged)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Name, ast.Attribute)) and (flagged := _flag_of(_dotted(node, aliases))):
            note(node, *flagged)
        named = getattr(node, "attr", None) or getattr(node, "name", None)  # x.f_back, def __torch_function__
        if isinstance(node, (ast.Attribute, ast.FunctionDef)) and named in FLAGGED_ATTRIBUTES:
            note(node, named, FLAGGED_ATTRIBUTES[named])
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if (match := FLAGGED_TEXT.search(node.value)) is not None:
                note(node, repr(match.group()), "names the tests, the answer key or /proc")
            if node.value in FLAGGED_ATTRIBUTES:  # getattr(x, "f_back")
                note(node, node.value, FLAGGED_ATTRIBUTES[node.value])
        assigned = getattr(node, "targets", [getattr(node, "target", None)])  # a.b = ..., del a.b, a.b += ...
        targets = [target.value for target in assigned if isinstance(target, ast.Attribute)]
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("getattr", "setattr", "delattr", "hasattr") \
                and len(node.args) >= 2 and (base := _dotted(node.args[0], aliases)):
            field = node.args[1].value if isinstance(node.args[1], ast.Constant) else "?"
            if flagged := _flag_of(f"{base}.{field}"):
                note(node, *flagged)
            elif field == "?":
                note(node, f"{node.func.id}({base}, ...)", "reaches a module's contents by a computed name")
            if node.func.id in ("setattr", "delattr"):
                targets = [node.args[0]]
        for name in filter(None, (_dotted(target, aliases) for target in targets)):
            note(node, f"assigns into {name}", "patches something the tests share")
    return [line for _, line in sorted(found.values())]


def _source(stage: curriculum.Stage, impl: Path) -> str:
    try:
        return loader.read_stage(stage.source(impl))
    except loader.StageFileError:
        return ""  # missing or unreadable: the run reports it


def flag_stages(stages, impl: Path) -> list[tuple[str, str]]:
    """(stage id, reason) for every flag in the learner's stage files, for the report and gradebook."""
    return [(stage.id, reason) for stage in stages for reason in flags(_source(stage, impl))]


def scan_stage(stage: curriculum.Stage, impl: Path) -> str:
    """A one-line verdict for the scorecard when the file imports what it must not, else ''."""
    imports = _imports(_parse(_source(stage, impl)))
    problems = list({(node.lineno, top): f"line {node.lineno} {FORBIDDEN_TOPS[top]}"
                     for node, name, _ in imports if (top := name.split(".")[0]) in FORBIDDEN_TOPS}.values())
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"no credit: {stage.source(impl).name} {problems[0]}{more}" if problems else ""
