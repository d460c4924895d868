"""Assertions that teach: each failure says what was expected, what came out, and a likely cause.

Diagnose, then advise. When a check fails it first classifies what it observed (not a tensor, the
wrong shape, the wrong dtype or device, NaN/inf, values off by a constant factor, transposed,
shuffled, off only in some rows or heads, an input modified in place, an exception of a known
kind) and prints that as ``Observed:``; the ``Likely cause:`` is the one that fits the observation:
a test's ``causes`` table entry for that kind, a ``suspects`` entry (a known wrong answer the
result matches), or else the test's ``hint``. Wrong types, dtypes and devices, in-place
modifications and known exceptions get a cause of their own, whatever the test's hint says.

Values are compared only after the result is proven to be exactly a ``torch.Tensor`` (or
``nn.Parameter``) of the right shape and dtype, with subclass dispatch disabled, so neither an
object whose ``__eq__`` always answers True nor a subclass with a lying ``__torch_function__``
earns anything.

In-place safety: ``call`` runs learner code on tensors it must not modify and explains what it
raises; ``assert_unchanged`` compares inputs with snapshots taken before; ``backward`` explains
autograd's errors; ``assert_backward_twice`` runs two forward/backward passes in a row, as training
does. Every in-place failure message says "in place".
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping

import torch

EXACT_TYPES = (torch.Tensor, torch.nn.Parameter)
IN_PLACE = ("an in-place operation (`x += ...`, `.add_()`, `masked_fill_`, `x[...] = ...`) on a tensor your "
            "code was given, or on one autograd saved for the backward pass; compute a new tensor instead "
            "(`x = x + ...`, `masked_fill` without the underscore)")
VIEW = (".view on a tensor that is not contiguous (after a transpose or permute): .view cannot reorder memory. "
        "Use .reshape(...), or .contiguous() before .view")


def _cause(hint: str) -> str:
    return f"\n  Likely cause: {hint}" if hint else ""


def fail(message: str, hint: str = "", observed: str = "") -> None:
    """Fail the test with a message, what was observed, and a likely cause (the line learners read first)."""
    __tracebackhide__ = True
    raise AssertionError(message + (f"\n  Observed: {observed}" if observed else "") + _cause(hint)) from None


def _exact(value) -> bool:
    return type(value) in EXACT_TYPES


def _type_failure(value, what: str, hint: str) -> None:
    __tracebackhide__ = True
    kind = type(value).__name__
    if isinstance(value, torch.Tensor):
        fail(f"{what}: expected a plain torch.Tensor, got a subclass {kind}", "Return an ordinary tensor.")
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        fail(f"{what}: expected a torch.Tensor, got a {kind} of {len(value)} item(s)",
             f"One tensor is returned here, not a {kind}. {hint}".strip())
    fail(f"{what}: expected a torch.Tensor, got {kind}", hint)


def _shape_observation(got: tuple, want: tuple) -> str:
    if len(got) == len(want) and sorted(got) == sorted(want):
        return "the right sizes in a different order: axes are swapped (a missing or extra transpose/permute)"
    if math.prod(got) == math.prod(want):
        if [d for d in got if d != 1] == [d for d in want if d != 1]:
            return "an axis of size 1 is missing or extra (squeeze / unsqueeze / keepdim)"
        return "the right number of elements arranged differently (a view/reshape to the wrong shape)"
    if len(got) != len(want):
        return f"{len(got)} axes instead of {len(want)}"
    axes = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    return "; ".join(f"axis {i} has size {got[i]}, expected {want[i]}" for i in axes)


def _dtype_cause(got: torch.dtype, want: torch.dtype) -> str:
    if want == torch.bool:
        return ("a mask is torch.bool: build it from a comparison (==, !=, <) or with dtype=torch.bool; "
                "arithmetic, .float() or .int() turn it into numbers")
    if want in (torch.long, torch.int64):
        return ("ids and counts are torch.long: torch.tensor of Python ints or dtype=torch.long; factory "
                "functions such as torch.zeros default to float32, and torch.int32 is not torch.long")
    if want.is_floating_point and got.is_floating_point:
        return (f"{got} instead of {want}: a tensor made with dtype={got} (or from float64 data such as numpy "
                "arrays) mixed in, or a .double()/.half(); create tensors with the input's dtype")
    if want.is_floating_point:
        return ("integer or bool arithmetic: a comparison or an integer tensor was never turned into floats "
                "(torch.arange of ints is torch.long); use a float dtype")
    return f"a {got} tensor where {want} is expected: check the dtype= of the tensors you create"


def assert_tensor(value, what: str, *, shape=None, dtype=None, hint: str = "") -> torch.Tensor:
    """``value`` is exactly a torch.Tensor or nn.Parameter (not a subclass or look-alike) of this shape and dtype.

    A wrong shape is described (axes swapped, a size-1 axis missing, ...) and the test's hint
    follows; a wrong dtype gets the cause that fits the two dtypes, not the test's hint.
    """
    __tracebackhide__ = True
    if not _exact(value):
        _type_failure(value, what, hint)
    with torch._C.DisableTorchFunctionSubclass():
        if shape is not None and tuple(value.shape) != tuple(shape):
            got, want = tuple(value.shape), tuple(shape)
            fail(f"{what}: expected shape {want}, got {got}", hint, _shape_observation(got, want))
        if dtype is not None and value.dtype != dtype:
            typed = re.search(r"\b(dtype|float(16|32|64)?|long|bool|int(32|64)?|integers?)\b", hint)  # about types
            fail(f"{what}: expected dtype {dtype}, got {value.dtype}",
                 _dtype_cause(value.dtype, dtype) + (f". {hint}" if typed else ""))
    return value


def _name_factor(c: float) -> str:
    for n in range(2, 4097):
        for value, text in ((math.sqrt(n), f"sqrt({n})"), (1 / math.sqrt(n), f"1/sqrt({n})"),
                            (float(n), f"{n}"), (1 / n, f"1/{n}")):
            if abs(c - value) <= 1e-3 * abs(value):
                return f" (= {text})"
    return ""


def _where(over: torch.Tensor, axes) -> str:
    """Which indices along each axis hold the differences, when only some do."""
    parts = []
    for dim, size in enumerate(over.shape):
        if size < 2:
            continue
        hit = over.movedim(dim, 0).reshape(size, -1).any(1).nonzero().flatten().tolist()
        if len(hit) < size:
            shown = ", ".join(map(str, hit[:6])) + (", ..." if len(hit) > 6 else "")
            name = f"{axes[dim]} {shown}" if axes and dim < len(axes) else f"index {shown} of axis {dim}"
            parts.append(f"{name} (of 0..{size - 1})")
    return "only at " + " and ".join(parts) if parts else ""


def _close(a: torch.Tensor, b: torch.Tensor, atol: float) -> bool:
    return a.shape == b.shape and bool(((a - b).abs() <= atol + 1e-4 * b.abs()).all())


def _observe(actual: torch.Tensor, expected: torch.Tensor, over: torch.Tensor, atol: float, axes) -> tuple[str, str]:
    """Classify how float values are off: (kind, words), kind a key of the ``causes`` table."""
    a, e = actual.double(), expected.double()
    tol = max(atol, 1e-6)
    if not (e == 0).all() and (a == 0).all():
        return "zeros", "every value is 0"
    if a.numel() < 2:  # one number differs from another by every factor and offset: nothing to classify
        return "values", ""
    if _close(a, -e, tol):
        return "sign", "every value has the opposite sign"
    energy = float((e * e).sum())
    if energy > 0:
        c = float((a * e).sum()) / energy
        if abs(c - 1) > 1e-3 and c != 0 and _close(a, c * e, tol):
            return "scale", f"every value is {c:.4g} times the expected one{_name_factor(c)}"
    shift = float((a - e).mean())
    if abs(shift) > tol and _close(a, e + shift, tol):
        return "offset", f"every value is off by the same {shift:+.4g}"
    for i in range(a.dim()):
        for j in range(i + 1, a.dim()):
            if a.shape[i] == a.shape[j] > 1 and _close(a, e.transpose(i, j), tol):
                names = [axes[k] if axes and k < len(axes) else f"axis {k}" for k in (i, j)]
                return "transposed", f"the values are transposed: {names[0]} and {names[1]} are swapped"
    if a.numel() > 1 and _close(a.flatten().sort().values, e.flatten().sort().values, tol):
        return "permuted", "the right values in the wrong places (the same numbers, in a different order)"
    where = _where(over, axes)
    if where:
        return "some", f"the differences are {where}"
    return "values", ""


def assert_close(actual, expected: torch.Tensor, what: str, *, atol: float, rtol: float = 0.0, hint: str = "",
                 causes: Mapping[str, str] | None = None,
                 suspects: Mapping[str, tuple[torch.Tensor, str]] | None = None, axes=None) -> None:
    """Same shape, same dtype, same device, finite, and every element within ``atol + rtol * |expected|``.

    On failure it reports the largest difference, where it is, and both values there; then what
    it observed and the cause that fits. ``suspects`` maps a description of a known wrong answer
    ("your output equals x + FFN(x)") to (that wrong answer, its cause); ``causes`` maps an
    observation kind ("zeros", "sign", "scale", "offset", "transposed", "permuted", "some",
    "nonfinite") to the cause this test knows for it; ``axes`` names the axes ("batch", "head", ...).
    """
    __tracebackhide__ = True
    causes = causes or {}
    assert_tensor(actual, what, shape=expected.shape, dtype=expected.dtype, hint=hint)
    with torch._C.DisableTorchFunctionSubclass():
        if actual.device.type == "cpu" != expected.device.type:  # made on the CPU while the inputs are elsewhere
            fail(f"{what}: expected a tensor on {expected.device}, got one on {actual.device}",
                 "create new tensors on the input's device (device=x.device, or x.new_zeros(...)), "
                 "never on a fixed device")
        actual = actual.detach()
        expected = expected.detach().to(actual.device)
        if not expected.is_floating_point():
            unequal = actual != expected
            if unequal.any():
                where = tuple(int(i) for i in unequal.nonzero()[0])
                for words, (wrong, cause) in (suspects or {}).items():
                    if torch.equal(actual, wrong.to(actual.device, actual.dtype)):
                        fail(f"{what}: {int(unequal.sum())} of {unequal.numel()} elements differ\n"
                             f"  yours:    {_preview(actual)}\n  expected: {_preview(expected)}", cause, words)
                observed = "every entry is inverted" if actual.dtype == torch.bool and (actual == ~expected).all() else ""
                fail(
                    f"{what}: {int(unequal.sum())} of {unequal.numel()} elements differ, first at index {where}: "
                    f"yours {actual[where].item()}, expected {expected[where].item()}\n"
                    f"  yours:    {_preview(actual)}\n  expected: {_preview(expected)}",
                    causes.get("inverted" if observed else "values", hint), observed)
            return
        bad = ~torch.isfinite(actual) & torch.isfinite(expected)
        if bad.any():
            where = tuple(int(i) for i in bad.nonzero()[0])
            fail(f"{what}: {int(bad.sum())} value(s) are NaN or inf, first at index {where} "
                 f"(expected {expected[where].item():.6g})", causes.get("nonfinite", hint),
                 "NaN/inf: a softmax over a row of only -inf, a division by zero, log(0), or exp overflowing")
        diff = (actual - expected).abs()
        allowed = atol + rtol * expected.abs()
        over = diff > allowed
        if not over.any():
            return
        flat = int((diff - allowed).argmax())
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
        message = (f"{what}: values differ (atol={atol:g}, rtol={rtol:g}); {int(over.sum())} of {diff.numel()} "
                   f"elements are off, largest difference {diff[where].item():.3g} at index {where}: "
                   f"yours {actual[where].item():.6g}, expected {expected[where].item():.6g}")
        for words, (wrong, cause) in (suspects or {}).items():
            wrong = wrong.detach().to(actual.device, actual.dtype)
            if _close(actual, wrong, max(10 * atol, 1e-5)):
                fail(message, cause, words)
        kind, observed = _observe(actual, expected, over, atol, axes)
        fail(message, causes.get(kind, hint), observed)


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


# ---------------------------------------------------------------------------------------------
# learner code that raises, and in-place safety

_ERROR_CAUSES = (  # (words in torch's message, what they mean); the first that matches wins
    ("inplace operation", IN_PLACE),
    ("in-place operation", IN_PLACE),
    ("view size is not compatible", VIEW),
    ("backward through the graph a second time",
     "a tensor from an earlier forward pass is reused (built once in __init__, or cached): compute it inside "
     "forward, or keep it as a buffer that needs no gradient"),
    ("does not require grad and does not have a grad_fn",
     "the result is cut from the autograd graph: no .detach(), .data, .item()/.tolist() rebuilt into a "
     "tensor, or torch.no_grad() inside forward"),
    ("same device", "tensors on different devices meet: create new tensors on the input's device (device=x.device)"),
    ("scalar type", "tensors of different dtypes meet (float64 from numpy or Python data, or ids used as floats): "
                    "create tensors with the input's dtype"),
    ("same dtype", "tensors of different dtypes meet (float64 from numpy or Python data, or ids used as floats): "
                   "create tensors with the input's dtype"),
)
_WEAK_CAUSES = (  # known errors where the test's own hint, when it has one, says more
    ("index out of range", "an index past the end of a table or axis: ids must be < the vocabulary size, "
                           "positions < max_len"),
)


def explain_error(error: BaseException, what: str, hint: str = "") -> None:
    """Turn an exception from learner code into a failure that names the kind of error and its cause."""
    __tracebackhide__ = True
    text = str(error).strip().splitlines()[0].split(" Hint:")[0][:300] if str(error).strip() else ""
    weak = next((c for words, c in _WEAK_CAUSES if words in str(error)), "")
    cause = next((c for words, c in _ERROR_CAUSES if words in str(error)), f"{weak}. {hint}" if weak and hint else weak or hint)
    observed = "a tensor was modified in place (autograd needed its old value)" if cause is IN_PLACE else ""
    fail(f"{what} raised {type(error).__name__}: {text}", cause, observed)


def _copy(value):
    if _exact(value):
        return value.detach().clone()
    if type(value) in (list, tuple, dict) and all(type(v) in (int, float, str, bool, list, tuple) for v in
                                                  (value.values() if type(value) is dict else value)):
        return copy.deepcopy(value)  # plain data, such as lists of ids
    return None


def snapshot(*values) -> list:
    """Copies of the tensors and plain lists among ``values`` (None for anything else), to compare afterwards."""
    with torch._C.DisableTorchFunctionSubclass():
        return [_copy(v) for v in values]


def assert_unchanged(before: list, after, what: str, names=None) -> None:
    """Each tensor in ``after`` equals its ``snapshot`` in ``before``: the code did not write into it."""
    __tracebackhide__ = True
    with torch._C.DisableTorchFunctionSubclass():
        for index, (old, new) in enumerate(zip(before, after)):
            name = names[index] if names else f"argument {index + 1}"
            if old is not None and not _exact(old):
                if old != new:
                    fail(f"{what} modified its input {name} in place: it was {old!r}, it is now {new!r}",
                         "the function changes the list it was given (append, extend, +=, item assignment); "
                         "build a new list or tensor instead", "an input was modified in place")
                continue
            if old is None or not _exact(new):
                continue
            same = old.shape == new.shape and (old == new.detach()) | (old != old) & (new.detach() != new.detach())
            if old.shape != new.shape or not bool(same.all()):
                changed = "its shape" if old.shape != new.shape else f"{int((~same).sum())} of {old.numel()} values"
                fail(f"{what} modified its input {name} in place ({changed} changed)", IN_PLACE,
                     "an input was modified in place")


def call(fn: Callable, *args, what: str, hint: str = "", **kwargs):
    """``fn(*args, **kwargs)`` must leave its tensor arguments unchanged; what it raises is explained.

    NotImplementedError (an unwritten stub) and AssertionError (a failure a test already explained, such as
    a forbidden call) pass through untouched.
    """
    __tracebackhide__ = True
    names = [f"argument {i + 1}" for i in range(len(args))] + [f"`{k}`" for k in kwargs]
    values = [*args, *kwargs.values()]
    before = snapshot(*values)
    try:
        result = fn(*args, **kwargs)
    except (NotImplementedError, AssertionError):  # an unwritten stub; a failure already explained (a forbidden call)
        raise
    except Exception as error:  # noqa: BLE001 - learner code may raise anything; explain it
        explain_error(error, what, hint)
    assert_unchanged(before, values, what, names)
    return result


def backward(loss: torch.Tensor, what: str, hint: str = "") -> None:
    """``loss.backward()``, with autograd's errors (in place, graph reused, no grad) explained."""
    __tracebackhide__ = True
    try:
        loss.backward()
    except RuntimeError as error:
        explain_error(error, f"backward through {what}", hint)


