"""Stage 17: the SwiGLU feed-forward network and a mixture of experts built from it.

Oracles: SwiGLU written here with torch ops (z * sigmoid(z) for SiLU) on the module's copied weights;
a hand-worked single-feature example; for the mixture, a slow loop over tokens that ranks the router
logits itself, softmaxes the k chosen ones with math.exp and sums the chosen experts' oracle outputs;
and the Switch-Transformer load-balancing loss computed by hand from the same routing.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from checks import assert_close, assert_equal, assert_in_place_safe, assert_tensor, call, fail

B, S, D, FF, E, K = 2, 5, 8, 12, 4, 2

HINT_SWIGLU = ("SwiGLU is down_proj(silu(gate_proj(x)) * up_proj(x)): only the GATE goes through the SiLU, "
               "and up_proj(x) is the plain linear branch it multiplies. Are gate and up swapped?")
HINT_SILU = ("The activation is SiLU, silu(z) = z * sigmoid(z) (torch.nn.functional.silu), not ReLU: "
             "silu(-2) = -0.2384, relu(-2) = 0.")
HINT_ROUTE = ("Each token keeps its k highest router logits (logits.topk(k)) -- exactly k experts, not k + 1 -- "
              "and weights them by a softmax over THOSE k logits only, so the k weights sum to one. A softmax "
              "over all E experts, gathered at the top k, forgets to renormalise over the chosen k.")
HINT_MIX = ("out[token] = sum over its k chosen experts of weight * expert(x[token]): each token is processed "
            "by its own experts with its own weights. Are the router weights multiplied in?")
HINT_AUX = ("aux = E * sum_e f_e * P_e, with f_e the fraction of the N * k token-slots routed to expert e "
            "(counts / (N * k)) and P_e the mean over tokens of softmax(ALL E logits)[e]. Is the factor E there, "
            "and is f divided by N * k rather than N?")


# ----------------------------------------------------------------------------- oracles

def swiglu_oracle(module, x: torch.Tensor) -> torch.Tensor:
    """down(silu(gate x) * up x) on copied weights, SiLU written as z * sigmoid(z)."""
    w_gate = module.gate_proj.weight.detach().clone()
    w_up = module.up_proj.weight.detach().clone()
    w_down = module.down_proj.weight.detach().clone()
    gate = x @ w_gate.T
    return (gate * torch.sigmoid(gate) * (x @ w_up.T)) @ w_down.T


def routing_oracle(router_weight: torch.Tensor, token: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """(expert, weight) for one token: rank the logits by hand, softmax the top k with math.exp."""
    logits = [float(v) for v in router_weight @ token]
    chosen = sorted(range(len(logits)), key=lambda e: -logits[e])[:k]
    top = max(logits[e] for e in chosen)
    exps = {e: math.exp(logits[e] - top) for e in chosen}
    total = sum(exps.values())
    return [(e, exps[e] / total) for e in chosen]


def moe_oracle(module, x: torch.Tensor, k: int) -> torch.Tensor:
    """Brute force: every token's output is the weighted sum over its chosen experts."""
    router = module.router.weight.detach().clone()
    out = torch.zeros_like(x)
    for b in range(x.size(0)):
        for s in range(x.size(1)):
            for e, weight in routing_oracle(router, x[b, s], k):
                out[b, s] += weight * swiglu_oracle(module.experts[e], x[b, s])
    return out


def aux_oracle(router_weight: torch.Tensor, x: torch.Tensor, n_experts: int, k: int) -> torch.Tensor:
    """E * sum_e f_e * P_e, counted token by token."""
    tokens = x.reshape(-1, x.size(-1))
    counts = [0] * n_experts
    prob_sums = [0.0] * n_experts
    for token in tokens:
        for e, _ in routing_oracle(router_weight, token, k):
            counts[e] += 1
        logits = [float(v) for v in router_weight @ token]
        norm = sum(math.exp(v) for v in logits)
        for e in range(n_experts):
            prob_sums[e] += math.exp(logits[e]) / norm
    n = len(tokens)
    return torch.tensor(n_experts * sum(counts[e] / (n * k) * prob_sums[e] / n for e in range(n_experts)))


def call_moe(module, x):
    __tracebackhide__ = True
    with torch.no_grad():
        result = call(module, x, what="MixtureOfExperts(x)")
    if not isinstance(result, tuple) or len(result) != 2:
        fail(f"MixtureOfExperts.forward: expected a tuple (out, aux), got {type(result).__name__}", HINT_AUX)
    return result


# ----------------------------------------------------------------------------- SwiGLU

def test_swiglu_has_three_bias_free_projections_and_keeps_the_shape(stage):
    module = stage.SwiGLU(D, FF)
    assert_tensor(module.gate_proj.weight, "gate_proj.weight", shape=(FF, D), hint=HINT_SWIGLU)
    assert_tensor(module.up_proj.weight, "up_proj.weight", shape=(FF, D), hint=HINT_SWIGLU)
    assert_tensor(module.down_proj.weight, "down_proj.weight", shape=(D, FF), hint=HINT_SWIGLU)
    assert_equal(sum(p.numel() for p in module.parameters()), 3 * D * FF, "SwiGLU parameter count",
                 hint="bias=False by default: three weight matrices and nothing else.")
    with torch.no_grad():
        out = call(module, torch.randn(B, S, D), what="SwiGLU(x)")
    assert_tensor(out, "SwiGLU(x)", shape=(B, S, D), dtype=torch.float32, hint=HINT_SWIGLU)


