"""Stage 9: the whole encoder-decoder transformer, with weight tying and initialisation.

    src tokens -> TokenEmbedding -> PositionalEncoding -> Encoder ------------------> memory
    tgt tokens -> TokenEmbedding -> PositionalEncoding -> Decoder(memory) -> Generator -> logits

Weight tying (section 3.4 of the paper): the target embedding and the generator's output
projection are ONE nn.Parameter of shape (V_tgt, D). It saves V_tgt * D parameters and the
two roles (token -> vector, vector -> token score) help each other learn.

Shapes: B batch, S source length, T target length, D = d_model, V vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .s02_embeddings import PositionalEncoding, TokenEmbedding
from .s07_encoder import Encoder
from .s08_decoder import Decoder


@dataclass(frozen=True)
class TransformerConfig:
    """Everything that decides the model's shape. The defaults are the paper's base model."""

    src_vocab: int  # source vocabulary size
    tgt_vocab: int  # target vocabulary size, V
    d_model: int = 512  # D, the width of every token vector
    n_heads: int = 8  # H, attention heads per layer; must divide d_model
    n_layers: int = 6  # layers in the encoder, and again in the decoder
    d_ff: int = 2048  # F, the feed-forward hidden width
    dropout: float = 0.1  # one probability for every dropout in the model
    max_len: int = 5000  # the longest sequence the positional encoding covers
    norm_first: bool = False  # False = post-LN (the paper), True = pre-LN
    tie_weights: bool = True  # share the target embedding with the output projection


class Generator(nn.Module):
    """The output projection: a vector per position -> a score (logit) per vocabulary entry."""

    def __init__(self, d_model: int, vocab_size: int) -> None:
        """Args: d_model: D. vocab_size: V. Attributes: proj: nn.Linear(D, V)."""
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s09_transformer: not written yet — python -m grader hint s09_transformer")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, V) logits (no softmax: the loss and the decoder apply their own)."""
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s09_transformer: not written yet — python -m grader hint s09_transformer")


class EncoderDecoder(nn.Module):
    """The transformer of "Attention Is All You Need"."""

    def __init__(self, config: TransformerConfig) -> None:
        """Build every part, initialise, then tie.

        Attributes:
            config: the TransformerConfig.
            src_embed, tgt_embed: TokenEmbedding for each vocabulary.
            positional: PositionalEncoding(D, max_len, dropout), shared by both sides (it has no
                learned parameters).
            encoder: Encoder; decoder: Decoder (n_layers each, norm_first as configured).
            generator: Generator(D, V_tgt).
        Initialisation: init_parameters(self) first; then, if config.tie_weights, make
        generator.proj.weight the very same Parameter as tgt_embed.embedding.weight.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s09_transformer: not written yet — python -m grader hint s09_transformer")

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) source ids -> (B, S, D) memory. src_mask: None or (B, 1, 1, S)."""
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s09_transformer: not written yet — python -m grader hint s09_transformer")

    def decode(
        self,
        memory: torch.Tensor,
        src_mask: torch.Tensor | None,
        tgt: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) target ids and (B, S, D) memory -> (B, T, D) decoder states (before the generator).

        src_mask: None or (B, 1, 1, S); tgt_mask: None or broadcastable to (B, 1, T, T).
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s09_transformer: not written yet — python -m grader hint s09_transformer")

    def forward(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, S) source ids, (B, T) target ids -> (B, T, V) logits. Masks as in encode and decode."""
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s09_transformer: not written yet — python -m grader hint s09_transformer")


def init_parameters(model: nn.Module) -> None:
    """Xavier-uniform initialisation of every parameter with more than one dimension.

    Biases and layer-norm parameters (one dimension) keep PyTorch's defaults.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s09_transformer: not written yet — python -m grader hint s09_transformer")
