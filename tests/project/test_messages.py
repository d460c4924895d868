"""Every catalogued mistake gets a first message that names its cause, fits a screen and gives nothing away.

Over the whole mutant catalogue (every tests/mutants/*.toml), the FIRST failure message of each
mutant's suite (what pytest prints on its ``E`` lines, the text a learner reads first):
- contains the mutant's ``symptom`` (the cause, not only the test that failed);
- is short: at most MAX_LINES lines and MAX_CHARS characters;
- pastes no line of the stage's reference code (the last hint is the near-solution; a message
  points at the idea). Lines shorter than MIN_CODE_CHARS (``return x``, ``super().__init__()``)
  are too common to count as a leak, and a line the stub itself shows (a formula in its
  docstring, a given function) gives nothing away.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize

import pytest

from grader import curriculum, mutants

MAX_LINES = 15
MAX_CHARS = 1500
MIN_CODE_CHARS = 24
CATALOGUE = mutants.load()


def first_message(output: str) -> str:
    """The last run of ``E`` lines in the first failure (or error) block of ``pytest -q --tb=short`` output.

    The last run, because an exception raised while handling another is printed after it.
    """
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("=") and ("FAILURES" in line or "ERRORS" in line)),
                 None)
    if start is None:
        return ""
    blocks: list[list[str]] = []
    previous_was_e = False
    for line in lines[start + 2:]:
        if line.startswith(("____", "====")):
            break
        is_e = line.startswith("E   ") or line == "E"
        if is_e and not previous_was_e:
            blocks.append([])
        if is_e:
            blocks[-1].append(line[4:])
        previous_was_e = is_e
    return "\n".join(blocks[-1]) if blocks else ""


def code_lines(stage_id: str) -> set[str]:
    """The stage's reference code, one stripped line each, without comments, docstrings or short lines."""
    source = curriculum.REFERENCE.joinpath(f"{stage_id}.py").read_text(encoding="utf-8")
    strings = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            strings.update(range(body[0].lineno, body[0].end_lineno + 1))
    comments = {token.start[0]: token.start[1] for token in tokenize.generate_tokens(io.StringIO(source).readline)
                if token.type == tokenize.COMMENT}
    stub = curriculum.ROOT.joinpath("exercises", f"{stage_id}.py").read_text(encoding="utf-8")
    found = set()
    for number, line in enumerate(source.splitlines(), 1):
        if number in strings:
            continue
        code = line[:comments[number]] if number in comments else line
        code = code.strip().removeprefix("return ")  # the expression alone gives as much away
        if code in stub:  # the stub already shows it (a formula in the docstring, a given function)
            continue
        if len(code) >= MIN_CODE_CHARS and not code.startswith(("def ", "class ", "import ", "from ", "raise ", "@", "if ", "for ")):
            found.add(code)
    return found


def test_first_message_parser_reads_pytest_short_tracebacks():
    output = ("F\n===== FAILURES =====\n____ test_a ____\ntests/test_x.py:3: in test_a\n    check(x)\n"
              "E   RuntimeError: raw\n\nDuring handling of the above exception, another exception occurred:\n"
              "E   AssertionError: out: expected 1, got 2\nE     Likely cause: why\n____ test_b ____\nE   other\n")
    assert first_message(output) == "AssertionError: out: expected 1, got 2\n  Likely cause: why"
    assert "self.linear2(self.dropout(torch.relu(self.linear1(x))))" in code_lines("s06_feedforward")


@pytest.fixture(scope="module")
def first_messages(mutant_rows):
    """Each mutant's first message, from the whole catalogue's run (once per session: conftest's mutant_rows)."""
    return {entry["label"]: first_message(entry["output"]) for entry in mutant_rows}


def read(first_messages, mutant) -> str:
    message = first_messages[mutant.label]
    assert message, (f"{mutant.label}: no first failure in the runner's output: either the mutant is not caught, or "
                     "its first failure lacked the symptom and the runner re-ran the whole suite (whose output it cuts)")
    return message


@pytest.mark.slow
@pytest.mark.parametrize("mutant", CATALOGUE, ids=[m.label for m in CATALOGUE])
def test_first_message_names_the_cause(mutant, first_messages):
    message = read(first_messages, mutant)
    assert mutant.symptom.lower() in message.lower(), (
        f"{mutant.label}: the FIRST failure message does not say {mutant.symptom!r}:\n{message}")


