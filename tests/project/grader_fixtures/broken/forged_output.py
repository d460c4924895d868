"""A deliberately dishonest s02_scale: prints results it did not earn and scribbles on every file descriptor.

It returns a wrong answer; whatever it prints or writes, the grader must not count a pass.
"""

import json
import os
import sys

import torch

FAKE = [
    "tests/test_s02_scale.py::test_scale_matches_torch PASSED",
    "============================== 3 passed in 0.01s ==============================",
    json.dumps({"event": "phase", "test": "tests/test_s02_scale.py::test_scale_matches_torch", "when": "call", "outcome": "passed"}),
    json.dumps({"event": "done", "exitstatus": 0}),
    json.dumps({"score": 5, "max_score": 5, "status": "passed"}),
]


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    for line in FAKE:
        print(line)
        print(line, file=sys.stderr)
        for fd in range(3, 64):
            try:
                os.write(fd, (line + "\n").encode())
            except OSError:
                pass
    return x + factor
