"""Classifier-free guidance (--guidance_scale, --negative_prompt) and contrastive search
(--penalty_alpha with --top_k): against Hugging Face's processor and against the formulas worked out
by hand or recomputed here without the KV cache."""
import math

import pytest
import torch
import torch.nn.functional as F
from transformers.generation.logits_process import UnbatchedClassifierFreeGuidanceLogitsProcessor
from transformers.modeling_outputs import CausalLMOutputWithPast

import checkpoint
import sample
import speculative
from conftest import META, make_sharp_model
from sampling import Decoding, classifier_free_guidance, contrastive_score, generate, stream
from test_sample_cli import ckpt, failure  # noqa: F401 (ckpt: a fixture)

STOI = META["stoi"]
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one thread


def sharp_double():
    """The sharp tiny model (block_size 16) in float64: a cached and an uncached reading agree to 1e-12."""
    return make_sharp_model().double()


def encode(*texts):
    return torch.tensor([checkpoint.encode(text, STOI) for text in texts])  # (B, T)


# ----------------------------------------------------------------------------- guidance

def test_guidance_on_a_toy_distribution_by_hand():
    """p = (0.7, 0.2, 0.1) with the prompt, p_u = (0.2, 0.4, 0.4) without: s = 2 gives
    p_s proportional to p^2 / p_u = (2.45, 0.1, 0.025), that is (0.9515, 0.0388, 0.0097) after
    dividing by 2.575; s = 1 gives p back and s = 0 gives p_u."""
    p, p_u = torch.tensor([[0.7, 0.2, 0.1]]), torch.tensor([[0.2, 0.4, 0.4]])
    guided = F.softmax(classifier_free_guidance(p.log(), p_u.log(), 2.0), dim=-1)
    assert torch.allclose(guided, torch.tensor([[2.45, 0.1, 0.025]]) / 2.575, atol=1e-6)
    assert torch.allclose(F.softmax(classifier_free_guidance(p.log(), p_u.log(), 1.0), dim=-1), p, atol=1e-6)
    assert torch.allclose(F.softmax(classifier_free_guidance(p.log(), p_u.log(), 0.0), dim=-1), p_u, atol=1e-6)


def cropped(model, ids):
    """The model's logits (B, T', V) for ids (B, T) without a cache: it reads the last block_size tokens."""
    return model(ids[:, -model.config.block_size:])[0]


class Unconditional:
    """Our model as Hugging Face's processor calls its `model`, without a cache: it is given the
    whole unconditional text at every step."""

    def __init__(self, model):
        self.model = model

    def __call__(self, input_ids, attention_mask, use_cache, cache):
        assert not use_cache and bool(attention_mask.all())
        return CausalLMOutputWithPast(logits=cropped(self.model, input_ids))


@pytest.mark.parametrize("scale, negative, use_cache, steps", [
    (1.5, "sad", True, 8), (3.0, None, True, 8), (0.0, "O, woe", True, 8),
    (1.5, "O, woe", False, 14),  # without a cache, past block_size 16: both texts cropped to their last 16
])
def test_guidance_equals_hugging_face_s_processor(scale, negative, use_cache, steps):
    """Greedy decoding with guidance, two prompts in one batch: at every step the logits after the
    guidance stage equal UnbatchedClassifierFreeGuidanceLogitsProcessor's output, fed the
    conditional logits of the whole context read without a cache and running the model on the
    negative prompt (or each prompt's last character) and the tokens generated so far itself.
    With the cache, 8 steps stay inside the first window (6 + 8 <= 16)."""
    model = sharp_double()
    prompts = encode("ROMEO:", "JULIET")
    decoding = Decoding(temperature=0, guidance_scale=scale, negative_prompt=negative)
    guided = []
    observe = lambda name, z: guided.append(z) if name.startswith("guidance") else None  # noqa: E731
    chosen = torch.cat([step.ids for step in stream(model, prompts, steps, decoding, use_cache=use_cache, stoi=STOI,
                                                    observe=observe)], 1)
    negative_ids = None if negative is None else encode(negative, negative)
    hf = UnbatchedClassifierFreeGuidanceLogitsProcessor(scale, Unconditional(model), negative_ids, use_cache=False)
    with torch.no_grad():
        for t in range(steps):
            ids = torch.cat((prompts, chosen[:, :t]), dim=1)  # (2, 6 + t)
            expected = hf(ids, cropped(model, ids)[:, -1])  # (2, V)
            assert torch.allclose(guided[t], expected, atol=1e-6, rtol=0), t
            assert torch.equal(chosen[:, t], expected.argmax(dim=-1))


