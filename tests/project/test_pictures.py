"""`python -m grader.pictures` draws a trained copy model, and what it draws is the model's attention.

The recorded weights are checked against the module's own output (they must reproduce it), and
a trained copy model must show the diagonal a person expects in cross-attention.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import preloaded
import pytest
import torch

from grader import curriculum, pictures

ROOT = curriculum.ROOT
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILES = ["encoder_self_attention.png", "decoder_self_attention.png", "cross_attention.png",
         "noam_schedule.png", "training_loss.png"]


def assert_valid_png(path):
    """Signature, then an IHDR chunk with a non-zero width and height, then an IEND at the end."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name}: not a PNG (starts with {data[:8]!r})"
    length, kind = struct.unpack(">I4s", data[8:16])
    width, height = struct.unpack(">II", data[16:24])
    assert kind == b"IHDR" and length == 13, f"{path.name}: first chunk is {kind!r}, expected IHDR"
    assert width > 100 and height > 100, f"{path.name}: image is {width}x{height}, expected a real picture"
    assert data[-8:-4] == b"IEND", f"{path.name}: truncated (no IEND chunk at the end)"


@pytest.fixture(scope="module")
def trained():
    """A 1-layer copy model, trained until it is (nearly) always right (about 8 s on one core)."""
    copy_task, schedule, substituted = pictures.load_capstone(curriculum.REFERENCE)
    assert substituted == [], f"the reference needs no substitutes, got {substituted}"
    torch.set_num_threads(1)
    config = copy_task.CopyTaskConfig(n_layers=1, max_steps=600)  # one layer learns slower: a longer schedule
    result = copy_task.train_copy_task(config)
    assert result.accuracy >= 0.95, f"the reference should learn to copy; reached {result.accuracy:.1%} in {result.steps} steps"
    return copy_task, schedule, config, result


@pytest.mark.slow
def test_command_writes_five_valid_pngs(tmp_path):
    out = tmp_path / "pictures"
    done = subprocess.run([*preloaded.python_m(dict(os.environ)), "grader.pictures", "--out", str(out), "--steps", "20",
                           "--layers", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"expected exit 0, got {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES), f"got {sorted(p.name for p in out.iterdir())}"
    for name in FILES:
        assert_valid_png(out / name)
        assert f"wrote {out / name}" in done.stdout, f"{name} not announced:\n{done.stdout}"


def test_missing_matplotlib_prints_the_install_line_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    out = tmp_path / "pictures"
    with pytest.raises(SystemExit) as stopped:
        pictures.main(["--out", str(out)])
    assert stopped.value.code == 2, f"expected exit 2, got {stopped.value.code!r}"
    err = capsys.readouterr().err
    assert err.strip() == "pictures need matplotlib: python -m pip install matplotlib", f"got {err!r}"
    assert not out.exists(), "nothing should be trained or written without matplotlib"


def test_bad_impl_is_a_usage_error(tmp_path, capsys):
    code = pictures.main(["--out", str(tmp_path), "--impl", str(tmp_path / "nowhere")])
    assert code == 2, f"expected exit 2, got {code!r}"
    assert "no such directory" in capsys.readouterr().err


def test_stub_stages_are_replaced_by_the_reference_and_named(tmp_path):
    """A tree where only stage 3 is written (a copy of the reference) and the rest are stubs."""
    from grader import stubgen

    part1 = [s for s in curriculum.load() if s.part == 1]
    stubgen.generate(curriculum.REFERENCE, tmp_path, part1)
    (tmp_path / "s03_attention.py").write_text((curriculum.REFERENCE / "s03_attention.py").read_text())
    copy_task, _, substituted = pictures.load_capstone(tmp_path)
    part1 = [s.id for s in part1]
    assert substituted == [s for s in part1 if s != "s03_attention"], f"got {substituted}"
    assert hasattr(copy_task, "train_copy_task")


def test_recorded_weights_reproduce_each_attention_modules_output():
    """weights @ V, heads merged and projected, must equal what the module returned: then the
    recomputed weights are exactly the ones the module used. Padding is included so masks count."""
    copy_task, _, _ = pictures.load_capstone(curriculum.REFERENCE)
    torch.manual_seed(0)
    vocab = copy_task.Vocab(copy_task.SYMBOLS)
    model = copy_task.EncoderDecoder(copy_task.TransformerConfig(len(vocab), len(vocab), 16, 2, 2, 32, 0.0, 12)).eval()
    batch = copy_task.make_batch([list("abc"), list("hgfedcb")], [list("abc"), list("hgfedcb")], vocab)
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, n=name: seen.__setitem__(n, (args, out)))
             for name, m in model.named_modules() if pictures.is_attention(m)]
    with torch.no_grad(), pictures.AttentionRecorder(model) as recorder:
        model(batch.src, batch.tgt_in, batch.src_mask, batch.tgt_mask)
    for hook in hooks:
        hook.remove()
    assert sorted(recorder.weights) == sorted(seen) and len(seen) == 6, f"recorded {sorted(recorder.weights)}"
    for name, (args, output) in seen.items():
        module, weights = dict(model.named_modules())[name], recorder.weights[name]
        query, value = args[0], args[2]
        assert weights.shape == (2, 2, query.size(1), value.size(1)), f"{name}: shape {tuple(weights.shape)}"
        with torch.no_grad():
            rebuilt = module.out_proj(module.merge_heads(weights @ module.split_heads(module.v_proj(value))))
        assert torch.allclose(rebuilt, output, atol=1e-5), \
            f"{name}: weights do not reproduce the output (max diff {(rebuilt - output).abs().max():.2e})"
        assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5), f"{name}: rows do not sum to one"
    assert len(recorder.handles) == 0 and all(not m._forward_hooks for m in model.modules()), \
        "the recorder must remove its hooks on exit"
    cross = recorder.weights["decoder.layers.0.cross_attn"]
    assert torch.equal(cross[0, :, :, 3:], torch.zeros_like(cross[0, :, :, 3:])), \
        "padding keys of the short source must get exactly zero weight"


@pytest.mark.slow
def test_trained_copy_model_attends_along_the_diagonal(trained, tmp_path):
    """Output position t writes source token t, so its cross-attention (averaged over heads) should
    peak at source position t. Checked on the drawn example and on ten more strings."""
    copy_task, schedule, config, result = trained
    import random

    rng = random.Random(1)
    strings = [list(pictures.EXAMPLE)] + copy_task.random_strings(10, 6, 10, rng)
    copied = []
    for source in strings:
        example = pictures.record_example(copy_task, result.model, result.vocab, source)
        copied.append(example["output"] == source)
        cross = example["weights"]["decoder.layers.0.cross_attn"]  # (H, T, S)
        peaks = cross.mean(dim=0).argmax(dim=-1)[: len(source)].tolist()  # the last position writes eos
        on_diagonal = sum(p == t for t, p in enumerate(peaks))
        assert on_diagonal >= 0.8 * len(source), \
            f"{''.join(source)}: cross-attention peaks at {peaks}, expected mostly {list(range(len(source)))}"
        assert pictures.diagonal_fraction(cross) == on_diagonal / len(source)
    # 100% on the held-out set does not promise every string (these are up to 10 long), but most
    assert sum(copied) >= 8, f"the trained model copied only {sum(copied)} of {len(strings)} strings exactly"

    written, _ = pictures.write_pictures(pictures.import_pyplot(), copy_task, schedule, result, config,
                                         list(pictures.EXAMPLE), tmp_path)
    assert sorted(p.name for p in written) == sorted(FILES)
    for path in written:
        assert_valid_png(path)
