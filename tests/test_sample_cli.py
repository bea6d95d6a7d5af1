"""sample.py: the command line a class uses, and every way a careless hand can misuse it."""
import os
import pickle
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import checkpoint
import sample
from conftest import META, ROOT, ctrl_c_reaches_it, make_tiny_model
from test_checkpoint import nanogpt_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random model saved as a checkpoint of ours."""
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


def failure(capsys, *args):
    """(exit status, the one line on stderr) of a run that must fail."""
    try:
        status = sample.main(list(args))
    except SystemExit as e:  # argparse's errors
        status = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return status, lines[0]


def test_shipped_model_speaks_shakespeare():
    result = run("--max_new_tokens", "300", "--start", "ROMEO:")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 300 + 1  # and the final newline
    words = text.split()
    common = {"the", "and", "to", "of", "my", "I", "a", "you", "that", "is", "in", "not", "with", "me", "be"}
    assert sum(w in common for w in words) >= 5, text


def test_ctrl_c_stops_quietly_with_status_130():
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "sample.py"), "--max_new_tokens", "1000000",
                                "--no_cache"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=ctrl_c_reaches_it)
    assert process.stdout.read(20)  # it is writing
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err and err.strip() == ""


def test_same_seed_same_text_other_seed_other_text(ckpt, capsys):
    a = run_main(capsys, "--ckpt", ckpt, "--max_new_tokens", "40", "--seed", "7")
    b = run_main(capsys, "--ckpt", ckpt, "--max_new_tokens", "40", "--seed", "7")
    c = run_main(capsys, "--ckpt", ckpt, "--max_new_tokens", "40", "--seed", "8")
    assert a == b and a != c


def test_batched_sample_i_equals_a_single_run_with_seed_plus_i(ckpt, capsys):
    flags = ["--ckpt", ckpt, "--max_new_tokens", "30", "--repetition_penalty", "1.3", "--top_p", "0.9",
             "--xtc_probability", "0.5", "--xtc_threshold", "0.05"]
    batch = run_main(capsys, *flags, "--num_samples", "3", "--seed", "5")
    samples = batch.rstrip("\n").split("\n---------------\n")
    assert len(samples) == 3
    for i, text in enumerate(samples):
        alone = run_main(capsys, *flags, "--seed", str(5 + i))
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
    assert out.count("[beam ") == 2 and "[beam 1 of 3: log-probability / 20^1 = " in out


# ----------------------------------------------------------------------------- stop strings and logprobs

def test_stop_strings_end_each_sample_and_are_not_printed(capsys):
    """On the shipped model: three samples that end at a blank line, each as it would be alone."""
    flags = ["--stop", "\\n\\n", "--max_new_tokens", "300", "--seed", "12"]
    batch = run_main(capsys, *flags, "--num_samples", "3").rstrip("\n").split("\n---------------\n")
    assert len(batch) == 3
    for i, text in enumerate(batch):
        generated = text[1:]  # after the prompt, "\n"
        assert "\n\n" not in generated and len(generated) <= 300, text  # the stop string is cut
        assert run_main(capsys, *flags[:-1], str(12 + i)).rstrip("\n") == text  # rows stop independently
    assert sum(len(text) < 1 + 300 for text in batch) >= 2, batch  # most speeches end before 300 characters


def test_a_stop_string_that_never_completes_holds_nothing_back(ckpt, capsys):
    """'Zz' begins with a character the text may end on: whatever was held back is printed in the end."""
    plain = run_main(capsys, "--ckpt", ckpt, "--max_new_tokens", "60", "--seed", "2")
    stopped = run_main(capsys, "--ckpt", ckpt, "--max_new_tokens", "60", "--seed", "2", "--stop", "Zz")
    assert "Zz" not in plain and stopped == plain


def test_beam_search_hypotheses_end_at_the_stop_string_and_the_length_penalty_matters(capsys):
    flags = ["--num_beams", "4", "--stop", "\\n", "--start", "ROMEO:\\nI", "--max_new_tokens", "80"]
    short = run_main(capsys, *flags, "--length_penalty", "0")
    long = run_main(capsys, *flags, "--length_penalty", "2")
    first = [out.split("\n---------------\n")[0].splitlines()[1:] for out in (short, long)]
    assert all(len(lines) == 2 and lines[0] == "ROMEO:" for lines in first)  # one line each: the stop cut it
    assert len(first[1][1]) > len(first[0][1])  # a penalty > 0 favours the longer hypothesis


def test_greedy_says_which_settings_hugging_face_s_order_ignores(ckpt, capsys):
    """With --temperature 0, Hugging Face's order applies no warper (do_sample=False); a typical
    cut, which llama.cpp's order applies before the argmax, can change the text."""
    greedy = ["--ckpt", ckpt, "--max_new_tokens", "40", "--temperature", "0"]
    assert sample.main(greedy + ["--typical_p", "0.2"]) == 0
    hf = capsys.readouterr()
    assert hf.err == "note: greedy decoding in Hugging Face's order ignores --typical_p " \
                     "(--order llama.cpp applies them before taking the argmax)\n"
    assert hf.out == run_main(capsys, *greedy)
    assert sample.main(greedy + ["--typical_p", "0.2", "--order", "llama.cpp"]) == 0
    llama = capsys.readouterr()
    assert llama.err == "" and llama.out != hf.out