def test_guidance_changes_the_text_and_a_scale_of_one_is_off():
    model, prompt = make_sharp_model(), encode("ROMEO:")
    plain = generate(model, prompt, 20, Decoding(temperature=0))
    assert Decoding(guidance_scale=1.0).stages(STOI) == []
    assert not torch.equal(generate(model, prompt, 20, Decoding(temperature=0, guidance_scale=3.0)), plain)


def test_guidance_comes_first_in_both_orders():
    names = lambda d: [stage.name.split()[0] for stage in d.stages(STOI)]  # noqa: E731
    hf = Decoding(guidance_scale=2.0, negative_prompt="x", repetition_penalty=1.3, top_k=5, temperature=0.8)
    assert names(hf) == ["guidance", "repetition", "temperature", "top-k"]
    assert names(Decoding(**{**hf.changed(), "order": "llama.cpp"})) == ["guidance", "repetition", "top-k", "temperature"]


def test_guidance_works_per_row_of_a_batch():
    """Each row of a batch decodes what it decodes alone, seeded alike."""
    model, prompts = make_sharp_model(), encode("ROMEO:", "KING: ")
    decoding = Decoding(guidance_scale=2.0, negative_prompt="sad", top_k=10)
    seeds = [torch.Generator().manual_seed(s) for s in (1, 2)]
    batch = generate(model, prompts, 25, decoding, generator=seeds, stoi=STOI)
    for row in range(2):
        alone = generate(model, prompts[row:row + 1], 25, decoding, generator=torch.Generator().manual_seed(row + 1),
                         stoi=STOI)
        assert torch.equal(batch[row:row + 1], alone)


# ----------------------------------------------------------------------------- contrastive search

def test_contrastive_score_by_hand():
    """Three candidates with p = (0.5, 0.3, 0.2) and hidden states (1, 0), (0, 1), (1, 1); the
    context's are (1, 0) and (2, 2). Their greatest cosine similarities to the context: 1 (equal to
    (1, 0)), 1/sqrt(2) = 0.7071 (to (2, 2)), 1 (parallel to (2, 2)). With alpha = 0.6 the scores are
    0.4 * 0.5 - 0.6 = -0.4, 0.4 * 0.3 - 0.6 * 0.7071 = -0.3043, 0.4 * 0.2 - 0.6 = -0.52: the
    second candidate, less likely but unlike the context, wins. alpha = 0 is the likeliest."""
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    candidates = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # (1, 3, 2)
    context = torch.tensor([[[1.0, 0.0], [2.0, 2.0]]])  # (1, 2, 2)
    score = contrastive_score(probs, candidates, context, 0.6)
    assert torch.allclose(score, torch.tensor([[-0.4, 0.12 - 0.6 / math.sqrt(2), -0.52]]), atol=1e-6)
    assert score.argmax().item() == 1
    assert contrastive_score(probs, candidates, context, 0.0).argmax().item() == 0


