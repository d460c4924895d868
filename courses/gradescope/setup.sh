#!/usr/bin/env bash
# Gradescope runs this once, when the autograder bundle is uploaded, to build the grading image.
# The bundle is unpacked in /autograder/source; the kata (grader, tests, reference) is in
# /autograder/source/kata. Built by: python -m grader gradescope-bundle (docs/instructors.md).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
apt-get update -y
apt-get install -y --no-install-recommends python3 python3-venv python3-pip

# The grader needs Python 3.11 or newer (tomllib); older base images get python3.11 next to python3.
PYTHON=python3
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    apt-get install -y --no-install-recommends python3.11 python3.11-venv
    PYTHON=python3.11
fi

"$PYTHON" -m venv /opt/kata
/opt/kata/bin/python -m pip install --upgrade pip
# The CPU build of torch: Gradescope containers have no GPU, and the CUDA wheels are gigabytes.
/opt/kata/bin/python -m pip install --extra-index-url https://download.pytorch.org/whl/cpu \
    -r /autograder/source/kata/requirements.txt