def test_logprobs_are_those_of_the_distribution_drawn_from(ckpt, capsys):
    """Greedy with a repetition penalty: each logprob is log_softmax of the penalised logits, by hand."""
    out = run_main(capsys, "--ckpt", ckpt, "--max_new_tokens", "5", "--temperature", "0",
                   "--repetition_penalty", "1.5", "--logprobs", "2")
    model, meta, _ = checkpoint.load(ckpt)
    idx = torch.tensor([[meta["stoi"]["\n"]]])
    rows = [line.split() for line in out.splitlines()[4:]]  # after the text (2 lines), a title and a header
    assert len(rows) == 5
    for row in rows:
        z = model(idx)[0][0, -1]  # (V,)
        seen = idx[0].unique()
        z[seen] = torch.where(z[seen] > 0, z[seen] / 1.5, z[seen] * 1.5)
        log_p = F.log_softmax(z, dim=-1)
        chosen = int(log_p.argmax())
        assert float(row[2]) == pytest.approx(log_p[chosen].item(), abs=1e-3)
        assert float(row[4]) == pytest.approx(log_p.max().item(), abs=1e-3)  # the first alternative is the argmax
        idx = torch.cat([idx, torch.tensor([[chosen]])], dim=1)


# ----------------------------------------------------------------------------- the lessons

def test_walkthrough_is_the_lesson(ckpt, capsys):
    out = run_main(capsys, "--ckpt", ckpt, "--walkthrough", "--start", "\\nAnd Nero ", "--max_new_tokens", "10")
    titles = [line for line in out.splitlines() if line[:2] in ("1.", "2.", "3.", "4.", "5.")]
    assert [t.split(":")[0] for t in titles] == ["1. greedy", "2. multinomial sampling", "3. temperature",
                                                 "4. top-k", "5. repetition penalty"]
    assert "ids [0, 13, 52, 42, 1, 26, 43, 56, 53, 1], shape (1, 10)" in out
    assert "step 1: ids (1, 10) -> model -> logits (1, 10, 65) -> last position (1, 65)" in out
    assert "step 2: ids (1, 1) -> model + KV cache -> logits (1, 1, 65) -> last position (1, 65)" in out
    assert "after temperature 2:" in out and "after top-k 5:" in out and "after repetition penalty 1.3:" in out
    assert "(5 of 65 characters can be drawn)" in out  # top-k 5 leaves five
    assert "'⏎And·Nero·" in out  # newline and spaces made visible


def test_walkthrough_of_one_strategy(ckpt, capsys):
    out = run_main(capsys, "--ckpt", ckpt, "--walkthrough", "--top_p", "0.5", "--min_p", "0.2",
                   "--max_new_tokens", "5", "--steps", "2")
    assert out.count("after top-p 0.5:") == 2 and "step 3:" not in out and "1. greedy" not in out


def test_walkthrough_shows_the_other_order_when_it_differs(capsys):
    """Temperature 2 then top-p 0.5 keeps 7 characters after the article's prompt on the shipped
    model; llama.cpp's order (top-p at temperature 1, temperature last) keeps 3."""
    out = run_main(capsys, "--walkthrough", "--temperature", "2", "--top_p", "0.5", "--steps", "1",
                   "--max_new_tokens", "1")
    assert "after top-p 0.5:" in out and "(7 of 65 characters can be drawn)" in out
    assert "in llama.cpp's order (--order llama.cpp) end with another distribution" in out
    assert "(3 of 65 characters can be drawn)" in out
    same = run_main(capsys, "--walkthrough", "--temperature", "2", "--top_k", "5", "--steps", "1",
                    "--max_new_tokens", "1")
    assert "order" not in same  # top-k does not care where the temperature is


@pytest.mark.parametrize("new_tokens, cache", [(10, []), (40, ["--no_cache"])])
def test_walkthrough_draws_what_plain_sampling_draws(ckpt, capsys, new_tokens, cache):
    flags = ["--ckpt", ckpt, "--top_k", "20", "--max_new_tokens", str(new_tokens), "--start", "ROMEO:", *cache]
    walked = run_main(capsys, "--walkthrough", *flags)
    plain = run_main(capsys, *flags)
    assert walked.rstrip("\n").endswith("\n" + plain.rstrip("\n"))


