"""Assertions that teach: each failure says what was expected, what came out, and a likely cause.

Values are compared only after the result is proven to be a real tensor of the right shape and
dtype, so an object whose ``__eq__`` always answers True earns nothing.
"""

from __future__ import annotations

import torch


def _cause(hint: str) -> str:
    return f"\n  Likely cause: {hint}" if hint else ""


def fail(message: str, hint: str = "") -> None:
    """Fail the test with a message and a likely cause (the line learners read first)."""
    __tracebackhide__ = True
    raise AssertionError(message + _cause(hint))


def assert_tensor(value, what: str, *, shape=None, dtype=None, hint: str = "") -> torch.Tensor:
    """``value`` is exactly a torch.Tensor (not a subclass or look-alike) of this shape and dtype."""
    __tracebackhide__ = True
    if type(value) is not torch.Tensor and not isinstance(value, torch.nn.Parameter):
        fail(f"{what}: expected a torch.Tensor, got {type(value).__name__}", hint)
    if shape is not None and tuple(value.shape) != tuple(shape):
        fail(f"{what}: expected shape {tuple(shape)}, got {tuple(value.shape)}", hint)
    if dtype is not None and value.dtype != dtype:
        fail(f"{what}: expected dtype {dtype}, got {value.dtype}", hint)
    return value


def assert_close(actual, expected: torch.Tensor, what: str, *, atol: float, rtol: float = 0.0, hint: str = "") -> None:
    """Same shape, same dtype, finite, and every element within ``atol + rtol * |expected|``.

    On failure it reports the largest difference, where it is, and both values there.
    """
    __tracebackhide__ = True
    assert_tensor(actual, what, shape=expected.shape, dtype=expected.dtype, hint=hint)
    actual = actual.detach()
    expected = expected.detach().to(actual.device)
    if expected.is_floating_point():
        bad = ~torch.isfinite(actual) & torch.isfinite(expected)
        if bad.any():
            where = tuple(int(i) for i in bad.nonzero()[0])
            fail(f"{what}: {int(bad.sum())} value(s) are NaN or inf, first at index {where} "
                 f"(expected {expected[where].item():.6g})", hint)
        diff = (actual - expected).abs()
        allowed = atol + rtol * expected.abs()
        over = diff > allowed
        if over.any():
            flat = int((diff - allowed).argmax())
            where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
            fail(
                f"{what}: values differ (atol={atol:g}, rtol={rtol:g}); {int(over.sum())} of {diff.numel()} "
                f"elements are off, largest difference {diff[where].item():.3g} at index {where}: "
                f"yours {actual[where].item():.6g}, expected {expected[where].item():.6g}",
                hint,
            )
    else:
        unequal = actual != expected
        if unequal.any():
            where = tuple(int(i) for i in unequal.nonzero()[0])
            fail(
                f"{what}: {int(unequal.sum())} of {unequal.numel()} elements differ, first at index {where}: "
                f"yours {actual[where].item()}, expected {expected[where].item()}\n"
                f"  yours:    {_preview(actual)}\n  expected: {_preview(expected)}",
                hint,
            )


def _preview(tensor: torch.Tensor, limit: int = 24) -> str:
    values = tensor.flatten().tolist()
    text = ", ".join(str(v) for v in values[:limit])
    return f"[{text}{', ...' if len(values) > limit else ''}] (shape {tuple(tensor.shape)})"


def assert_equal(actual, expected, what: str, *, hint: str = "") -> None:
    """Plain Python values (ints, strings, lists) compared exactly, with both shown."""
    __tracebackhide__ = True
    if type(actual) is not type(expected) and not (isinstance(expected, (int, float)) and isinstance(actual, (int, float)) and not isinstance(actual, bool)):
        fail(f"{what}: expected a {type(expected).__name__} ({expected!r}), got a {type(actual).__name__} ({actual!r})", hint)
    if actual != expected:
        fail(f"{what}: expected {expected!r}, got {actual!r}", hint)


def assert_int_list(value, what: str, *, hint: str) -> list[int]:
    """A real list of plain Python ints (not tensors, not numpy ints)."""
    __tracebackhide__ = True
    if type(value) is not list:
        fail(f"{what}: expected a list of ints, got {type(value).__name__} ({value!r})", hint)
    odd = [v for v in value if type(v) is not int]
    if odd:
        fail(f"{what}: expected plain Python ints, got {type(odd[0]).__name__} ({odd[0]!r}) in {value!r}",
             f"{hint} Convert with int(...): a tensor or numpy integer is not an id.")
    return value


def assert_raises(call, error: type[BaseException], what: str, hint: str) -> None:
    """``call()`` must raise ``error`` (anything else it raises propagates as the failure)."""
    __tracebackhide__ = True
    try:
        call()
    except error:
        return
    fail(f"{what}: expected {error.__name__}, but nothing was raised", hint)