def assert_backward_twice(forward: Callable[[], torch.Tensor], what: str, hint: str = "") -> None:
    """Two forward/backward passes in a row work, as in training, and give the same output both times.

    ``forward`` builds fresh inputs from the same data (ones that require grad and are not leaves, as
    activations inside a model are) and calls the learner's code through ``call``. It returns the
    output, or a tuple whose first item is the output. Put dropout-bearing modules in eval mode first.
    """
    __tracebackhide__ = True
    outputs = []
    for attempt in (1, 2):
        out = forward()
        out = out[0] if isinstance(out, tuple) else out
        if not _exact(out):
            _type_failure(out, what, hint)
        if not out.requires_grad:
            fail(f"{what}: the output does not require grad, so nothing can be learned through it",
                 "the result is cut from the autograd graph: no .detach(), .data, or torch.no_grad() inside forward")
        outputs.append(snapshot(out)[0])
        backward(out.float().pow(2).sum(), f"{what} (pass {attempt})", hint)
    with torch._C.DisableTorchFunctionSubclass():
        # a tolerance, not equality: on a GPU some kernels (index_add_, atomics) reorder float sums run to run
        if not torch.allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6):
            fail(f"{what}: two identical calls in a row (eval mode) gave different outputs",
                 "something random or stateful in forward: dropout still active in eval mode, or a buffer, "
                 "parameter or cached tensor modified in place between calls (forward must only compute)")


def assert_in_place_safe(fn: Callable, *inputs, what: str, hint: str = "", **kwargs) -> None:
    """``fn(*inputs, **kwargs)`` leaves its inputs unchanged, and two forward/backward passes in a row work.

    First with the inputs as given, then twice with every float input turned into a non-leaf that
    requires grad (as activations inside a model are), backpropagating each time.
    """
    __tracebackhide__ = True
    call(fn, *inputs, what=what, hint=hint, **kwargs)
    with torch._C.DisableTorchFunctionSubclass():
        leaves = [x.detach().clone().requires_grad_() if _exact(x) and x.is_floating_point() else x for x in inputs]

    def forward():
        args = [x * 1.0 if _exact(x) and x.requires_grad else x for x in leaves]
        return call(fn, *args, what=what, hint=hint, **kwargs)

    assert_backward_twice(forward, what, hint)