def test_swiglu_hand_worked_single_feature(stage):
    """D = F = 1, gate weight 2, up weight 3, down weight 1.

    x = -1: gate = -2, up = -3, silu(-2) = -2 * sigmoid(-2) = -2 * 0.1192029 = -0.2384058; times -3 = 0.7152175.
    x =  2: gate =  4, up =  6, silu(4)  =  4 * sigmoid(4)  =  4 * 0.9820138 =  3.9280552; times  6 = 23.568331.
    (Gate and up swapped: 0.2845552 and 23.940657. ReLU instead of SiLU: 0 and 24.)
    """
    module = stage.SwiGLU(1, 1)
    with torch.no_grad():
        module.gate_proj.weight.fill_(2.0)
        module.up_proj.weight.fill_(3.0)
        module.down_proj.weight.fill_(1.0)
        out = call(module, torch.tensor([[-1.0], [2.0]]), what="SwiGLU([[-1], [2]])")
    assert_close(out, torch.tensor([[0.7152175], [23.568331]]), "SwiGLU on the hand-worked example", atol=1e-5,
                 hint=HINT_SILU + " " + HINT_SWIGLU)


def test_swiglu_matches_the_formula_with_copied_weights(stage):
    module = stage.SwiGLU(D, FF)
    x = torch.randn(B, S, D)
    expected = swiglu_oracle(module, x)
    with torch.no_grad():
        out = call(module, x, what="SwiGLU(x)")
    assert_close(out, expected, "SwiGLU(x)", atol=1e-5, hint=HINT_SWIGLU)


def test_swiglu_leaves_its_input_unchanged_and_trains_twice_in_a_row(stage):
    assert_in_place_safe(stage.SwiGLU(D, FF), torch.randn(B, S, D), what="SwiGLU(x)")


# ----------------------------------------------------------------------------- mixture of experts: shapes

def test_moe_has_a_bias_free_router_and_e_swiglu_experts(stage):
    module = stage.MixtureOfExperts(D, FF, E, K)
    assert_tensor(module.router.weight, "router.weight", shape=(E, D),
                  hint="The router is nn.Linear(d_model, n_experts, bias=False): one logit per expert.")
    if module.router.bias is not None:
        fail("router has a bias; expected nn.Linear(D, E, bias=False)", "Pass bias=False to the router.")
    if not isinstance(module.experts, nn.ModuleList) or len(module.experts) != E:
        fail(f"experts: expected an nn.ModuleList of {E} SwiGLU, got {type(module.experts).__name__}",
             "nn.ModuleList(SwiGLU(d_model, d_ff) for _ in range(n_experts)) registers every expert's parameters.")
    for e, expert in enumerate(module.experts):
        if not isinstance(expert, stage.SwiGLU):
            fail(f"experts[{e}] is a {type(expert).__name__}, expected SwiGLU", "Each expert is a SwiGLU(d_model, d_ff).")


def test_moe_returns_the_output_and_a_scalar_aux_loss(stage):
    out, aux = call_moe(stage.MixtureOfExperts(D, FF, E, K), torch.randn(B, S, D))
    assert_tensor(out, "MoE output", shape=(B, S, D), dtype=torch.float32, hint=HINT_MIX)
    assert_tensor(aux, "aux loss", shape=(), dtype=torch.float32,
                  hint="The aux loss is a 0-dim tensor (a scalar), so a model can add it to the loss.")


# ----------------------------------------------------------------------------- mixture of experts: the oracle

def test_moe_leaves_its_input_unchanged_and_trains_twice_in_a_row(stage):
    assert_in_place_safe(stage.MixtureOfExperts(D, FF, E, K), torch.randn(B, S, D), what="MixtureOfExperts(x)")


