"""Stage 17: the SwiGLU feed-forward network, and a mixture of experts built from it.

SwiGLU. Part I's feed-forward was linear, ReLU, linear. Llama uses a GATED unit: two parallel
projections of x, one passed through SiLU (x * sigmoid(x)) and used as a gate on the other:

    SwiGLU(x) = down_proj( silu(gate_proj(x)) * up_proj(x) )

The gate and the up projection are not interchangeable: only the gate goes through the SiLU.
With three matrices instead of two, Llama shrinks d_ff to about 8/3 * d_model to keep the count.

Mixture of experts (MoE). Keep E SwiGLU "experts" and a linear ROUTER that scores them for each
token. Each token is processed by its top-k experts only, and their outputs are mixed with
weights from a softmax over the k SELECTED logits (so the k weights sum to one):

    logits = router(x)                     (E,) per token
    idx    = the k largest logits' experts
    w      = softmax(logits[idx])          (k,), renormalised over the chosen k only
    out    = sum_i  w_i * expert_{idx_i}(x)

Worked example, E = 4, k = 2, logits = [2.0, 0.0, 1.0, -1.0]: the chosen experts are 0 and 2;
w = softmax([2, 1]) = [e / (e + 1), 1 / (e + 1)] = [0.7311, 0.2689]; out = 0.7311 * expert_0(x)
+ 0.2689 * expert_2(x). (A softmax over all four logits would give 0.6439 and 0.2369, which do
not sum to one: the output would shrink.)

A router left alone sends most tokens to a few favourite experts. The Switch Transformer's
load-balancing loss pushes towards an even spread:

    aux = E * sum_e f_e * P_e

f_e: the fraction of the N * k token-slots routed to expert e (counts of top-k picks / (N * k));
P_e: the mean, over the N tokens, of the softmax over ALL E logits, for expert e.
With perfectly even routing f_e = P_e = 1 / E and aux = E * E * (1 / E^2) = 1.

Shapes: B batch, S sequence, N = B * S tokens, D = d_model, F = d_ff, E experts, k = top_k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    """down_proj(silu(gate_proj(x)) * up_proj(x)), applied to every position independently."""

    def __init__(self, d_model: int, d_ff: int, bias: bool = False) -> None:
        """Create the three projections (the names of Llama checkpoints).

        Args:
            d_model: D.
            d_ff: F, the hidden width.
            bias: whether the projections have biases (Llama: no).
        Attributes:
            gate_proj: nn.Linear(D, F); up_proj: nn.Linear(D, F); down_proj: nn.Linear(F, D).
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s17_swiglu_moe: not written yet — python -m grader hint s17_swiglu_moe")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The gated feed-forward.

        Args:
            x: (..., D).
        Returns:
            (..., D): down_proj(silu(gate_proj(x)) * up_proj(x)).
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s17_swiglu_moe: not written yet — python -m grader hint s17_swiglu_moe")


class MixtureOfExperts(nn.Module):
    """E SwiGLU experts; a linear router sends each token to its top-k and mixes their outputs."""

    def __init__(self, d_model: int, d_ff: int, n_experts: int, top_k: int) -> None:
        """Create the router and the experts.

        Args:
            d_model: D.
            d_ff: F, the hidden width of each expert.
            n_experts: E.
            top_k: k, the number of experts per token (1 <= k <= E).
        Attributes:
            router: nn.Linear(D, E, bias=False); experts: nn.ModuleList of E SwiGLU(D, F);
            n_experts, top_k.
        Raises:
            ValueError: if top_k is not between 1 and n_experts.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s17_swiglu_moe: not written yet — python -m grader hint s17_swiglu_moe")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Route every token to its top-k experts and mix their outputs; also the balancing loss.

        Args:
            x: (B, S, D).
        Returns:
            (out, aux): out (B, S, D), each token's weighted sum over its k experts with weights
            softmax(the k selected router logits); aux a scalar (0-dim) tensor, the
            load-balancing loss E * sum_e f_e * P_e (see the module docstring).
        """
        # 1) score the experts, keep the k best, renormalise over those k only
        # TODO
        # 2) each expert processes only the tokens that chose it
        # TODO
        # 3) Switch-Transformer load balancing: fraction routed (f) times mean probability (P)
        # TODO
        raise NotImplementedError("s17_swiglu_moe: not written yet — python -m grader hint s17_swiglu_moe")
