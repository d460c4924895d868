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
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, V) logits (no softmax: the loss and the decoder apply their own)."""
        return self.proj(x)


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
        super().__init__()
        c = config
        self.config = config
        self.src_embed = TokenEmbedding(c.src_vocab, c.d_model)
        self.tgt_embed = TokenEmbedding(c.tgt_vocab, c.d_model)
        self.positional = PositionalEncoding(c.d_model, c.max_len, c.dropout)
        self.encoder = Encoder(c.n_layers, c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first)
        self.decoder = Decoder(c.n_layers, c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first)
        self.generator = Generator(c.d_model, c.tgt_vocab)
        init_parameters(self)
        if c.tie_weights:
            self.generator.proj.weight = self.tgt_embed.embedding.weight  # one Parameter, two roles

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) source ids -> (B, S, D) memory. src_mask: None or (B, 1, 1, S)."""
        return self.encoder(self.positional(self.src_embed(src)), src_mask)

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
        return self.decoder(self.positional(self.tgt_embed(tgt)), memory, src_mask, tgt_mask)

    def forward(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, S) source ids, (B, T) target ids -> (B, T, V) logits. Masks as in encode and decode."""
        memory = self.encode(src, src_mask)
        return self.generator(self.decode(memory, src_mask, tgt, tgt_mask))


def init_parameters(model: nn.Module) -> None:
    """Xavier-uniform initialisation of every parameter with more than one dimension.

    Biases and layer-norm parameters (one dimension) keep PyTorch's defaults.
    """
    for parameter in model.parameters():
        if parameter.dim() > 1:
            nn.init.xavier_uniform_(parameter)