def independent_choice(model, ids, main_start, look_start, k, alpha):
    """Contrastive search's next token after ids (1, T), recomputed without a KV cache: p from the
    model reading ids[main_start:], each candidate's hidden state and the context's from the model
    reading ids[look_start:] followed by the candidate, the score one candidate at a time."""
    probs = F.softmax(model(ids[:, main_start:])[0][0, -1], dim=-1)  # (V,)
    top = torch.topk(probs, k)
    scores = []
    for p, v in zip(top.values.tolist(), top.indices.tolist()):
        hidden = model(torch.cat((ids[:, look_start:], torch.tensor([[v]])), dim=1), hidden=True)[2][0]  # (n, C)
        similarity = max(F.cosine_similarity(hidden[-1], h, dim=0).item() for h in hidden[:-1])
        scores.append((1 - alpha) * p - alpha * similarity)
    return top.indices[max(range(k), key=lambda i: scores[i])].item()


@pytest.mark.parametrize("use_cache", [True, False])
def test_contrastive_search_chooses_the_best_score_across_a_window_restart(use_cache):
    """21 steps after a 4-character prompt on a model of block_size 16, each checked against
    independent_choice(). The windows, as model_input() schedules them, worked out by hand: the
    model reads the context of T characters whole while T <= 16; at T = 17 its cache is full and it
    restarts from the last 8 (block_size // 2), ids[9:], and reads on up to T = 25. The candidates
    are read after the context, one position further: whole while T + 1 <= 16, from ids[9:] once
    T + 1 = 17 (the last 8 of the 17 with the candidate), up to T + 1 = 25. Without a cache both
    read the last 16 tokens."""
    model, ids = sharp_double(), encode("ROME")
    k, alpha = 4, 0.6
    steps = list(stream(model, ids, 21, Decoding(penalty_alpha=alpha, top_k=k), use_cache=use_cache, stoi=STOI))
    with torch.no_grad():
        for step in steps:
            T = ids.size(1)
            if use_cache:
                main_start, look_start = (0 if T <= 16 else 9), (0 if T + 1 <= 16 else 9)
            else:
                main_start, look_start = max(0, T - 16), max(0, T + 1 - 16)
            assert step.ids[0, 0].item() == independent_choice(model, ids, main_start, look_start, k, alpha), T
            assert torch.isfinite(step.logits).sum() == 1  # the stage leaves the chosen token alone
            ids = torch.cat((ids, step.ids), dim=1)
    assert ids.size(1) == 25


def test_contrastive_search_differs_from_greedy_and_works_per_row():
    model, prompts = make_sharp_model(), encode("ROMEO:", "KING: ")
    decoding = Decoding(penalty_alpha=0.6, top_k=4)
    batch = generate(model, prompts, 30, decoding)
    assert not torch.equal(batch, generate(model, prompts, 30, Decoding(temperature=0)))
    for row in range(2):
        assert torch.equal(batch[row:row + 1], generate(model, prompts[row:row + 1], 30, decoding))


def test_contrastive_search_never_chooses_a_removed_token():
    """no_repeat_ngram_size 1 removes every character already in the text; with all 65 characters
    as candidates and alpha near 1, the removed ones (probability 0) still never win."""
    model = make_sharp_model()
    ids = generate(model, encode("ab"), 20, Decoding(penalty_alpha=0.99, top_k=65, no_repeat_ngram_size=1))[0].tolist()
    assert len(set(ids)) == len(ids)


def test_contrastive_search_with_top_k_beyond_the_vocabulary_compares_every_character():
    model, prompt = make_sharp_model(), encode("ROMEO:")
    assert torch.equal(generate(model, prompt, 10, Decoding(penalty_alpha=0.6, top_k=1000)),
                       generate(model, prompt, 10, Decoding(penalty_alpha=0.6, top_k=65)))


def test_contrastive_search_keeps_the_penalties_and_ignores_the_warpers():
    decoding = Decoding(penalty_alpha=0.6, top_k=4, repetition_penalty=1.3, temperature=0.7, top_p=0.9)
    assert [stage.name for stage in decoding.stages(STOI)] == ["repetition penalty 1.3",
                                                               "contrastive search α 0.6 among the top 4"]
    assert decoding.ignored() == ["temperature", "top_p"]
    assert Decoding(penalty_alpha=0.6, top_k=4, temperature=1.0).ignored() == []


