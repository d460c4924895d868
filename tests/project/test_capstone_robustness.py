"""The capstone's verdict does not hang on rounding: a sample of the robustness benchmark's runs.

`python -m benchmarks --only robustness` trains the reference capstone under every perturbation
(seeds 0-9, two thread counts, initial weights moved by 1e-6, attention and loss written another
way, other CPU kernels). This runs three of those runs, one per kind of rewrite, and asserts that
each passes the stage 11 test's own pass mark, judged by the test's own judge.
"""

from __future__ import annotations

import pytest

from benchmarks import robustness

SAMPLE = [("copy", 3, "einsum-softmax"), ("reverse", 7, "weights-1e-6"), ("reverse", 4, "cross-entropy")]


@pytest.mark.slow
@pytest.mark.parametrize("task, seed, perturbation", SAMPLE, ids=[f"{t}-seed{s}-{p}" for t, s, p in SAMPLE])
def test_perturbed_reference_capstone_passes_with_margin(task, seed, perturbation):
    run = robustness.one_run(task, seed, perturbation)
    mark = robustness.judging_suite().PASS_MARK
    assert run["passed"], (f"{task}, seed {seed}, {perturbation}: the reference judged {run['judged']:.1%} after "
                           f"{run['steps']} steps, below the pass mark {mark:.0%}; e.g. {run['misses']}")


def test_the_rewrites_compute_what_they_replace():
    """The perturbations are equivalent rewrites, not different models: same outputs to float tolerance."""
    import torch

    from reference.s03_attention import scaled_dot_product_attention
    from reference.s10_noam_and_loss import LabelSmoothingLoss

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 4)
    mask = torch.rand(2, 1, 5, 6) > 0.3
    mask[0, 0, 1] = False  # one fully masked row
    expected, expected_weights = scaled_dot_product_attention(q, k, v, mask)
    got, got_weights = robustness.einsum_attention(q, k, v, mask)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got_weights, expected_weights, atol=1e-6, rtol=1e-5)

    logits, target = torch.randn(4, 7, 14), torch.randint(0, 14, (4, 7))
    torch.testing.assert_close(robustness.CrossEntropyLoss(14, 0)(logits, target),
                               LabelSmoothingLoss(14, 0, 0.0)(logits, target), atol=1e-6, rtol=1e-5)
