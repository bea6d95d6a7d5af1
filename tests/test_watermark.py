"""The watermark (Kirchenbauer et al. 2023) against Hugging Face's WatermarkLogitsProcessor and
WatermarkDetector, built here on the same settings; its place among the stages; sample.py --detect."""
import inspect
import math
import os
import re
import sys

import pytest
import torch
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, WatermarkDetector, WatermarkingConfig
from transformers.generation.logits_process import LogitsProcessorList, WatermarkLogitsProcessor

import checkpoint
import model
import sampling
from conftest import META, ROOT, hugging_face_models, make_sharp_model
from sampling import Decoding, Run, detect_watermark, green_list, process, watermark_logits, watermark_z_score
from speculative import ModelDrafter, speculative_generate
from test_sample_cli import ckpt, failure  # noqa: F401 (ckpt, a fixture: a tiny random model, close to uniform, as a checkpoint)
from test_sampling import prompt
from test_speculative import cli, noisy_copy

V = 65
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one thread


def hf_detector(gamma):
    """Hugging Face's detector for our vocabulary; GPT-2's beginning-of-text id (50256) lies outside
    it, so no text loses its first token."""
    return WatermarkDetector(GPT2Config(vocab_size=V), "cpu", WatermarkingConfig(greenlist_ratio=gamma))


# ----------------------------------------------------------------------------- the rule, as Hugging Face's

@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.1])
def test_green_lists_are_hugging_face_s(gamma):
    hf = WatermarkLogitsProcessor(V, "cpu", greenlist_ratio=gamma)
    for previous in range(V):
        ours = green_list(previous, V, gamma)
        assert ours.dtype == torch.bool and int(ours.sum()) == int(V * gamma)  # 16 of 65 at 0.25
        assert ours.nonzero().flatten().tolist() == sorted(hf._get_greenlist_ids(torch.tensor([previous])).tolist())


def test_the_hash_key_and_gamma_are_hugging_face_s_defaults():
    defaults = inspect.signature(WatermarkLogitsProcessor).parameters
    assert sampling.WATERMARK_KEY == defaults["hashing_key"].default == 15485863
    assert Decoding().watermark_gamma == defaults["greenlist_ratio"].default == 0.25


@pytest.mark.parametrize("delta, gamma", [(2.0, 0.25), (0.5, 0.5), (10.0, 0.1)])
def test_watermarked_logits_are_hugging_face_s(delta, gamma):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, V, generator=g) * 3  # (B, V)
    logits[0, :10] = float("-inf")  # a removed token stays removed
    context = torch.randint(0, V, (4, 7), generator=g)  # (B, T): each row's own previous token
    before = logits.clone()
    ours = watermark_logits(logits, context[:, -1], delta, gamma)
    expected = WatermarkLogitsProcessor(V, "cpu", greenlist_ratio=gamma, bias=delta)(context, logits.clone())
    assert torch.equal(ours, expected) and torch.equal(logits, before)
    assert torch.isinf(ours[0, :10]).all()


def test_the_z_score_by_hand():
    # 10 green of 20 with gamma 1/4: 5 expected, variance 20 * 1/4 * 3/4 = 3.75, z = 5 / sqrt(3.75)
    assert watermark_z_score(10, 20, 0.25) == pytest.approx(2.5819889, abs=1e-7)
    assert watermark_z_score(5, 20, 0.25) == 0.0
    assert watermark_z_score(0, 8, 0.5) == pytest.approx(-4 / math.sqrt(2))


@hugging_face_models  # transformers builds its WatermarkDetector on PyTorch >= 2.6 only
@pytest.mark.parametrize("gamma", [0.25, 0.5])
def test_detection_is_hugging_face_s(gamma):
    assert inspect.signature(WatermarkDetector).parameters["ignore_repeated_ngrams"].default is False
    g = torch.Generator().manual_seed(1)
    texts = [torch.randint(0, V, (n,), generator=g) for n in (2, 3, 50, 400)]
    texts.append(torch.tensor([5, 9, 5, 9, 5, 9, 5, 9]))  # repeated pairs count each time, as in HF's default
    lists = torch.stack([green_list(p, V, gamma) for p in range(V)])  # (V, V)
    greedy_green = [0]  # a text that always steps to the lowest green id of its previous token: all green
    for _ in range(60):
        greedy_green.append(int(lists[greedy_green[-1]].nonzero()[0]))
    texts.append(torch.tensor(greedy_green))
    for ids in texts:
        ours = detect_watermark(ids, V, gamma)
        hf = hf_detector(gamma)(ids[None], z_threshold=4.0, return_dict=True)
        assert (ours.scored, ours.green) == (hf.num_tokens_scored[0], hf.num_green_tokens[0])
        assert ours.scored == len(ids) - 1
        assert ours.z == pytest.approx(hf.z_score[0], abs=1e-12) and ours.watermarked == hf.prediction[0]
    assert detect_watermark(texts[-1], V, gamma).watermarked and detect_watermark(texts[-1], V, gamma).green == 60


