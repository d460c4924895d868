"""Pictures of a trained copy-task transformer: attention heatmaps, the Noam schedule, the loss curve.

    python -m grader.pictures [--out DIR] [--impl exercises|reference|PATH] [--steps N] [--reverse] [-v]

Trains the stage-11 capstone with YOUR stages (the reference standing in as in grader/harness.py), then writes
{encoder_self,decoder_self,cross}_attention.png, noam_schedule.png and training_loss.png: a model that copies
has a bright diagonal of cross-attention (anti-diagonal for --reverse), rebuilt from what a forward hook on
each attention module sees. Exit 0 written, 1 training crashed (as train), 2 bad usage or no matplotlib.
"""

from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path

import torch

from . import curriculum, harness, loader, options, train

CAPSTONE = "s11_copy_task"
SCHEDULE = "s10_noam_and_loss"
EXAMPLE = "hbdjagecfi"  # the source string whose attention is drawn: every symbol of the task once, no pattern
WARMUPS = (50, 100, 200, 400)  # the Noam curves drawn, in steps
KINDS = {"encoder_self": "encoder self-attention (source -> source)",  # the heatmaps: what they show
         "decoder_self": "decoder self-attention (output so far, causal)",
         "cross": "cross-attention (decoder position -> source position)"}
PROG = "python -m grader.pictures"


def import_pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no window), or exit 2 with the install line."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        print("pictures need matplotlib: python -m pip install matplotlib", file=sys.stderr)
        raise SystemExit(2) from None
    plt.switch_backend("Agg")
    return plt


def load_capstone(impl: Path):
    """(copy-task module, schedule module, substituted stage ids) under the running plan for ``impl``."""
    plan = loader.for_running(Path(impl).resolve(), train.COPY)
    return loader.load_stage(plan.sources, CAPSTONE), loader.load_stage(plan.sources, SCHEDULE), list(plan.substituted)


def is_attention(module) -> bool:
    """A stage-5 MultiHeadAttention, recognised by its parts (each plan has its own class object)."""
    return all(hasattr(module, name) for name in ("q_proj", "k_proj", "split_heads", "head_size"))