def test_routing_worked_example_weights_the_two_chosen_experts(stage):
    """E = 4, k = 2, one token with router logits [2, 0, 1, -1]: experts 0 and 2 are chosen.

    weights = softmax([2, 1]) = [e / (e + 1), 1 / (e + 1)] = [0.7310586, 0.2689414], and
    out = 0.7310586 * expert_0(x) + 0.2689414 * expert_2(x).
    (A softmax over all four logits would give 0.6439 and 0.2369, which sum to 0.8808.)
    """
    module = stage.MixtureOfExperts(D, FF, 4, 2)
    x = torch.zeros(1, 1, D)
    x[0, 0, 0] = 1.0
    with torch.no_grad():
        module.router.weight.zero_()
        module.router.weight[:, 0] = torch.tensor([2.0, 0.0, 1.0, -1.0])
    e0, e1, e2 = (swiglu_oracle(module.experts[i], x) for i in range(3))
    expected = 0.7310586 * e0 + 0.2689414 * e2
    every = [math.exp(v) / sum(math.exp(u) for u in (2, 0, 1, -1)) for v in (2, 0, 1)]  # softmax over all four
    three = [math.exp(v) / sum(math.exp(u) for u in (2, 1, 0)) for v in (2, 0, 1)]  # softmax over the top 3
    suspects = {
        "your output is expert_0(x) + expert_2(x), unweighted": (e0 + e2, HINT_MIX),
        "your output is the plain mean of expert_0(x) and expert_2(x)": ((e0 + e2) / 2, HINT_MIX),
        "your weights are a softmax over all four logits (0.6439, 0.2369)": (every[0] * e0 + every[2] * e2, HINT_ROUTE),
        "your output mixes three experts, not k = 2": (three[0] * e0 + three[1] * e1 + three[2] * e2, HINT_ROUTE),
    }
    out, _ = call_moe(module, x)
    assert_close(out, expected, "MoE output for logits [2, 0, 1, -1]", atol=1e-5, hint=HINT_ROUTE, suspects=suspects)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_every_token_equals_the_brute_force_sum_over_its_chosen_experts(stage, top_k):
    module = stage.MixtureOfExperts(D, FF, E, top_k)
    with torch.no_grad():
        module.router.weight.mul_(4.0)  # spread the logits so that every expert is someone's choice
    x = torch.randn(B, S, D)
    expected = moe_oracle(module, x, top_k)
    out, _ = call_moe(module, x)
    assert_close(out, expected, f"MoE output, top_k={top_k}", atol=1e-5, hint=HINT_ROUTE + " " + HINT_MIX)


def test_with_top_k_equal_to_the_number_of_experts_it_is_a_dense_softmax_mixture(stage):
    module = stage.MixtureOfExperts(D, FF, E, E)
    x = torch.randn(1, 3, D)
    probs = torch.softmax(x @ module.router.weight.detach().T, dim=-1)  # (1, 3, E)
    expected = sum(probs[..., e:e + 1] * swiglu_oracle(module.experts[e], x) for e in range(E))
    out, _ = call_moe(module, x)
    assert_close(out, expected, "MoE output, top_k = E", atol=1e-5, hint=HINT_MIX)


# ----------------------------------------------------------------------------- the load-balancing loss

def test_aux_loss_matches_a_hand_count_of_the_routing(stage):
    module = stage.MixtureOfExperts(D, FF, E, K)
    with torch.no_grad():
        module.router.weight.mul_(4.0)
    x = torch.randn(B, S, D)
    expected = aux_oracle(module.router.weight.detach(), x, E, K)
    _, aux = call_moe(module, x)
    assert_close(aux, expected, "aux loss", atol=1e-5, hint=HINT_AUX)


def test_aux_loss_is_one_for_perfectly_balanced_uniform_routing(stage):
    """A zero router gives every expert probability 1/E, so aux = E * sum_e f_e / E = sum_e f_e = 1.

    And 4 tokens that each pick a different expert (k = 1) give f_e = 1/4 for all e, so aux = sum_e P_e = 1.
    """
    module = stage.MixtureOfExperts(D, FF, E, K)
    with torch.no_grad():
        module.router.weight.zero_()
    _, aux = call_moe(module, torch.randn(B, S, D))
    assert_close(aux, torch.tensor(1.0), "aux loss with a zero router (uniform P)", atol=1e-6, hint=HINT_AUX)
    module = stage.MixtureOfExperts(D, FF, E, 1)
    with torch.no_grad():
        module.router.weight.copy_(torch.eye(E, D) * 3.0)  # token i (= unit vector i) prefers expert i
    tokens = torch.eye(E, D).reshape(1, E, D)
    _, aux = call_moe(module, tokens)
    assert_close(aux, torch.tensor(1.0), "aux loss with one token per expert (uniform f)", atol=1e-6, hint=HINT_AUX)


def test_aux_loss_sends_a_gradient_to_the_router(stage):
    module = stage.MixtureOfExperts(D, FF, E, K)
    _, aux = module(torch.randn(B, S, D))
    assert_tensor(aux, "aux loss", shape=(), dtype=torch.float32, hint=HINT_AUX)
    hint = ("P_e must be computed from the router's softmax (not detached, not from the hard top-k counts), "
            "so that the loss can push the router towards balance.")
    if not aux.requires_grad:
        fail("the aux loss does not require grad: nothing in it depends on the router's weights", hint)
    aux.backward()
    grad = module.router.weight.grad
    if grad is None or not grad.abs().sum() > 0:
        fail("aux.backward() left no gradient on router.weight", hint)


# ----------------------------------------------------------------------------- edge cases

def test_a_single_token_with_top_1_is_its_best_expert_unweighted(stage):
    """k = 1: softmax over one logit is 1, so the output is exactly the best expert's output."""
    module = stage.MixtureOfExperts(D, FF, E, 1)
    x = torch.randn(1, 1, D)
    best = int((module.router.weight.detach() @ x[0, 0]).argmax())
    expected = swiglu_oracle(module.experts[best], x)
    out, _ = call_moe(module, x)
    assert_close(out, expected, f"MoE output, top_k = 1 (expert {best})", atol=1e-5, hint=HINT_ROUTE)