def test_detection_needs_two_tokens():
    with pytest.raises(ValueError, match="at least 2, got 1"):
        detect_watermark(torch.tensor([3]), V)


# ----------------------------------------------------------------------------- its place among the stages

@hugging_face_models
def test_in_hugging_face_s_order_it_comes_after_the_warpers_as_hf_builds_them():
    """The processors Hugging Face's generate() builds for these settings (_get_logits_processor),
    applied to the same logits, give our processed logits."""
    config = GPT2Config(vocab_size=V, n_positions=16, n_embd=8, n_layer=1, n_head=1)
    settings = GenerationConfig(do_sample=True, temperature=0.7, top_k=5,
                                watermarking_config=WatermarkingConfig(bias=2.0, greenlist_ratio=0.25))
    context = prompt(B=3, T=6, seed=2)  # (B, T)
    processors = GPT2LMHeadModel(config)._get_logits_processor(
        generation_config=settings, input_ids_seq_length=6, encoder_input_ids=context, prefix_allowed_tokens_fn=None,
        logits_processor=LogitsProcessorList(), device="cpu", model_kwargs={})
    assert [type(p).__name__ for p in processors][-1] == "WatermarkLogitsProcessor"
    logits = torch.randn(3, V, generator=torch.Generator().manual_seed(3)) * 2  # (B, V)
    decoding = Decoding(temperature=0.7, top_k=5, watermark=2.0)
    ours = process(logits, Run(context, 6), decoding.stages())
    assert torch.allclose(ours, processors(context, logits.clone()), atol=1e-6)


def stage_names(**settings):
    return [stage.name.split()[0] for stage in Decoding(**settings).stages()]


def test_its_place_in_each_chain():
    assert stage_names(repetition_penalty=1.3, temperature=0.7, top_k=5, watermark=2) == \
        ["repetition", "temperature", "top-k", "watermark"]
    assert stage_names(repetition_penalty=1.3, temperature=0.7, top_k=5, watermark=2, order="llama.cpp") == \
        ["repetition", "top-k", "watermark", "temperature"]  # before llama.cpp's temperature, which comes last
    assert stage_names(temperature=0, repetition_penalty=1.3, top_k=5, watermark=2) == ["repetition", "watermark"]
    assert stage_names(temperature=0, watermark=2, order="llama.cpp") == ["watermark", "temperature"]
    assert stage_names(mirostat=2, watermark=2) == ["mirostat", "watermark"]


def test_greedy_in_llama_cpp_s_order_takes_the_argmax_of_the_watermarked_logits():
    logits = torch.zeros(1, V)  # (1, V): every token ties, so the lowest green id wins
    context = torch.tensor([[7]])
    greedy = process(logits, Run(context, 1), Decoding(temperature=0, watermark=2, order="llama.cpp").stages())
    assert torch.isfinite(greedy).sum() == 1 and int(greedy.argmax()) == int(green_list(7, V).nonzero()[0])


@pytest.mark.parametrize("setting", [dict(watermark=-1), dict(watermark=101), dict(watermark=math.nan),
                                     dict(watermark_gamma=0), dict(watermark_gamma=1)])
def test_out_of_range_settings_are_refused(setting):
    with pytest.raises(ValueError, match=f"{next(iter(setting))} must be"):
        Decoding(**setting)


# ----------------------------------------------------------------------------- decoding with it

def test_each_row_of_a_batch_is_watermarked_by_its_own_previous_token():
    target = make_sharp_model(0)
    idx = prompt(B=3, T=5, seed=4)
    decoding = Decoding(temperature=0, watermark=3.0)
    batch = sampling.generate(target, idx, 24, decoding)
    for row in range(3):
        assert torch.equal(batch[row:row + 1], sampling.generate(target, idx[row:row + 1], 24, decoding))
    assert not torch.equal(batch, sampling.generate(target, idx, 24, temperature=0))  # it changes the text


@pytest.mark.parametrize("temperature", [0, 1])
def test_speculative_decoding_with_the_watermark_is_plain_decoding_with_it(temperature):
    """Greedy: the very tokens; sampling: at least a text of the same length that the detector finds.
    A 20-token prompt and 40 new tokens on a model of block_size 16: the windows restart inside rounds."""
    target = make_sharp_model(0)
    idx = prompt(B=1, T=20, seed=5)
    decoding = Decoding(temperature=temperature, watermark=3.0)
    expected = sampling.generate(target, idx, 40, decoding, generator=torch.Generator().manual_seed(0))
    ours = speculative_generate(target, ModelDrafter(noisy_copy(target)), idx, 40, decoding, 4,
                                torch.Generator().manual_seed(0))
    if temperature == 0:
        assert torch.equal(ours, expected)
        assert not torch.equal(ours, sampling.generate(target, idx, 40, temperature=0))
    assert ours.shape == expected.shape and detect_watermark(ours[0, 20:], V).watermarked


# ----------------------------------------------------------------------------- the command line

