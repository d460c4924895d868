"""Row 2: the reference encoder-decoder against the same model built from torch.nn.Transformer.

Both models have the same shape (post-LN, no dropout, tied target embedding and output
projection, sqrt(D)-scaled embeddings, sinusoidal positions, Xavier initialisation) and train
with the same recipe: the same batches, Adam with the Noam schedule, the same loss. The ratio of
their times per training step says whether the from-scratch code costs anything; the losses
after the same steps say whether the two really are the same model.
"""

from __future__ import annotations

import math
import random
import time

import torch
from torch import nn

from .common import Row, median

TITLE = "Reference vs torch.nn.Transformer: time per training step, same model and recipe"


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """(max_len, D) sin/cos table of the paper, written with torch built-ins."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (L, 1)
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


class BuiltinEncoderDecoder(nn.Module):
    """The copy-task model from torch built-ins: nn.Embedding, nn.Transformer, nn.Linear."""

    def __init__(self, vocab_size: int, d_model: int, n_heads: int, n_layers: int, d_ff: int, max_len: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.src_embed = nn.Embedding(vocab_size, d_model)
        self.tgt_embed = nn.Embedding(vocab_size, d_model)
        self.register_buffer("positions", sinusoidal_positions(max_len, d_model), persistent=False)
        self.transformer = nn.Transformer(d_model, n_heads, n_layers, n_layers, d_ff, dropout=0.0,
                                          batch_first=True, norm_first=False)
        self.generator = nn.Linear(d_model, vocab_size)
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        self.generator.weight = self.tgt_embed.weight  # tied, as in the reference

    def embed(self, table: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
        return table(tokens) * math.sqrt(self.d_model) + self.positions[: tokens.size(1)]  # (B, S, D)

    def forward(self, src, tgt, src_padding, tgt_padding, causal) -> torch.Tensor:
        """Masks in nn.Transformer's convention: True = may NOT attend (the opposite of the kata's)."""
        hidden = self.transformer(self.embed(self.src_embed, src), self.embed(self.tgt_embed, tgt), tgt_mask=causal,
                                  src_key_padding_mask=src_padding, tgt_key_padding_mask=tgt_padding,
                                  memory_key_padding_mask=src_padding, tgt_is_causal=True)
        return self.generator(hidden)  # (B, T, V)


def compare(copy_task, d_model: int, n_heads: int, n_layers: int, d_ff: int, steps: int, blocks: int) -> dict:
    """Train both models side by side on the same batches; return per-step times and losses."""
    from reference.s09_transformer import EncoderDecoder, TransformerConfig
    from reference.s10_noam_and_loss import LabelSmoothingLoss, noam_lambda

    recipe = copy_task.CopyTaskConfig(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_ff=d_ff)
    vocab = copy_task.Vocab(copy_task.SYMBOLS)
    rng = random.Random(0)
    batches = []
    for _ in range(steps):
        sources = copy_task.random_strings(recipe.batch_size, recipe.min_len, recipe.max_len, rng)
        batch = copy_task.make_batch(sources, sources, vocab)
        built_in_masks = (batch.src == vocab.pad_id, batch.tgt_in == vocab.pad_id,
                          torch.triu(torch.ones(batch.tgt_in.size(1), batch.tgt_in.size(1), dtype=torch.bool), 1))
        batches.append((batch, built_in_masks))

    torch.manual_seed(0)
    reference = EncoderDecoder(TransformerConfig(len(vocab), len(vocab), d_model, n_heads, n_layers, d_ff, 0.0,
                                                 recipe.max_len + 2))
    torch.manual_seed(0)
    built_in = BuiltinEncoderDecoder(len(vocab), d_model, n_heads, n_layers, d_ff, recipe.max_len + 2)
    loss_fn = LabelSmoothingLoss(len(vocab), vocab.pad_id, recipe.smoothing)

    def trainer(model, step_fn):
        optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, noam_lambda(d_model, recipe.warmup, recipe.lr_factor))
        model.train()
        return lambda batch: step_fn(model, batch, optimizer, scheduler)

    def reference_step(model, item, optimizer, scheduler):
        return copy_task.train_step(model, item[0], loss_fn, optimizer, scheduler)

    def built_in_step(model, item, optimizer, scheduler):
        batch, (src_padding, tgt_padding, causal) = item
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(batch.src, batch.tgt_in, src_padding, tgt_padding, causal), batch.tgt_out)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.item()

    contenders = {"reference": trainer(reference, reference_step), "built_in": trainer(built_in, built_in_step)}
    per_step = {name: [] for name in contenders}
    losses = {name: [] for name in contenders}
    block = steps // blocks
    for b in range(blocks):  # alternate blocks of steps, so background load hits both alike
        for name, step in contenders.items():
            start = time.perf_counter()
            for item in batches[b * block:(b + 1) * block]:
                losses[name].append(step(item))
            per_step[name].append((time.perf_counter() - start) / block)
    tail = max(1, block)
    return {
        "reference_ms": 1000 * median(per_step["reference"][1:] or per_step["reference"]),  # block 0 warms up
        "built_in_ms": 1000 * median(per_step["built_in"][1:] or per_step["built_in"]),
        "reference_loss": sum(losses["reference"][-tail:]) / tail,
        "built_in_loss": sum(losses["built_in"][-tail:]) / tail,
        "steps": block * blocks,
    }


def run(quick: bool = False) -> Row:
    from reference import s11_copy_task as copy_task

    row = Row("builtin", TITLE)
    sizes = [(32, 4, 2, 64)] if quick else [(32, 4, 2, 64), (128, 4, 2, 512)]  # (D, H, layers, F)
    steps, blocks = (8, 2) if quick else (300, 6)
    for d_model, n_heads, n_layers, d_ff in sizes:
        result = compare(copy_task, d_model, n_heads, n_layers, d_ff, steps, blocks)
        label = f"D={d_model} H={n_heads} layers={n_layers} F={d_ff}"
        row.details[label] = result
        ratio = result["reference_ms"] / result["built_in_ms"]
        row.add(f"{label}: step time reference / nn.Transformer", round(ratio, 3), "x", "<= 1.0",
                note=f"{result['reference_ms']:.2f} ms vs {result['built_in_ms']:.2f} ms a step, median of "
                     f"{blocks - 1 if blocks > 1 else 1} blocks of {steps // blocks} steps, batch 64; mean loss of the "
                     f"last block {result['reference_loss']:.3f} vs {result['built_in_loss']:.3f}",
                met=ratio <= 1.0)
    return row