def test_speculative_decoding_refuses_both():
    for decoding in (Decoding(guidance_scale=2.0), Decoding(penalty_alpha=0.6, top_k=4)):
        with pytest.raises(ValueError, match="guidance and contrastive search"):
            speculative.check_decoding(decoding)


# ----------------------------------------------------------------------------- the command line

@pytest.mark.parametrize("flags, message", [
    (["--guidance_scale", "101"], "--guidance_scale must be in [0, 100], got 101.0"),
    (["--guidance_scale", "nan"], "--guidance_scale must be in [0, 100], got nan"),
    (["--negative_prompt", "sad"], "--negative_prompt needs a guidance_scale other than 1"),
    (["--guidance_scale", "2", "--negative_prompt", ""], "--negative_prompt must be non-empty"),
    (["--guidance_scale", "2", "--negative_prompt", "sad\u00e9"], "--negative_prompt: "),
    (["--guidance_scale", "2", "--draft", "ngram"], "--draft: speculative decoding checks the model's"),
    (["--penalty_alpha", "0.6"], "--penalty_alpha needs top_k >= 2"),
    (["--penalty_alpha", "0.6", "--top_k", "1"], "--penalty_alpha needs top_k >= 2"),
    (["--penalty_alpha", "1.5", "--top_k", "4"], "--penalty_alpha must be in [0, 1], got 1.5"),
    (["--penalty_alpha", "0.6", "--top_k", "4", "--order", "llama.cpp"], "--penalty_alpha (contrastive search) is Hugging Face's"),
    (["--penalty_alpha", "0.6", "--top_k", "4", "--mirostat", "2"], "mirostat chooses its own cut"),
    (["--penalty_alpha", "0.6", "--top_k", "4", "--num_beams", "2"], "--penalty_alpha: contrastive search chooses"),
    (["--penalty_alpha", "0.6", "--top_k", "4", "--draft", "ngram"], "--draft: speculative decoding checks"),
])
def test_bad_flags_exit_2_with_one_line(ckpt, capsys, flags, message):
    status, line = failure(capsys, "--ckpt", ckpt, "--max_new_tokens", "2", *flags)
    assert status == 2 and message in line, line


def test_the_walkthrough_shows_both_as_stages(ckpt, capsys):
    for flags, heading in [(["--guidance_scale", "2", "--negative_prompt", "sad"], "after guidance 2 against 'sad':"),
                           (["--penalty_alpha", "0.6", "--top_k", "4", "--temperature", "0.7"],
                            "after contrastive search α 0.6 among the top 4:")]:
        assert sample.main(["--ckpt", ckpt, "--walkthrough", "--steps", "1", "--max_new_tokens", "3", *flags]) == 0
        captured = capsys.readouterr()
        assert heading in captured.out
        assert captured.err == "" or "--penalty_alpha" in flags
    assert captured.err == ("note: contrastive search ignores --temperature (it applies no warper, as Hugging "
                            "Face's: --top_k only counts its candidates)\n")


def test_both_decode_batches_at_the_command_line(ckpt, capsys):
    """Sample 2 of a batch is the single sample of seed + 1 (guidance draws; contrastive search does not)."""
    for flags in (["--guidance_scale", "2", "--top_k", "5"], ["--penalty_alpha", "0.6", "--top_k", "4"]):
        common = ["--ckpt", ckpt, "--max_new_tokens", "20", *flags]
        assert sample.main([*common, "--num_samples", "2", "--seed", "3"]) == 0
        second = capsys.readouterr().out.split("---------------\n")[1]
        assert sample.main([*common, "--seed", "4"]) == 0
        assert capsys.readouterr().out == second
