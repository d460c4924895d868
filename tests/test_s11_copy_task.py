"""Stage 11: batches for teacher forcing, one training step, greedy decoding, and the copy task.

Oracles: hand-worked batches (ids written out below), a tiny model defined here for train_step
(its gradient computed here on a copy), a scripted fake model for greedy_decode, hand-worked
exact-match examples, and, for the capstone, a greedy decoder and exact-match check written in
this file that judge the trained model on fresh random strings it has never seen.

The vocabulary of the toy tasks: <pad> 0, <bos> 1, <eos> 2, <unk> 3, then a=4, b=5, ... j=13.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from checks import assert_close, assert_equal, assert_tensor, fail

PAD, BOS, EOS = 0, 1, 2
V = 14

HINT_SHIFT = ("Teacher forcing shifts by one: tgt_in = bos + target (what the decoder reads), tgt_out = target + "
              "eos (what it must predict), both padded to the same length T.")
HINT_TGT_MASK = ("Is tgt_mask built from tgt_in's padding (not src's) and combined with causal_mask(T): "
                 "combine_masks(padding_mask(tgt_in, pad_id), causal_mask(T))?")
HINT_FEEDBACK = ("Each step appends the argmax of the LAST position's logits (logits[:, -1]) to the sequence the "
                 "decoder reads next, starting from bos.")
HINT_STOP = ("Stop as soon as every row has produced eos (or after max_len tokens): the result is only as wide "
             "as the longest row needs.")
HINT_PAD_FINISHED = "A row that has produced eos is finished: every later position of that row is pad_id."
HINT_STEP = ("train_step: optimizer.zero_grad(), logits = model(src, tgt_in, src_mask, tgt_mask), "
             "loss = loss_fn(logits, tgt_out), loss.backward(), clip if asked, optimizer.step(), scheduler.step() "
             "if given, return loss.item().")


def vocab(stage):
    return stage.Vocab(stage.SYMBOLS)


def batch_of(stage, sources, targets):
    """Call the learner's make_batch; a crash (e.g. masks of mismatched lengths) becomes a teaching failure."""
    try:
        return stage.make_batch(sources, targets, vocab(stage))
    except RuntimeError as error:
        fail(f"make_batch(sources of length {max(map(len, sources))}, targets of length "
             f"{max(map(len, targets))}) raised: {error}", HINT_TGT_MASK + " " + HINT_SHIFT)


# --- make_batch: a hand-worked example -----------------------------------------------------------------------

SOURCES = [["a", "b", "c"], ["d"]]
TARGETS = [["c", "b", "a"], ["d"]]  # reversed, so source and target differ
SRC = [[4, 5, 6], [7, 0, 0]]
TGT_IN = [[1, 6, 5, 4], [1, 7, 0, 0]]  # bos + target
TGT_OUT = [[6, 5, 4, 2], [7, 2, 0, 0]]  # target + eos


def test_make_batch_shapes_and_dtypes(stage):
    batch = batch_of(stage, SOURCES, TARGETS)
    assert_tensor(batch.src, "batch.src", shape=(2, 3), dtype=torch.long, hint="Sources padded to the longest, S = 3.")
    assert_tensor(batch.tgt_in, "batch.tgt_in", shape=(2, 4), dtype=torch.long, hint=HINT_SHIFT)
    assert_tensor(batch.tgt_out, "batch.tgt_out", shape=(2, 4), dtype=torch.long, hint=HINT_SHIFT)
    assert_tensor(batch.src_mask, "batch.src_mask", shape=(2, 1, 1, 3), dtype=torch.bool,
                  hint="src_mask = padding_mask(src, pad_id), shape (B, 1, 1, S).")
    assert_tensor(batch.tgt_mask, "batch.tgt_mask", shape=(2, 1, 4, 4), dtype=torch.bool, hint=HINT_TGT_MASK)


def test_make_batch_ids_are_shifted_by_one(stage):
    batch = batch_of(stage, SOURCES, TARGETS)
    assert_close(batch.src, torch.tensor(SRC), "batch.src", atol=0, hint="The source is encoded as is: no bos, no eos.")
    assert_close(batch.tgt_in, torch.tensor(TGT_IN), "batch.tgt_in (bos + target)", atol=0, hint=HINT_SHIFT)
    assert_close(batch.tgt_out, torch.tensor(TGT_OUT), "batch.tgt_out (target + eos): the target must be shifted by one",
                 atol=0, hint=HINT_SHIFT)


