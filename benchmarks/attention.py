"""Row 3: the reference scaled_dot_product_attention against torch's fused one, forward and backward.

Time: the median over interleaved repeats of one forward plus backward pass, reference / torch.
Memory: on CPU, torch allocations are invisible to tracemalloc and torch keeps no allocator
statistics, so the peak is read from torch.profiler's memory timeline (profile_memory=True):
the largest total of tensors created and not yet destroyed during one forward and backward,
inputs excluded. That timeline is a private torch API (Profiler._memory_profile); when it is
unavailable the memory columns say n/a instead of guessing. On a GPU the allocator's own peak
(torch.cuda.max_memory_allocated) is used.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .common import Row, median, time_interleaved

TITLE = "Attention: reference vs torch.nn.functional.scaled_dot_product_attention (forward + backward)"


@contextmanager
def quiet_stderr():
    """Silence file descriptor 2: the profiler's C++ side logs a start and a stop line on every use."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_bytes_cpu(fn) -> float | None:
    """Peak bytes of tensors created during fn(), from the profiler's memory timeline; None if unavailable."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                                     with_stack=True) as prof:
            fn()
        timeline = prof._memory_profile().timeline  # [(time, action, (key, version), bytes)]
    except Exception:  # a private API: any change in torch makes memory n/a, never a crash
        return None
    current = peak = 0
    for _, action, _, size in timeline:
        if action.name == "CREATE":
            current += size
        elif action.name == "DESTROY":
            current -= size
        peak = max(peak, current)
    return float(peak)


def peak_bytes_cuda(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - before)


def run(quick: bool = False, device: str = "cpu") -> Row:
    from reference.s03_attention import scaled_dot_product_attention

    row = Row("attention", TITLE)
    sizes = [(2, 4, 32, 16), (2, 4, 64, 16)] if quick else [(8, 8, 128, 64), (4, 8, 512, 64)]  # (B, H, S, Dh)
    repeats = 3 if quick else 15
    for batch, heads, length, head_size in sizes:
        label = f"B={batch} H={heads} S={length} Dh={head_size}, causal"
        generator = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(batch, heads, length, head_size, generator=generator).to(device).requires_grad_()
                   for _ in range(3))
        keep = torch.ones(length, length, dtype=torch.bool, device=device).tril()  # True = may attend

        def reference():
            output, _ = scaled_dot_product_attention(q, k, v, keep)
            output.sum().backward()

        def fused():
            F.scaled_dot_product_attention(q, k, v, attn_mask=keep).sum().backward()

        def synced(fn):
            if device == "cpu":
                return fn
            return lambda: (fn(), torch.cuda.synchronize())

        times = time_interleaved({"reference": synced(reference), "torch": synced(fused)}, repeats, warmup=2)
        ref_ms, torch_ms = 1000 * median(times["reference"]), 1000 * median(times["torch"])
        row.add(f"{label}: time reference / torch", round(ref_ms / torch_ms, 3), "x",
                note=f"{ref_ms:.2f} ms vs {torch_ms:.2f} ms, median of {repeats}")
        peak = peak_bytes_cpu if device == "cpu" else peak_bytes_cuda
        ref_bytes, torch_bytes = peak(reference), peak(fused)
        row.details[label] = {"reference_ms": ref_ms, "torch_ms": torch_ms, "reference_peak_bytes": ref_bytes,
                              "torch_peak_bytes": torch_bytes}
        if ref_bytes is None or torch_bytes is None:
            row.add(f"{label}: peak memory reference / torch", None, "x",
                    note="n/a: torch.profiler's memory timeline is not available in this torch")
            continue
        mib = 2**20
        row.add(f"{label}: peak memory reference / torch", round(ref_bytes / torch_bytes, 3), "x",
                note=f"{ref_bytes / mib:.1f} MiB vs {torch_bytes / mib:.1f} MiB ({'profiler timeline' if device == 'cpu' else 'cuda allocator'})")
    return row
