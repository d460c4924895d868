"""The command-line plumbing every command shares: one Parser built from a dict of options, the one run_main (bad
input: one line, exit 2), --impl, the stage lookup, the device check, the limits and their defaults, the answer key."""

import argparse
import sys
from pathlib import Path

from . import curriculum

TIMEOUT, STAGE_TIMEOUT, MEMORY_MB = 60.0, 300.0, 4096  # per test and per stage (CPU seconds), MiB a stage may add
LIMITS = {  # of python -m grader, batch and gradescope-bundle, as add_argument's keywords
    "--timeout": dict(type=float, default=TIMEOUT, help="CPU seconds one test may use (default %(default)g)"),
    "--stage-timeout": dict(type=float, default=STAGE_TIMEOUT, help="CPU seconds one stage's suite may use "
                            "(default %(default)g; the wall-clock backstop is 3x + 60 s)"),
    "--memory-limit": dict(type=int, default=MEMORY_MB, help="MiB one stage may add (0: none; default %(default)s)"),
}


class UsageError(Exception):
    """Bad input to a command: the message is printed as one line on stderr and the exit status is 2."""


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) instead of printing the whole usage."""

    def error(self, message):
        raise UsageError(message)


def parser(prog: str, description: str, options: dict[str, dict]) -> Parser:
    """The one way a command's parser is built: ``options`` maps flags ("-v --verbose") to add_argument's keywords."""
    built = Parser(prog=prog, description=description.split("\n\n")[0])
    for flags, keywords in options.items():
        built.add_argument(*flags.split(), **keywords)
    return built


def run_main(prog: str, main, argv: list[str] | None = None, *args, **kwargs) -> int:
    """Every command's main is partial(run_main, prog, its main): bad input it knows is one line on stderr, exit 2."""
    try:
        return main(sys.argv[1:] if argv is None else argv, *args, **kwargs)
    except (UsageError, curriculum.ManifestError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def resolve_impl(value: str, stages: tuple[curriculum.Stage, ...], root: Path = curriculum.ROOT) -> Path:
    """--impl: exercises, reference or a folder of stage files -> that folder, resolved; else UsageError."""
    path = Path(root) / value if value in ("exercises", "reference") else Path(value).expanduser()
    if not path.is_dir():
        raise UsageError(f"--impl {value}: no such directory")
    if not any(stage.source(path).is_file() for stage in stages):
        raise UsageError(f"--impl {value}: not shaped like exercises/ (no stage files such as {stages[0].id}.py)")
    return path.resolve()


def find(stages: tuple[curriculum.Stage, ...], key: str) -> curriculum.Stage:
    """Look a stage up by id ("s03_attention"), number ("3", "03") or topic ("attention"); else UsageError."""
    wanted = key.strip()
    for stage in stages:
        if wanted in (stage.id, stage.id.split("_", 1)[1]) or (wanted.isdigit() and int(wanted) == stage.number):
            return stage
    raise UsageError(f"unknown stage {key!r}: give a number (1-{len(stages)}), an id like "
                     f"{stages[2 if len(stages) > 2 else 0].id} or a topic")


def check_limits(args, jobs: str, *counts: int) -> None:  # counts: the options named by jobs (1 or more)
    if min(counts) < 1 or min(getattr(args, "submission_timeout", 1), args.timeout, args.stage_timeout) <= 0 \
            or args.memory_limit < 0:
        raise UsageError(f"{jobs} must be at least 1, the time limits positive and --memory-limit 0 or more")


def check_device(name: str) -> None:
    """UsageError unless torch can use the device ``name`` (cpu, cuda, mps, or one of them with an index) here."""
    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: use cpu, cuda or mps")
    if kind != "cpu":
        import torch

        if not (torch.cuda.is_available() if kind == "cuda" else torch.backends.mps.is_available()):
            raise UsageError(f"--device {name}: not available on this machine (use cpu)")


def reference_of(root: Path) -> Path | None:
    """The answer key of the copy at ``root`` (its reference/ with stage files), or None: a student release."""
    return root / "reference" if any((root / "reference").glob("s[0-9][0-9]_*.py")) else None