LINE = re.compile(r"(\d+) characters scored, (\d+) green \(\d+\.\d%, (\d+)% expected without the watermark\), "
                  r"z = (-?\d+\.\d\d): (watermarked|not watermarked) \(z (>|<=) 4\)$")


@pytest.mark.parametrize("gamma", [0.25, 0.5])
def test_detect_finds_the_watermark_that_sample_wrote_and_only_it(ckpt, tmp_path, capsys, monkeypatch, gamma):
    for delta, verdict in [("2", "watermarked"), ("0", "not watermarked")]:
        status, text, _ = cli(capsys, "--ckpt", ckpt, "--max_new_tokens", "200", "--watermark", delta,
                              "--watermark_gamma", str(gamma), "--seed", "3")
        assert status == 0
        path = tmp_path / f"text-{delta}.txt"
        path.write_text(text, encoding="utf-8")
        monkeypatch.setattr(model.GPT, "forward", None)  # detection must not run the model
        status, out, err = cli(capsys, "--ckpt", ckpt, "--detect", str(path), "--watermark_gamma", str(gamma))
        monkeypatch.undo()
        assert status == 0 and err == "" and out.startswith(f"{path}: ")
        scored, green, percent, z, found, _ = LINE.search(out).groups()
        ids = checkpoint.encode(text, META["stoi"])  # prompt, 200 characters, newline
        lists = [green_list(previous, V, gamma) for previous in range(V)]  # as Hugging Face's (test above)
        count = sum(bool(lists[previous][token]) for previous, token in zip(ids, ids[1:]))
        expected_z = (count - gamma * 201) / math.sqrt(201 * gamma * (1 - gamma))
        assert (int(scored), int(green)) == (len(ids) - 1, count) == (201, count)
        assert float(z) == pytest.approx(expected_z, abs=0.005) and int(percent) == round(100 * gamma)
        assert found == verdict


def test_the_watermark_works_with_batches_and_speculative_decoding(ckpt, capsys):
    flags = ["--ckpt", ckpt, "--max_new_tokens", "30", "--watermark", "2", "--temperature", "0"]
    (s1, batch, _), (s2, alone, _), (s3, drafted, _) = [cli(capsys, *flags, *more) for more in
                                                        (["--num_samples", "2"], [], ["--draft", ckpt])]
    assert s1 == s2 == s3 == 0 and batch.split("---------------\n")[0] == alone == drafted


@pytest.mark.parametrize("content, message", [
    (None, r"--detect: no file at .*missing\.txt$"),
    (b"", r"--detect: .*text\.txt holds 0 characters: too short to score"),
    (b"a", r"--detect: .*text\.txt holds 1 character: too short to score"),
    ("Caf\u00e9".encode(), r"--detect: .*text\.txt: characters not in the vocabulary: '\u00e9'"),
    (b"\xff\xfe", r"--detect: .*text\.txt is not UTF-8 text$"),
])
def test_a_file_that_cannot_be_scored_exits_2_with_one_line(ckpt, tmp_path, capsys, content, message):
    path = tmp_path / ("missing.txt" if content is None else "text.txt")
    if content is not None:
        path.write_bytes(content)
    status, line = failure(capsys, "--ckpt", ckpt, "--detect", str(path))
    assert status == 2 and re.match("error: " + message, line)


@pytest.mark.parametrize("flags, message", [
    (["--detect", "x.txt", "--compare"], "--detect scores a file and generates nothing: drop --compare"),
    (["--detect", "x.txt", "--draft", "ngram", "--walkthrough"], "drop --walkthrough, --draft"),
    (["--detect", "x.txt", "--watermark", "2", "--top_k", "5", "--start", "a", "--watermark_gamma", "0.5"],
     "drop --start, --top_k, --watermark"),
    (["--watermark", "-1"], "--watermark must be in [0, 100], got -1.0"),
    (["--watermark", "nan"], "--watermark must be in [0, 100], got nan"),
    (["--watermark_gamma", "1"], "--watermark_gamma must be in (0, 1), got 1.0"),
    (["--watermark_gamma", "0"], "--watermark_gamma must be in (0, 1), got 0.0"),
])
def test_bad_flags_exit_2_with_one_line(ckpt, capsys, flags, message):
    status, line = failure(capsys, "--ckpt", ckpt, *flags)
    assert status == 2 and message in line


@pytest.mark.parametrize("flags, message", [(["--seeds", "0"], "--seeds must be >= 1, got 0"),
                                            (["--gamma", "1.5"], "watermark_gamma must be in (0, 1), got 1.5"),
                                            (["--delta", "-1"], "watermark must be")])
def test_the_benchmark_refuses_bad_flags_with_one_line(flags, message, capsys, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    import bench_watermark

    monkeypatch.setattr(sys, "argv", ["bench_watermark.py", *flags])
    monkeypatch.setattr(checkpoint, "load", None)  # refused before the model is read
    with pytest.raises(SystemExit) as exit:
        bench_watermark.main()
    out, err = capsys.readouterr()
    assert exit.value.code == 2 and out == ""
    assert err.splitlines()[-1].startswith(f"bench_watermark.py: error: {message}")