def test_make_batch_masks(stage):
    batch = batch_of(stage, SOURCES, TARGETS)
    src_mask = torch.tensor([[True, True, True], [True, False, False]]).view(2, 1, 1, 3)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    row1_keys = torch.tensor([True, True, False, False])  # tgt_in row 1 is [bos, d, pad, pad]
    tgt_mask = torch.stack([causal, causal & row1_keys]).view(2, 1, 4, 4)
    assert_close(batch.src_mask, src_mask, "batch.src_mask", atol=0, hint="True where src is a real token.")
    assert_close(batch.tgt_mask, tgt_mask, "batch.tgt_mask", atol=0, hint=HINT_TGT_MASK)


# --- train_step, on a tiny model defined here -----------------------------------------------------------------


class TinyModel(nn.Module):
    """logits = linear(embedding(tgt_in) + mean of embedding(src)): enough to have gradients, nothing to hide."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, 8)
        self.out = nn.Linear(8, V)

    def forward(self, src, tgt_in, src_mask, tgt_mask):
        return self.out(self.embed(tgt_in) + self.embed(src).mean(dim=1, keepdim=True))


def tiny_setup(stage):
    model = TinyModel()
    batch = batch_of(stage, SOURCES, TARGETS)
    return model, batch


def loss_fn(logits, target):
    return F.cross_entropy(logits.reshape(-1, V), target.reshape(-1), ignore_index=PAD)


def test_train_step_returns_the_loss_before_the_update_as_a_float(stage):
    model, batch = tiny_setup(stage)
    with torch.no_grad():
        expected = loss_fn(model(batch.src, batch.tgt_in, batch.src_mask, batch.tgt_mask), batch.tgt_out).item()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    got = stage.train_step(model, batch, loss_fn, optimizer)
    if not isinstance(got, float):
        fail(f"train_step: expected a Python float, got {type(got).__name__}",
             "Return loss.item(), not the tensor (a tensor keeps the whole graph alive).")
    if abs(got - expected) > 1e-6:
        fail(f"train_step's loss: expected {expected:.6f} (loss_fn(model(src, tgt_in, ...), tgt_out)), got {got:.6f}",
             HINT_STEP + " " + HINT_SHIFT)


def test_train_step_applies_the_gradient_of_this_batch_only(stage):
    """Stale gradients from before must be cleared: with SGD(lr=0.1) every parameter moves by exactly -0.1 * grad."""
    model, batch = tiny_setup(stage)
    twin = copy.deepcopy(model)
    loss_fn(twin(batch.src, batch.tgt_in, batch.src_mask, batch.tgt_mask), batch.tgt_out).backward()
    expected = {name: p.detach() - 0.1 * p.grad for name, p in twin.named_parameters()}
    for p in model.parameters():
        p.grad = torch.full_like(p, 5.0)  # stale gradients left over from some earlier step
    stage.train_step(model, batch, loss_fn, torch.optim.SGD(model.parameters(), lr=0.1))
    for name, p in model.named_parameters():
        assert_close(p.detach(), expected[name], f"parameter {name} after one SGD step", atol=1e-6,
                     hint="Are the gradients zeroed first (optimizer.zero_grad())? Otherwise stale gradients are "
                          "added to this batch's. " + HINT_STEP)


def test_train_step_steps_the_scheduler_once(stage):
    model, batch = tiny_setup(stage)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    stage.train_step(model, batch, loss_fn, optimizer, scheduler)
    assert_equal(scheduler.last_epoch, 1, "scheduler steps taken by one train_step",
                 hint="Call scheduler.step() once, after optimizer.step(), when a scheduler is given. " + HINT_STEP)
    stage.train_step(model, batch, loss_fn, optimizer, None)  # no scheduler: must not fail


def test_train_step_clips_the_gradient_norm(stage):
    model, batch = tiny_setup(stage)
    before = [p.detach().clone() for p in model.parameters()]
    stage.train_step(model, batch, loss_fn, torch.optim.SGD(model.parameters(), lr=1.0), clip=1e-3)
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    if moved == 0:
        fail("train_step did not change the parameters", HINT_STEP)
    if moved > 1e-3 * (1 + 1e-4):
        fail(f"with clip=1e-3 and SGD(lr=1), the parameters moved by norm {moved.item():.4g}; expected at most 1e-3",
             "Clip with nn.utils.clip_grad_norm_(model.parameters(), clip) after backward and before optimizer.step().")


# --- greedy_decode, on a scripted fake model ---------------------------------------------------------------


class ScriptedModel(nn.Module):
    """A fake EncoderDecoder whose next token depends only on the token fed in last, per row.

    encode returns a (B, V) transition table (the src tensor itself); decode returns, for every
    position, a one-hot "state" (times 10) of table[row, token at that position]; the generator is
    the identity, so logits[:, i] point at the successor of the token at position i.
    """

    def __init__(self):
        super().__init__()
        self.generator = nn.Identity()

    def encode(self, src, src_mask):
        return src

    def decode(self, memory, src_mask, tgt, tgt_mask):
        successor = memory.gather(1, tgt)  # (B, L)
        return 10.0 * F.one_hot(successor, V).float()


def table(chain: dict[int, int]) -> list[int]:
    """A transition row: token -> next token; anything not listed goes to 13 (a real token)."""
    return [chain.get(token, 13) for token in range(V)]


ROWS = [
    table({BOS: 4, 4: 5, 5: EOS, EOS: 9}),  # bos -> 4 -> 5 -> eos, and (if not stopped) eos -> 9
    table({BOS: 6, 6: EOS, EOS: 8}),  # bos -> 6 -> eos, and (if not stopped) eos -> 8
]


def decode(stage, rows, max_len):
    src = torch.tensor(rows)
    return stage.greedy_decode(ScriptedModel(), src, torch.ones(len(rows), 1, 1, V, dtype=torch.bool),
                               max_len, BOS, EOS, PAD)


def test_greedy_decode_feeds_back_the_last_argmax_and_stops_at_eos(stage):
    got = decode(stage, ROWS, max_len=10)
    got = assert_tensor(got, "greedy_decode result", shape=(2, 3), dtype=torch.long,
                        hint=HINT_STOP + " The leading bos is not returned. A row that never reaches eos: "
                        + HINT_FEEDBACK)
    assert_close(got, torch.tensor([[4, 5, EOS], [6, EOS, PAD]]), "greedy_decode ids", atol=0,
                 hint=HINT_FEEDBACK + " " + HINT_PAD_FINISHED)


def test_greedy_decode_pads_rows_that_have_finished(stage):
    """Row 1 says eos at step 2; the fake would then say 8, but a finished row must only pad."""
    got = decode(stage, ROWS, max_len=10)
    got = assert_tensor(got, "greedy_decode result", shape=(2, 3), dtype=torch.long, hint=HINT_STOP)
    assert_equal(got[1].tolist(), [6, EOS, PAD], "row 1 (finishes one step before row 0)", hint=HINT_PAD_FINISHED)


def test_greedy_decode_respects_max_len(stage):
    """A row that never says eos (4 -> 4 -> 4 ...) is cut at max_len tokens."""
    got = decode(stage, [table({BOS: 4, 4: 4})], max_len=5)
    got = assert_tensor(got, "greedy_decode result for a row without eos, max_len=5", shape=(1, 5), dtype=torch.long,
                        hint="Generate at most max_len tokens per row (eos included), not counting the leading bos.")
    assert_equal(got[0].tolist(), [4, 4, 4, 4, 4], "the row without eos", hint=HINT_FEEDBACK)


def test_greedy_decode_of_one_token(stage):
    got = decode(stage, [table({BOS: EOS})], max_len=10)
    got = assert_tensor(got, "greedy_decode when the first token is eos", shape=(1, 1), dtype=torch.long, hint=HINT_STOP)
    assert_equal(got[0].tolist(), [EOS], "the row that says eos first", hint=HINT_FEEDBACK)


# --- exact_match, hand-worked ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "predictions, targets, expected",
    [
        ([[4, 5, 2], [6, 2, 0]], [[4, 5, 2, 0], [6, 2, 0, 0]], 1.0),  # width differs only by padding: both match
        ([[4, 5, 2], [6, 2, 0]], [[4, 5, 2, 0], [6, 3, 2, 0]], 0.5),  # row 1 misses a token: 1 of 2
        ([[4, 5]], [[4, 5, 2]], 0.0),  # no eos yet: a missing position counts as pad, not eos
        ([[4, 5, 2, 7]], [[4, 5, 2]], 0.0),  # a token after eos where the target has padding
        ([[4, 9, 2], [6, 2, 0], [7, 2, 0], [8, 8, 2]], [[4, 5, 2], [6, 2, 0], [7, 2, 0], [8, 2, 0]], 0.5),
    ],
)
def test_exact_match_hand_worked(stage, predictions, targets, expected):
    got = stage.exact_match(torch.tensor(predictions), torch.tensor(targets), PAD)
    if not isinstance(got, float):
        fail(f"exact_match: expected a Python float, got {type(got).__name__}", "Return .item() of the mean.")
    assert_equal(got, expected, f"exact_match({predictions}, {targets})",
                 hint="A row counts only if EVERY position matches (pad both to the same width with pad_id first); "
                      "the result is the fraction of such rows, not of matching tokens.")


# --- the capstone: the model learns to copy, and to reverse ------------------------------------------------
#
# The verdict must not depend on rounding: a correct implementation rounds differently from ours (another
# CPU, another thread count, an equivalent rewrite), and its training takes another path. So the model is
# judged on JUDGED fresh strings against a pass mark well below what the reference reaches: in every one of
# REFERENCE_RUNS perturbed runs (seeds 0-9, two thread counts, initial weights moved by 1e-6, attention and
# loss written another way, other CPU kernels) its lowest judged accuracy was REFERENCE_LOWEST.
# `python -m benchmarks --only robustness` re-measures that; it judges with the functions below.

JUDGED = 500  # fresh strings, lengths 1 to 10, judged by greedy decoding written here
PASS_MARK = 0.90  # exact-match accuracy needed to pass
REFERENCE_LOWEST = 0.970  # the reference's lowest judged accuracy over REFERENCE_RUNS perturbed runs
REFERENCE_RUNS = 72  # (median 99.6%; measured with torch 2.13.0, December 2026)


def judge(stage, model, reverse: bool, n: int = JUDGED, seed: int = 12345) -> tuple[float, list[str]]:
    """Greedy-decode fresh random strings with a decoder written here; return accuracy and a few misses."""
    rng = random.Random(seed)
    letters = stage.SYMBOLS
    strings = [[rng.choice(letters) for _ in range(rng.randint(1, 10))] for _ in range(n)]
    ids = {s: 4 + i for i, s in enumerate(letters)}
    src = torch.zeros(n, 10, dtype=torch.long)
    for row, string in enumerate(strings):
        src[row, : len(string)] = torch.tensor([ids[s] for s in string])
    src_mask = (src != PAD).view(n, 1, 1, 10)
    model.eval()
    with torch.no_grad():
        memory = model.encode(src, src_mask)
        ys = torch.full((n, 1), BOS, dtype=torch.long)
        for _ in range(11):
            causal = torch.ones(ys.size(1), ys.size(1), dtype=torch.bool).tril()
            logits = model.generator(model.decode(memory, src_mask, ys, causal)[:, -1])
            ys = torch.cat([ys, logits.argmax(dim=-1, keepdim=True)], dim=1)
    right, misses = 0, []
    for row, string in enumerate(strings):
        wanted = [ids[s] for s in (string[::-1] if reverse else string)] + [EOS]
        got = ys[row, 1: len(wanted) + 1].tolist()
        if got == wanted:
            right += 1
        elif len(misses) < 3:
            misses.append(f"{''.join(string)} -> {got} (expected {wanted})")
    return right / n, misses


def check_capstone(stage, reverse: bool):
    """Train with the default recipe, then judge on fresh strings; every failure states the margin."""
    config = stage.CopyTaskConfig(reverse=reverse)
    result = stage.train_copy_task(config)
    if not isinstance(result, stage.TrainingResult):
        fail(f"train_copy_task: expected a TrainingResult, got {type(result).__name__}", "Return TrainingResult(...).")
    if not 0 < result.steps <= min(config.max_steps, 1000):
        fail(f"train_copy_task took {result.steps} steps, expected between 1 and {min(config.max_steps, 1000)}",
             "Count the training steps taken; stop after `patience` perfect held-out checks in a row, or at max_steps.")
    if len(result.losses) != result.steps or not all(isinstance(x, float) for x in result.losses):
        fail(f"result.losses: expected {result.steps} floats (one per step), got {len(result.losses)} values",
             "Append train_step's return value at every step.")
    task = "reverse" if reverse else "copy"
    accuracy, misses = judge(stage, result.model, reverse)
    if accuracy < PASS_MARK:
        fail(f"after {result.steps} steps of the {task} task the model gets {accuracy:.1%} of {JUDGED} unseen strings "
             f"exactly right; the pass mark is {PASS_MARK:.0%} (the reference gets at least {REFERENCE_LOWEST:.1%} in "
             f"each of {REFERENCE_RUNS} perturbed runs); your own held-out check said {result.accuracy:.1%}; "
             f"e.g. {misses}",
             "Does training use teacher forcing with the right shift (tgt_in = bos + target, tgt_out = target + eos), "
             "the target mask from tgt_in, Adam with the decayed Noam schedule, and a fresh batch each step? Does "
             "your greedy_decode feed back the last position's argmax? "
             + ("For the reverse task, is every target the source reversed (s[::-1])? " if reverse else "") + HINT_STEP)
    if result.accuracy < PASS_MARK:
        fail(f"train_copy_task reports held-out accuracy {result.accuracy}, but the model gets {accuracy:.1%} of "
             f"{JUDGED} unseen strings right",
             "result.accuracy is the last held-out exact match: is exact_match computed on greedy_decode's output "
             "against tgt_out?")


def test_capstone_the_model_learns_to_copy(stage):
    """The default recipe (2 layers, d_model 32) copies unseen strings of 1 to 10 symbols."""
    check_capstone(stage, reverse=False)


def test_capstone_the_model_learns_to_reverse(stage):
    """The same recipe learns to write unseen strings backwards (it must find each string's length)."""
    check_capstone(stage, reverse=True)