def test_compare_runs_every_strategy(ckpt, capsys):
    out = run_main(capsys, "--ckpt", ckpt, "--compare", "--max_new_tokens", "30")
    names = [name for name, _ in sample.COMPARE] + ["beam search, 4 beams"]
    for name in names:
        assert f"=== {name}" in out
    assert out.count("--- ") == len(names) and "distinct" in out


def test_compare_with_no_new_tokens(ckpt, capsys):
    out = run_main(capsys, "--ckpt", ckpt, "--compare", "--max_new_tokens", "0")
    assert out.count("--- 0 words") == len(sample.COMPARE) + 1


def test_nanogpt_checkpoint_with_meta(tmp_path, meta, capsys):
    torch.save(nanogpt_checkpoint(make_tiny_model()), tmp_path / "ckpt.pt")
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)
    out = run_main(capsys, "--ckpt", str(tmp_path / "ckpt.pt"), "--meta", str(tmp_path / "meta.pkl"),
                   "--max_new_tokens", "10")
    assert len(out) == 1 + 10 + 1


# ----------------------------------------------------------------------------- bad input: one line, exit 2

@pytest.mark.parametrize("flag, value, message", [
    ("--temperature", "-0.5", "temperature must be 0 or in [0.001, 1000]"),
    ("--temperature", "1e-300", "temperature must be 0 or in [0.001, 1000]"),  # would overflow the logits
    ("--temperature", "inf", "temperature must be"),
    ("--top_k", "0", "top_k must be >= 1"),
    ("--top_p", "0", "top_p must be in (0, 1]"),
    ("--top_p", "1.5", "top_p must be in (0, 1]"),
    ("--min_p", "-0.1", "min_p must be in [0, 1]"),
    ("--typical_p", "0", "typical_p must be in (0, 1]"),
    ("--repetition_penalty", "0", "repetition_penalty must be in [0.001, 1000]"),
    ("--repetition_penalty", "1e-40", "repetition_penalty must be in [0.001, 1000]"),  # would overflow
    ("--frequency_penalty", "3", "frequency_penalty must be in [-2, 2]"),
    ("--presence_penalty", "nan", "presence_penalty must be in [-2, 2]"),
    ("--no_repeat_ngram_size", "-1", "no_repeat_ngram_size must be in [0, 10000]"),
    ("--penalty_last_n", "0", "penalty_last_n must be >= 1"),
    ("--epsilon_cutoff", "1", "epsilon_cutoff must be in (0, 1)"),
    ("--eta_cutoff", "0", "eta_cutoff must be in (0, 1)"),
    ("--top_n_sigma", "-1", "top_n_sigma must be in (0, 100]"),
    ("--xtc_threshold", "1.5", "xtc_threshold must be in [0, 1]"),
    ("--xtc_probability", "-0.1", "xtc_probability must be in [0, 1]"),
    ("--dry_multiplier", "-0.8", "dry_multiplier must be in [0, 100]"),
    ("--dry_base", "0.5", "dry_base must be in [1, 10]"),
    ("--dry_allowed_length", "-1", "dry_allowed_length must be in [0, 1000]"),
    ("--dynatemp_range", "-1", "dynatemp_range must be in [0, 1000]"),
    ("--mirostat", "1", "mirostat must be 0 or 2"),
    ("--mirostat_tau", "0", "mirostat_tau must be in (0, 100]"),
    ("--mirostat_eta", "2", "mirostat_eta must be in (0, 1]"),
    ("--logit_bias", "e:-500", "logit_bias must be each bias in [-100, 100]"),
    ("--logit_bias", "e=-5", "write CHAR:BIAS entries separated by commas"),
    ("--logit_bias", "ee:-5", "write CHAR:BIAS entries separated by commas"),
    ("--stop", "", "stop must be non-empty strings"),
    ("--order", "vllm", "invalid choice"),
    ("--num_beams", "0", "num_beams must be in [1, 64]"),
    ("--num_beams", "100000", "num_beams must be in [1, 64]"),  # would allocate tens of GB
    ("--num_samples", "0", "num_samples must be in [1, 1000]"),
    ("--num_samples", "100000", "num_samples must be in [1, 1000]"),
    ("--max_new_tokens", "-1", "max_new_tokens must be in [0, 1000000]"),
    ("--seed", "99999999999999999999999", "seed must be in [0, "),
    ("--seed", "-1", "seed must be in [0, "),
    ("--length_penalty", "1000", "length_penalty must be in [-10, 10]"),
    ("--length_penalty", "nan", "length_penalty must be in [-10, 10]"),
    ("--logprobs", "-1", "logprobs must be in [0, "),
    ("--logprobs", "66", "logprobs must be in [0, 65]"),
    ("--top_k", "many", "invalid int value"),
])
def test_out_of_range_flags_exit_2_with_one_line(ckpt, capsys, flag, value, message):
    status, line = failure(capsys, "--ckpt", ckpt, flag, value)
    assert status == 2 and message in line, line


