"""sample.py: the command line a class uses."""
import os
import pickle
import subprocess
import sys

import pytest
import torch

import checkpoint
import sample
from conftest import ROOT, make_tiny_model
from test_checkpoint import nanogpt_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random model saved as a checkpoint of ours."""
    from conftest import META
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    checkpoint.save(str(path), make_tiny_model(), META)
    return str(path)


def run(*args):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), *args], capture_output=True,
                            text=True, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def run_main(capsys, *args):
    assert sample.main(list(args)) == 0
    return capsys.readouterr().out


def test_shipped_model_speaks_shakespeare():
    result = run("--max_new_tokens", "300", "--start", "ROMEO:")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 300 + 1  # and the final newline
    words = text.split()
    common = {"the", "and", "to", "of", "my", "I", "a", "you", "that", "is", "in", "not", "with", "me", "be"}
    assert sum(w in common for w in words) >= 5, text


def test_same_seed_same_text_other_seed_other_text(ckpt, capsys):
    a = run_main(capsys, "--ckpt", ckpt, "--max_new_tokens", "40", "--seed", "7")
    b = run_main(capsys, "--ckpt", ckpt, "--max_new_tokens", "40", "--seed", "7")
    c = run_main(capsys, "--ckpt", ckpt, "--max_new_tokens", "40", "--seed", "8")
    assert a == b and a != c


def test_batched_sample_i_equals_a_single_run_with_seed_plus_i(ckpt, capsys):
    batch = run_main(capsys, "--ckpt", ckpt, "--max_new_tokens", "30", "--num_samples", "3", "--seed", "5",
                     "--repetition_penalty", "1.3", "--top_p", "0.9")
    samples = batch.rstrip("\n").split("\n---------------\n")
    assert len(samples) == 3
    for i, text in enumerate(samples):
        alone = run_main(capsys, "--ckpt", ckpt, "--max_new_tokens", "30", "--seed", str(5 + i),
                         "--repetition_penalty", "1.3", "--top_p", "0.9")
        assert alone.rstrip("\n") == text


def test_temperature_zero_is_greedy_and_needs_no_seed(ckpt, capsys):
    a = run_main(capsys, "--ckpt", ckpt, "--max_new_tokens", "30", "--temperature", "0", "--seed", "1")
    b = run_main(capsys, "--ckpt", ckpt, "--max_new_tokens", "30", "--temperature", "0", "--seed", "2")
    model, meta, _ = checkpoint.load(ckpt)
    idx = torch.tensor([[meta["stoi"]["\n"]]])
    for _ in range(30):  # greedy by hand: argmax of the last position
        idx = torch.cat([idx, model(idx[:, -16:])[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert a == b == checkpoint.decode(idx[0], meta["itos"]) + "\n"


def test_beam_search(ckpt, capsys):
    out = run_main(capsys, "--ckpt", ckpt, "--max_new_tokens", "20", "--num_beams", "3", "--num_samples", "2")
    assert out.count("[beam ") == 2 and "[beam 1 of 3, log-probability / length^1 = " in out


def test_walkthrough_is_the_lesson(ckpt, capsys):
    out = run_main(capsys, "--ckpt", ckpt, "--walkthrough", "--start", "\\nAnd Nero ", "--max_new_tokens", "10")
    titles = [line for line in out.splitlines() if line[:2] in ("1.", "2.", "3.", "4.", "5.")]
    assert [t.split(":")[0] for t in titles] == ["1. greedy", "2. multinomial sampling", "3. temperature",
                                                 "4. top-k", "5. repetition penalty"]
    assert "ids [0, 13, 52, 42, 1, 26, 43, 56, 53, 1], shape (1, 10)" in out
    assert "step 1: ids (1, 10) -> model -> logits (1, 10, 65) -> last position (1, 65)" in out
    assert "after temperature 2:" in out and "after top-k 5:" in out and "after repetition penalty 1.3:" in out
    assert "(5 of 65 characters can be drawn)" in out  # top-k 5 leaves five
    assert "'⏎And·Nero·" in out  # newline and spaces made visible


def test_walkthrough_of_one_strategy(ckpt, capsys):
    out = run_main(capsys, "--ckpt", ckpt, "--walkthrough", "--top_p", "0.5", "--min_p", "0.2",
                   "--max_new_tokens", "5", "--steps", "2")
    assert out.count("after top-p 0.5:") == 2 and "step 3:" not in out and "1. greedy" not in out


@pytest.mark.parametrize("new_tokens, cache", [(10, []), (40, ["--no_cache"])])
def test_walkthrough_draws_what_plain_sampling_draws(ckpt, capsys, new_tokens, cache):
    """The walkthrough reads the whole context each step; so does plain sampling without the cache, and
    with it the same within block_size (16 here: 6 + 10), past which the cache restarts from half a window."""
    flags = ["--ckpt", ckpt, "--top_k", "20", "--max_new_tokens", str(new_tokens), "--start", "ROMEO:"]
    walked = run_main(capsys, "--walkthrough", *flags)
    plain = run_main(capsys, *flags, *cache)
    assert walked.rstrip("\n").endswith("\n" + plain.rstrip("\n"))


def test_compare_runs_every_strategy(ckpt, capsys):
    out = run_main(capsys, "--ckpt", ckpt, "--compare", "--max_new_tokens", "30")
    for name in ["greedy", "pure sampling", "temperature 0.7", "top-k 10", "top-p 0.9", "min-p 0.1",
                 "greedy + repetition penalty 1.3", "beam search, 4 beams"]:
        assert f"=== {name}" in out
    assert out.count("--- ") == 8 and "distinct" in out


def test_nanogpt_checkpoint_with_meta(tmp_path, meta, capsys):
    torch.save(nanogpt_checkpoint(make_tiny_model()), tmp_path / "ckpt.pt")
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)
    out = run_main(capsys, "--ckpt", str(tmp_path / "ckpt.pt"), "--meta", str(tmp_path / "meta.pkl"),
                   "--max_new_tokens", "10")
    assert len(out) == 1 + 10 + 1


@pytest.mark.parametrize("flag, value, message", [
    ("--temperature", "-0.5", "temperature must be >= 0"),
    ("--top_k", "0", "top_k must be >= 1"),
    ("--top_p", "0", "top_p must be in (0, 1]"),
    ("--top_p", "1.5", "top_p must be in (0, 1]"),
    ("--min_p", "-0.1", "min_p must be in [0, 1]"),
    ("--min_p", "2", "min_p must be in [0, 1]"),
    ("--typical_p", "0", "typical_p must be in (0, 1]"),
    ("--repetition_penalty", "0", "repetition_penalty must be > 0"),
    ("--repetition_penalty", "-1.2", "repetition_penalty must be > 0"),
    ("--frequency_penalty", "3", "frequency_penalty must be in [-2, 2]"),
    ("--no_repeat_ngram_size", "-1", "no_repeat_ngram_size must be >= 0"),
    ("--num_beams", "0", "num_beams must be >= 1"),
    ("--max_new_tokens", "-1", "max_new_tokens must be >= 0"),
    ("--num_samples", "0", "num_samples must be >= 1"),
    ("--top_k", "many", "invalid int value"),
])
def test_out_of_range_flags_exit_2_with_one_line(ckpt, flag, value, message):
    result = run("--ckpt", ckpt, flag, value)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_unknown_prompt_characters_are_named(ckpt):
    result = run("--ckpt", ckpt, "--start", "Über € café")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "'Ü' 'é' '€'" in lines[0] and "abcdefghijklmnopqrstuvwxyz" in lines[0]


@pytest.mark.parametrize("content", [None, b"", b"PK\x03\x04 half a zip"])
def test_missing_or_corrupt_checkpoint(tmp_path, content):
    path = tmp_path / "ckpt.pt"
    if content is not None:
        path.write_bytes(content)
    result = run("--ckpt", str(path))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and str(path) in result.stderr


def test_meta_that_does_not_match(ckpt, meta, tmp_path):
    meta["itos"] = {i: c for i, c in enumerate(reversed(list(meta["itos"].values())))}
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)
    result = run("--ckpt", ckpt, "--meta", str(tmp_path / "meta.pkl"))
    assert result.returncode == 1 and "does not match" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