class AttentionRecorder:
    """Around a forward pass: ``weights`` maps each attention module's name to its (B, H, Sq, Sk) weights."""

    def __init__(self, model) -> None:
        self.modules = {name: module for name, module in model.named_modules() if is_attention(module)}
        self.weights: dict = {}

    def __enter__(self) -> "AttentionRecorder":
        record = lambda name, module, args, kwargs, _: self.weights.__setitem__(  # noqa: E731
            name, attention_weights(module, args, kwargs))
        self.handles = [module.register_forward_hook(functools.partial(record, name), with_kwargs=True)
                        for name, module in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        while self.handles:
            self.handles.pop().remove()


def attention_weights(module, args: tuple, kwargs: dict):
    """softmax(Q Kᵀ / sqrt(Dh)) (B, H, Sq, Sk) of a forward(query, key, value, mask) call; masked keys get 0."""
    call = list(inspect.signature(module.forward).bind(*args, **kwargs).arguments.values())  # in the documented order
    query, key, mask = call[0], call[1], call[3] if len(call) > 3 else None
    with torch.no_grad():
        q = module.split_heads(module.q_proj(query))  # (B, H, Sq, Dh)
        k = module.split_heads(module.k_proj(key))  # (B, H, Sk, Dh)
        scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5  # (B, H, Sq, Sk)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1).nan_to_num(0.0)  # fully masked rows: 0, not NaN


def record_example(copy_task, model, vocab, source: list[str]) -> dict:
    """Greedy-decode ``source``, then record that decoding's attention "weights" (H, Sq, Sk), teacher-forced."""
    batch = copy_task.make_batch([source], [source], vocab)
    model.eval()
    generated = copy_task.greedy_decode(model, batch.src, batch.src_mask, len(source) + 1,
                                        vocab.bos_id, vocab.eos_id, vocab.pad_id)  # (1, L)
    output = vocab.decode(generated[0].tolist())  # the model's answer, up to its eos
    batch = copy_task.make_batch([source], [output], vocab)
    with torch.no_grad(), AttentionRecorder(model) as recorder:
        logits = model(batch.src, batch.tgt_in, batch.src_mask, batch.tgt_mask)  # (1, T, V)
    return {"weights": {name: w[0] for name, w in recorder.weights.items()}, "output": output,
            "reads": [vocab.itos[i] for i in batch.tgt_in[0].tolist()],
            "writes": [vocab.itos[i] for i in logits[0].argmax(-1).tolist()]}


def of_kind(weights: dict, kind: str) -> list:
    """The (H, Sq, Sk) weights of the modules of one of the KINDS, in layer order."""
    kinds = {name: "encoder_self" if name.startswith("encoder") else "cross" if "cross" in name else "decoder_self"
             for name in weights}
    return [w for name, w in weights.items() if kinds[name] == kind]


def diagonal_fraction(weights, reverse: bool = False) -> float:
    """How many output positions' head-averaged (H, T, S) cross-attention peaks on source t (S - 1 - t: reverse)."""
    average = weights.mean(dim=0)  # (T, S)
    hits = [int(average[t].argmax()) == (average.size(1) - 1 - t if reverse else t) for t in range(min(average.shape))]
    return sum(hits) / len(hits)


def save(plt, figure, title: str, path: Path) -> Path:
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_attention(plt, maps: list, columns: list[str], rows: list[str], title: str, path: Path) -> Path:
    """One heatmap per (layer, head): rows are query positions, columns key positions."""
    n_layers, n_heads = len(maps), maps[0].size(0)
    figure, axes = plt.subplots(n_layers, n_heads, figsize=(2.6 * n_heads + 1, 2.6 * n_layers + 0.8),
                                squeeze=False, constrained_layout=True)
    for layer, weights in enumerate(maps):
        for head, axis in enumerate(axes[layer]):
            image = axis.imshow(weights[head].cpu().numpy(), vmin=0.0, vmax=1.0, cmap="viridis")
            axis.set_xticks(range(len(columns)), columns, fontsize=7, rotation=90)
            axis.set_yticks(range(len(rows)), rows, fontsize=7)
            axis.set_title(f"layer {layer} head {head}", fontsize=8)
    figure.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    return save(plt, figure, title, path)


def plot_schedule(plt, noam_lr, config, path: Path) -> Path:
    """Noam curves for WARMUPS (factor 1), and dashed the run's own warmup and factor."""
    figure, axis = plt.subplots(figsize=(7, 4), constrained_layout=True)
    x = range(1, max(2000, 4 * max(WARMUPS)) + 1)
    for warmup in WARMUPS:
        axis.plot(x, [noam_lr(step, config.d_model, warmup) for step in x], label=f"warmup {warmup}")
    axis.plot(x, [noam_lr(step, config.d_model, config.warmup, config.lr_factor) for step in x], "k--",
              label=f"this run: warmup {config.warmup}, factor {config.lr_factor:g}")
    axis.set(xlabel="step", ylabel="learning rate")
    axis.legend()
    return save(plt, figure, f"Noam schedule, d_model = {config.d_model}: linear warm-up, then 1/sqrt(step)", path)


def plot_training(plt, result, config, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(7, 4), constrained_layout=True)
    axis.plot(range(1, len(result.losses) + 1), result.losses, color="tab:blue", linewidth=1)
    axis.set(xlabel="step", yscale="log")
    axis.set_ylabel("training loss (log scale)", color="tab:blue")
    if result.accuracies:
        other = axis.twinx()
        other.plot(*zip(*[(s, 100 * a) for s, a in result.accuracies]), "o-", color="tab:orange", markersize=3)
        other.set_ylim(-2, 102)
        other.set_ylabel("held-out exact match (%)", color="tab:orange")
    task = "reverse" if config.reverse else "copy"
    return save(plt, figure, f"{task} task, {config.n_layers} layer(s): loss per step, held-out exact match", path)


def write_pictures(plt, copy_task, schedule, result, config, source: list[str], out: Path) -> tuple[list[Path], dict]:
    """Write the five PNG files for a trained ``result``; return their paths and the recorded example."""
    out.mkdir(parents=True, exist_ok=True)
    example = record_example(copy_task, result.model, result.vocab, source)
    queries = [f"{r} → {w}" for r, w in zip(example["reads"], example["writes"])]  # reads -> writes
    axes = {"encoder_self": (source, source), "decoder_self": (example["reads"], queries), "cross": (source, queries)}
    model = f"{'reverse' if config.reverse else 'copy'} model after {result.steps} steps"
    shown = f"source {''.join(source)!r}, output {''.join(example['output'])!r}"
    written = [plot_attention(plt, of_kind(example["weights"], kind), *axes[kind], f"{model}: {what}\n{shown}",
                              out / f"{kind}_attention.png") for kind, what in KINDS.items()]
    written.append(plot_schedule(plt, schedule.noam_lr, config, out / "noam_schedule.png"))
    return written + [plot_training(plt, result, config, out / "training_loss.png")], example


def run(argv: list[str]) -> int:
    args = harness.parse(PROG, __doc__, argv, {
        "--out": {"type": Path, "default": Path("pictures"), "help": "folder for the PNG files (default: pictures)"},
        "--steps": {"type": int, "help": "train at most this many steps (default 300, or fewer at 100%%)"},
        "--reverse": {"action": "store_true", "help": "train the reverse task instead of copy"},
        "--layers": {"type": int, "default": 2, "help": "encoder and decoder layers (default: 2)"},
        "--example": {"default": EXAMPLE, "help": f"the source string whose attention is drawn, over a-j ({EXAMPLE})"},
    })
    plt = import_pyplot()  # before training: no one should wait a minute to learn it is missing
    if args.layers < 1:
        raise options.UsageError("--layers must be at least 1")
    if not set(args.example) <= set(EXAMPLE) or not 1 <= len(args.example) <= 10:
        raise options.UsageError(f"--example must be 1 to 10 symbols from {''.join(sorted(EXAMPLE))}")
    if args.out.exists() and not args.out.is_dir() or args.out.resolve().is_relative_to(curriculum.EXERCISES.resolve()):
        raise options.UsageError(f"--out {args.out}: must be a folder outside exercises/")
    steps = args.steps or train.DEFAULT_STEPS["copy"]

    def work(modules, progress: harness.Progress):
        copy_task = modules(CAPSTONE)
        config = copy_task.CopyTaskConfig(reverse=args.reverse, n_layers=args.layers, seed=args.seed, max_steps=steps,
                                          eval_every=min(copy_task.CopyTaskConfig.eval_every, steps))
        progress(f"training the {'reverse' if args.reverse else 'copy'} task, at most {config.max_steps} steps")
        result = copy_task.train_copy_task(config, log=progress)
        progress.close()
        schedule = modules(SCHEDULE)
        written, example = write_pictures(plt, copy_task, schedule, result, config, list(args.example), args.out)
        cross = of_kind(example["weights"], "cross")[-1]
        print(f"trained {result.steps} steps, held-out exact match {result.accuracy:.1%}; "
              f"{args.example!r} -> {''.join(example['output'])!r}; last layer's cross-attention peaks on the "
              f"{'anti-' if args.reverse else ''}diagonal at {diagonal_fraction(cross, args.reverse):.0%} of positions")
        print("\n".join(f"wrote {path}" for path in written))

    return harness.run_plan(loader.for_running(args.impl_path, train.COPY), work, args.verbose, PROG, sys.stdout,
                          live=sys.stdout.isatty(), total=steps, early_stop=True)[0]


main = functools.partial(options.run_main, PROG, run)  # main(argv=None) -> exit status


if __name__ == "__main__":
    sys.exit(main())