@pytest.mark.parametrize("flags, message", [
    (["--mirostat", "2", "--top_k", "5"], "mirostat chooses its own cut: drop top_k"),
    (["--mirostat", "2", "--temperature", "0"], "mirostat needs a temperature > 0"),
    (["--mirostat", "2", "--order", "llama.cpp", "--repetition_penalty", "1.2"],
     "llama.cpp applies no penalties when mirostat is on"),
    (["--dynatemp_range", "0.5", "--temperature", "0"], "dynatemp_range needs a temperature > 0"),
    (["--walkthrough", "--compare"], "choose one of --walkthrough and --compare"),
])
def test_combinations_without_a_meaning_exit_2_with_one_line(ckpt, capsys, flags, message):
    status, line = failure(capsys, "--ckpt", ckpt, *flags)
    assert status == 2 and message in line, line


@pytest.mark.parametrize("flag, value", [("--start", "Über € café"), ("--logit_bias", "é:-5"), ("--stop", "€")])
def test_characters_outside_the_vocabulary_are_named(ckpt, capsys, flag, value):
    status, line = failure(capsys, "--ckpt", ckpt, flag, value)
    assert status == 2 and line.startswith(f"error: {flag}: characters not in the vocabulary")
    assert "abcdefghijklmnopqrstuvwxyz" in line


def test_an_empty_prompt(ckpt, capsys):
    assert failure(capsys, "--ckpt", ckpt, "--start", "") == (2, "error: --start is empty: give at least one character")


@pytest.mark.parametrize("device, message", [("bogus", "is not a device PyTorch knows"),
                                             ("cuda", "PyTorch sees no CUDA GPU"), ("mps", "no Apple GPU")])
def test_a_device_this_machine_lacks_is_named_not_the_checkpoint(ckpt, capsys, device, message):
    if device == "cuda" and torch.cuda.is_available() or device == "mps" and torch.backends.mps.is_available():
        pytest.skip(f"this machine has {device}")
    status, line = failure(capsys, "--ckpt", ckpt, "--device", device)
    assert status == 2 and message in line and "checkpoint" not in line


def test_a_row_with_nothing_left_to_draw_ends_with_a_note(ckpt, capsys):
    """No repeated 1-gram: after every one of the 65 characters has been written once, nothing is
    left. The sample ends there, with a note; no traceback, exit 0."""
    assert sample.main(["--ckpt", ckpt, "--no_repeat_ngram_size", "1", "--max_new_tokens", "200"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out) == 1 + 64 + 1  # the prompt "\n", the 64 other characters once each, a newline
    assert "ended after 64 characters: the settings left no character to draw" in captured.err


@pytest.mark.parametrize("content", [None, b"", b"PK\x03\x04 half a zip"])
def test_missing_or_corrupt_checkpoint(tmp_path, capsys, content):
    path = tmp_path / "ckpt.pt"
    if content is not None:
        path.write_bytes(content)
    status, line = failure(capsys, "--ckpt", str(path))
    assert status == 1 and str(path) in line


def test_meta_that_does_not_match(ckpt, meta, tmp_path, capsys):
    meta["itos"] = {i: c for i, c in enumerate(reversed(list(meta["itos"].values())))}
    meta["stoi"] = {c: i for i, c in meta["itos"].items()}
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)
    status, line = failure(capsys, "--ckpt", ckpt, "--meta", str(tmp_path / "meta.pkl"))
    assert status == 1 and "does not match" in line


def test_the_walkthrough_in_chinese_explains_the_same_steps(ckpt, capsys):
    flags = ["--ckpt", ckpt, "--walkthrough", "--max_new_tokens", "12", "--steps", "2"]
    english, chinese = run_main(capsys, *flags), run_main(capsys, *flags, "--lang", "zh")
    for title in ["1. 贪心解码", "2. 多项分布采样", "3. 温度", "4. Top-K", "5. 重复性惩罚"]:
        assert title in chinese
    assert "第 1 步: 编号 (1, 10) -> 模型 -> logits (1, 10, 65)" in chinese and "选中" in chinese
    texts = lambda out: [block.split("\n\n")[-1] for block in out.split("=" * 78)[2::2]]  # noqa: E731
    assert texts(chinese) == texts(english)  # the same characters, only the words around them differ
