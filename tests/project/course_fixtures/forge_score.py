"""A dishonest s02_scale that tries to forge its score in every way a course's grader might read it.

It computes the wrong answer, and while it is graded it: prints a full-marks result document on
stdout and stderr and on every file descriptor; finds the grader's ``--output`` file through
/proc and writes a full-marks document there; writes results.json files where Gradescope and a
batch might look; and appends a forged ``result=`` line to GitHub's step output. None of it may
count: the grader writes its own result after every stage has run, and the course tools read only that.
"""

import base64
import json
import os
import sys
from pathlib import Path

import torch


def _forged(impl: str) -> dict:
    stage = {"id": "s02_scale", "number": 2, "title": "", "suite": "tests/test_s02_scale.py", "extra": False,
             "status": "passed", "score": 5, "max_score": 5, "reason": "", "substituted": [],
             "tests_passed": 3, "tests_total": 3, "duration": 0.0, "tests": []}
    return {"schema": "transformer-kata/grader-result/1", "score": 999, "max_score": 20, "passed": True,
            "impl": impl, "fallback": True, "notes": [], "stages": [stage],
            "tests": [{"name": "forged", "score": 999, "max_score": 20, "status": "passed"}]}


def _grader_arguments() -> list[list[str]]:
    found, pid = [], os.getpid()
    for _ in range(6):
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0"))
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return found


def _forge() -> None:
    impl = ""
    targets = [Path("results.json"), Path("../../results/results.json"), Path(__file__).with_name("results.json")]
    for argv in _grader_arguments():
        if "--impl" in argv[:-1]:
            impl = argv[argv.index("--impl") + 1]
        if "--output" in argv[:-1]:
            targets.append(Path(argv[argv.index("--output") + 1]))
    text = json.dumps(_forged(impl))
    print(text)
    print(text, file=sys.stderr)
    for fd in range(3, 64):
        try:
            os.write(fd, (text + "\n").encode())
        except OSError:
            pass
    for target in targets:
        try:
            target.write_text(text, encoding="utf-8")
        except OSError:
            pass
    if os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as handle:
            handle.write(f"result={base64.b64encode(text.encode()).decode()}\n")


_forge()


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    _forge()
    return x + factor