@pytest.mark.slow
@pytest.mark.parametrize("mutant", CATALOGUE, ids=[m.label for m in CATALOGUE])
def test_first_message_is_short_and_pastes_no_reference_code(mutant, first_messages):
    message = read(first_messages, mutant)
    lines = message.count("\n") + 1
    assert lines <= MAX_LINES and len(message) <= MAX_CHARS, (
        f"{mutant.label}: the first message is {lines} lines / {len(message)} characters "
        f"(at most {MAX_LINES} / {MAX_CHARS}):\n{message}")
    leaked = sorted(line for line in code_lines(mutant.stage) if line in message)
    assert not leaked, f"{mutant.label}: the first message pastes the reference's code {leaked}:\n{message}"


# --- the diagnosis in tests/checks.py, on hand-made wrong answers ------------------------------------------


def failure(check, *args, **kwargs) -> str:
    with pytest.raises(AssertionError) as caught:
        check(*args, **kwargs)
    return str(caught.value)


@pytest.fixture(scope="module")
def checks():
    sys.path.insert(0, str(curriculum.TESTS))
    import checks as module  # tests/checks.py, the helpers the stage suites use

    return module


def test_a_parameter_subclass_that_lies_earns_nothing(checks):
    import torch

    class Liar(torch.nn.Parameter):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            return True

    expected = torch.randn(3, 4)
    message = failure(checks.assert_close, Liar(torch.zeros(3, 4)), expected, "out", atol=1e-6)
    assert "subclass" in message
    message = failure(checks.assert_tensor, Liar(torch.zeros(3, 4)), "out", shape=(3, 4))
    assert "subclass" in message


def test_values_off_are_classified_before_the_cause(checks):
    import torch

    x = torch.randn(4, 4)
    assert "(= sqrt(8))" in failure(checks.assert_close, x * 8 ** 0.5, x, "out", atol=1e-6, hint="h")
    assert "transposed: query and key are swapped" in failure(
        checks.assert_close, x.t(), x, "out", atol=1e-6, axes=("query", "key"))
    shuffled = x.flatten()[torch.randperm(16)].view(4, 4)
    assert "the right values in the wrong places" in failure(checks.assert_close, shuffled, x, "out", atol=1e-6)
    one_row = x.clone()
    one_row[2] += 1.0
    assert "only at query 2 (of 0..3)" in failure(checks.assert_close, one_row, x, "out", atol=1e-6,
                                                  axes=("query", "key"))
    assert "Likely cause: the known cause" in failure(checks.assert_close, x + 1.0, x, "out", atol=1e-6, hint="h",
                                                     suspects={"it is x + 1": (x + 1.0, "the known cause")})


def test_shape_and_dtype_get_causes_of_their_own(checks):
    import torch

    swapped = failure(checks.assert_tensor, torch.zeros(2, 4, 3), "out", shape=(2, 3, 4), hint="formula")
    assert "axes are swapped" in swapped
    dtype = failure(checks.assert_tensor, torch.zeros(2, dtype=torch.float64), "out", dtype=torch.float32,
                    hint="a formula hint")
    assert "float64 instead of torch.float32" in dtype and "formula" not in dtype


def test_in_place_changes_and_known_errors_are_named(checks):
    import torch

    def adds_in_place(x):
        x += 1
        return x

    assert "in place" in failure(checks.call, adds_in_place, torch.zeros(3), what="f(x)")
    assert "in place" in failure(checks.call, lambda items: items.append(0), [1, 2], what="f(list)")
    assert "not contiguous" in failure(checks.call, lambda x: x.t().view(-1), torch.zeros(2, 3), what="f(x)")

    def zeroes_softmax_in_place(x):
        weights = torch.softmax(x, dim=-1)
        weights.masked_fill_(x > 0, 0.0)
        return weights

    assert "in place" in failure(checks.assert_in_place_safe, zeroes_softmax_in_place, torch.randn(3, 3), what="f")
    checks.assert_in_place_safe(lambda x: torch.softmax(x, dim=-1), torch.randn(3, 3), what="softmax")
