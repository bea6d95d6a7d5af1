"""The samplers of llama.cpp, vLLM and the OpenAI API, their order, stop strings and state.

Where Hugging Face transformers has a sampler (epsilon, eta, a single-token sequence bias, beam
search with an end token), ours is compared with it to 1e-6, ties and boundaries included.
Where only llama.cpp has it, the expected values are worked out by hand below from the rule as
llama.cpp's src/llama-sampling.cpp implements it (the function is named in each test). No
expected value comes from sampling.py itself."""
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from transformers.generation.logits_process import EpsilonLogitsWarper, EtaLogitsWarper, SequenceBiasLogitsProcessor

from conftest import META, hugging_face_models, make_sharp_model, make_tiny_model
from sampling import (
    Decoding,
    beam_search,
    dry_penalty,
    dynamic_temperature,
    epsilon_filter,
    eta_filter,
    generate,
    logit_bias,
    mirostat_filter,
    mirostat_update,
    stream,
    top_n_sigma_filter,
    xtc_filter,
)
from hf_gpt2 import hf_copy
from test_sampling import CASE_IDS, CASES, assert_same, kept, processed, prompt, toy_logits

NEG_INF = float("-inf")
STOI = META["stoi"]
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one thread


def logits_of(*probs):
    """(1, V) logits z = ln p."""
    return torch.tensor([probs], dtype=torch.float32).log()


# ----------------------------------------------------------------------------- epsilon and eta: Hugging Face

@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("epsilon", [1e-9, 1e-4, 3e-3, 0.01, 0.05, 0.2, 0.9])
def test_epsilon_matches_hugging_face(case, epsilon):
    z = CASES[case]()
    assert_same(epsilon_filter(z, epsilon), EpsilonLogitsWarper(epsilon)(None, z))


@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("epsilon", [1e-9, 1e-4, 3e-3, 0.01, 0.05, 0.2, 0.9])
def test_eta_matches_hugging_face(case, epsilon):
    z = CASES[case]()
    assert_same(eta_filter(z, epsilon), EtaLogitsWarper(epsilon)(None, z))


def test_epsilon_and_eta_by_hand():
    # p = (0.5, 0.3, 0.15, 0.05): epsilon 0.1 keeps the first three.
    z = logits_of(0.5, 0.3, 0.15, 0.05)
    assert kept(epsilon_filter(z, 0.1)) == [0, 1, 2]
    # H = -(0.5 ln 0.5 + 0.3 ln 0.3 + 0.15 ln 0.15 + 0.05 ln 0.05) = 1.1422 nats;
    # eta = min(0.2, sqrt(0.2) * exp(-1.1422)) = min(0.2, 0.1427) = 0.1427: keeps 0.5, 0.3, 0.15
    h = -sum(p * math.log(p) for p in (0.5, 0.3, 0.15, 0.05))
    assert math.sqrt(0.2) * math.exp(-h) == pytest.approx(0.1427, abs=1e-4)
    assert kept(eta_filter(z, 0.2)) == [0, 1, 2]
    # eta 0.5: min(0.5, 0.7071 * 0.3191 = 0.2257) = 0.2257: 0.15 goes too
    assert kept(eta_filter(z, 0.5)) == [0, 1]
    # a bar above every token keeps the most likely one
    assert kept(epsilon_filter(z, 0.9)) == [0]


# ----------------------------------------------------------------------------- logit bias: OpenAI, Hugging Face

@pytest.mark.parametrize("case", CASE_IDS)
def test_logit_bias_matches_hugging_face_sequence_bias(case):
    z = CASES[case]()
    bias = {3: -5.0, 17: 2.5, 64: -100.0}
    vector = torch.zeros(z.size(-1)).index_put_((torch.tensor(list(bias)),), torch.tensor(list(bias.values())))
    reference = SequenceBiasLogitsProcessor([[[token], value] for token, value in bias.items()])
    assert_same(logit_bias(z, vector), reference(torch.zeros(z.size(0), 1, dtype=torch.long), z))


def test_logit_bias_through_the_pipeline_names_characters():
    z = torch.zeros(1, 65)
    out = processed(z, torch.zeros(1, 1, dtype=torch.long), Decoding(logit_bias=(("e", -5.0), ("z", 2.0))), 1)
    expected = torch.zeros(1, 65)
    expected[0, STOI["e"]], expected[0, STOI["z"]] = -5.0, 2.0
    assert torch.equal(out, expected)


# ----------------------------------------------------------------------------- top-n-sigma: llama.cpp

def test_top_n_sigma_by_hand():
    """llama_sampler_top_n_sigma_apply: keep z >= max - n * sigma, sigma over the finite logits."""
    z = torch.tensor([[3.0, 2.0, 1.0, 0.0, NEG_INF]])
    # mean 1.5, sigma = sqrt((2.25 + 0.25 + 0.25 + 2.25) / 4) = sqrt(1.25) = 1.1180 (population; -inf left out)
    assert kept(top_n_sigma_filter(z, 1.0)) == [0, 1]  # bar 3 - 1.118 = 1.882
    assert kept(top_n_sigma_filter(z, 2.0)) == [0, 1, 2]  # bar 3 - 2.236 = 0.764
    assert kept(top_n_sigma_filter(z, 3.0)) == [0, 1, 2, 3]  # bar -0.354


def test_top_n_sigma_keeps_the_boundary():
    z = torch.tensor([[1.0, 1.0, -1.0, -1.0]])  # mean 0, sigma exactly 1
    assert kept(top_n_sigma_filter(z, 2.0)) == [0, 1, 2, 3]  # bar exactly -1: kept (>=)
    assert kept(top_n_sigma_filter(z, 1.999)) == [0, 1]


def test_top_n_sigma_with_one_finite_logit_and_under_temperature():
    assert kept(top_n_sigma_filter(torch.tensor([[NEG_INF, 5.0, NEG_INF]]), 1.0)) == [1]
    z = CASES["randn-0"]()
    for tau in (0.3, 2.0):  # both sides of z >= max - n sigma scale by 1/tau: the same tokens stay
        assert torch.equal(torch.isfinite(top_n_sigma_filter(z / tau, 1.5)), torch.isfinite(top_n_sigma_filter(z, 1.5)))


# ----------------------------------------------------------------------------- XTC: llama.cpp

def test_xtc_removes_every_top_choice_but_the_least_likely():
    """llama_sample_xtc_apply: tokens with p >= threshold; all but the last of them go."""
    z = logits_of(0.4, 0.3, 0.2, 0.1)
    assert kept(xtc_filter(z, 0.25, 1.0)) == [1, 2, 3]  # 0.4 and 0.3 pass: 0.4 goes
    assert kept(xtc_filter(z, 0.15, 1.0)) == [2, 3]  # 0.4, 0.3, 0.2 pass: keep 0.2
    assert kept(xtc_filter(z, 0.35, 1.0)) == [0, 1, 2, 3]  # one token passes: nothing to exclude
    assert kept(xtc_filter(logits_of(0.6, 0.3, 0.1), 0.55, 1.0)) == [0, 1, 2]  # above 0.5: never two


def test_xtc_ties_keep_the_highest_id():
    z = logits_of(0.3, 0.3, 0.2, 0.2)
    assert kept(xtc_filter(z, 0.25, 1.0)) == [1, 2, 3]
    assert kept(xtc_filter(z, 0.15, 1.0)) == [3]


def test_xtc_fires_with_its_probability_from_each_row_s_generator():
    z = logits_of(0.4, 0.3, 0.2, 0.1).expand(6, -1)
    seeds = range(6)
    out = xtc_filter(z, 0.25, 0.5, [torch.Generator().manual_seed(s) for s in seeds])
    draws = [torch.rand(1, generator=torch.Generator().manual_seed(s)).item() for s in seeds]
    fired = [not torch.isfinite(row[0]).item() for row in out]
    assert fired == [u < 0.5 for u in draws] and any(fired) and not all(fired)
    assert torch.equal(xtc_filter(z, 0.25, 0.0), z)


# ----------------------------------------------------------------------------- DRY: llama.cpp

A, B_, C, Y = 0, 1, 2, 3
CONTEXT = [A, B_, C, C, B_, C, Y, A, B_, C]  # the example in llama_sampler_dry_apply's comments


def dry(context, **kw):
    settings = dict(multiplier=0.8, base=1.75, allowed_length=2)
    settings.update(kw)
    return dry_penalty(torch.zeros(1, 65), torch.tensor([context]), **settings)[0]


def test_dry_on_llama_cpp_s_own_example():
    """Context 'a b c c b c y a b c': the last 'a b c' also ends at the first 'c' (a repeat of 3,
    followed there by 'c') and 'b c' ends at the second 'c' (followed by 'y'). With allowed length 2:
    'c' would extend a repeat of 3: 0.8 * 1.75^1 = 1.4; 'y' one of 2: 0.8 * 1.75^0 = 0.8."""
    out = dry(CONTEXT)
    assert out[C].item() == pytest.approx(-1.4) and out[Y].item() == pytest.approx(-0.8)
    assert torch.count_nonzero(out) == 2
    out = dry(CONTEXT, allowed_length=3)  # only the repeat of 3 counts now, at 0.8 * 1.75^0
    assert out[C].item() == pytest.approx(-0.8) and torch.count_nonzero(out) == 1


def test_dry_sequence_breakers():
    # 'y' breaks: the run after it ('a b c', 3 tokens) still reaches 3, and 'y' itself is never penalised
    out = dry(CONTEXT, breakers={Y})
    assert out[C].item() == pytest.approx(-1.4) and torch.count_nonzero(out) == 1
    # 'a' breaks: only 'b c' follows it, so every repeat is cut to 2: 'c' and 'y' both get 0.8
    out = dry(CONTEXT, breakers={A})
    assert out[C].item() == pytest.approx(-0.8) and out[Y].item() == pytest.approx(-0.8)
    # 'c' breaks: nothing follows the last breaker, shorter than allowed: no penalty at all
    assert torch.count_nonzero(dry(CONTEXT, breakers={C})) == 0


def test_dry_window_and_short_contexts():
    assert torch.count_nonzero(dry(CONTEXT, window=4)) == 0  # 'y a b c' holds no repeat
    assert torch.count_nonzero(dry([A, A], allowed_length=2)) == 0  # 2 tokens <= allowed length: skipped
    assert torch.count_nonzero(dry(CONTEXT, multiplier=0.0)) == 0


def test_dry_caps_the_exponent_like_llama_cpp():
    """50 x the same token: it would extend a repeat of 49; 49 - 2 = 47 is capped at
    int(88.7228391 / ln 10) = 38, so the penalty is 0.8 * 10^38 (finite in float32)."""
    out = dry([7] * 50, base=10.0)
    assert out[7].item() == pytest.approx(-0.8e38, rel=1e-5) and torch.count_nonzero(out) == 1


def test_dry_through_the_pipeline_ignores_breakers_outside_the_vocabulary():
    """llama.cpp's default breakers are newline, ':', '"' and '*'; the last two are not among the 65."""
    context = torch.tensor([[STOI[c] for c in "ab:ab"]])
    out = processed(torch.zeros(1, 65), context, Decoding(dry_multiplier=1.0, dry_allowed_length=1), 5)
    # ':' breaks: only 'ab' follows it, a repeat of 2 of the first 'ab' (followed by ':'), but ':' is a breaker
    assert torch.count_nonzero(out) == 0
    out = processed(torch.zeros(1, 65), context, Decoding(dry_multiplier=1.0, dry_allowed_length=1,
                                                          dry_sequence_breakers="\n"), 5)
    assert out[0, STOI[":"]].item() == pytest.approx(-1.75)  # 'ab' repeats, ':' followed it: 1 * 1.75^(2 - 1)


# ----------------------------------------------------------------------------- dynamic temperature: llama.cpp

def test_dynamic_temperature_by_hand():
    """llama_sampler_temp_ext_apply: tau = tau_min + (tau_max - tau_min) * (H / ln n)^exponent."""
    z = logits_of(0.75, 0.25)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # 0.5623 nats; H_max = ln 2
    for exponent in (1.0, 2.0):
        tau = 0.5 + (1.5 - 0.5) * (h / math.log(2)) ** exponent  # temperature 1 +- 0.5
        torch.testing.assert_close(dynamic_temperature(z, 1.0, 0.5, exponent), z / tau)
    tau = 0.0 + 0.8 * (h / math.log(2))  # temperature 0.3 - 0.5 < 0: tau_min is 0
    torch.testing.assert_close(dynamic_temperature(z, 0.3, 0.5), z / tau)


def test_dynamic_temperature_extremes():
    flat = torch.tensor([[1.0, 1.0, 1.0, NEG_INF]])  # H = H_max = ln 3: tau_max
    torch.testing.assert_close(dynamic_temperature(flat, 1.0, 0.5), flat / 1.5)
    single = torch.tensor([[2.0, NEG_INF, NEG_INF]])  # one candidate: left alone
    assert torch.equal(dynamic_temperature(single, 1.0, 0.5), single)


# ----------------------------------------------------------------------------- mirostat 2: llama.cpp

def test_mirostat_truncates_at_mu_bits():
    """llama_sampler_mirostat_v2_apply: keep tokens with -log2 p <= mu; at least the first."""
    z = logits_of(0.5, 0.25, 0.125, 0.125)  # surprises 1, 2, 3, 3 bits
    assert kept(mirostat_filter(z, torch.tensor([2.5]))) == [0, 1]
    assert kept(mirostat_filter(z, torch.tensor([3.5]))) == [0, 1, 2, 3]
    assert kept(mirostat_filter(z, torch.tensor([0.5]))) == [0]


def test_mirostat_update_by_hand():
    """mu <- mu - eta * (surprise - tau), the surprise under the truncated, renormalised distribution:
    after the cut [0.5, 0.25] renormalises to [2/3, 1/3]; drawing token 1 surprises log2 3 = 1.585 bits."""
    truncated = torch.tensor([[math.log(0.5), math.log(0.25), NEG_INF, NEG_INF]])
    mu = mirostat_update(torch.tensor([6.0]), truncated, torch.tensor([[1]]), tau=3.0, eta=0.1)
    assert mu.item() == pytest.approx(6.0 - 0.1 * (math.log2(3) - 3.0), abs=1e-6)


def test_mirostat_steers_the_surprise_towards_tau():
    """On a random sharp model, the mean surprise of 300 mirostat draws lands near tau, per row."""
    model = make_sharp_model(2)
    idx = prompt(B=2, T=3, seed=1)
    for tau in (1.0, 2.5):
        decoding = Decoding(mirostat=2, mirostat_tau=tau, mirostat_eta=0.1)
        surprises = []
        for step in stream(model, idx, 300, decoding, [torch.Generator().manual_seed(s) for s in (0, 1)]):
            surprises.append(-torch.log2(F.softmax(step.logits, -1).gather(1, step.ids.clamp(min=0)))[:, 0])
        mean = torch.stack(surprises[50:]).mean(dim=0)  # (2,), after the first steps
        assert torch.allclose(mean, torch.full((2,), tau), atol=0.35), (tau, mean)


# ----------------------------------------------------------------------------- penalty window: llama.cpp

def test_penalty_last_n_looks_at_the_last_tokens_only():
    """llama_sampler_penalties keeps the last penalty_last_n tokens in a ring buffer."""
    z = torch.ones(1, 6)
    context = torch.tensor([[1, 2, 3, 3]])  # prompt [1], generated [2, 3, 3]
    out = processed(z, context, Decoding(repetition_penalty=2.0, penalty_last_n=2), 1)
    assert out[0].tolist() == [1, 1, 1, 0.5, 1, 1]  # only 3 is in the last 2 tokens
    out = processed(z, context, Decoding(frequency_penalty=0.5, presence_penalty=0.25, penalty_last_n=3), 1)
    assert out[0].tolist() == [1, 1, 1 - 0.5 - 0.25, 1 - 2 * 0.5 - 0.25, 1, 1]  # 2 once, 3 twice; the prompt's 1 not


# ----------------------------------------------------------------------------- the two orders

def test_llama_cpp_order_puts_the_temperature_last():
    dec = Decoding(temperature=0.7, top_k=10, top_p=0.9, min_p=0.05, typical_p=0.9, repetition_penalty=1.1,
                   dry_multiplier=0.8, top_n_sigma=2.0, xtc_probability=0.5, logit_bias=(("e", 1.0),))
    hf = [s.name.split()[0] for s in dec.stages(STOI)]
    llama = [s.name.split()[0] for s in replace(dec, order="llama.cpp").stages(STOI)]
    assert hf == ["logit", "repetition", "DRY", "temperature", "top-k", "top-p", "min-p", "typical", "top-n-sigma",
                  "XTC"]
    assert llama == ["logit", "repetition", "DRY", "top-n-sigma", "top-k", "typical", "top-p", "min-p", "XTC",
                     "temperature"]


def test_the_same_flags_give_another_distribution_in_the_other_order():
    """Temperature 2 then top-p 0.6 keeps 小 and 冬 (0.5229 + 0.2795); top-p 0.6 at temperature 1
    (llama.cpp's order) keeps 小 alone (0.7 >= 0.6)."""
    empty = torch.zeros(1, 0, dtype=torch.long)
    assert kept(processed(toy_logits(), empty, Decoding(temperature=2.0, top_p=0.6), 0)) == [0, 1]
    assert kept(processed(toy_logits(), empty, Decoding(temperature=2.0, top_p=0.6, order="llama.cpp"), 0)) == [0]


def test_greedy_in_llama_cpp_order_keeps_only_the_argmax():
    z = torch.tensor([[1.0, 3.0, 2.0]])
    out = processed(z, torch.zeros(1, 0, dtype=torch.long), Decoding(temperature=0, order="llama.cpp"), 0)
    assert kept(out) == [1]


# ----------------------------------------------------------------------------- stop strings and stream()

def test_rows_stop_independently_at_their_stop_string():
    model = make_sharp_model(3)
    idx = prompt(B=3, T=2, seed=5)
    generators = [torch.Generator().manual_seed(s) for s in range(3)]
    free = generate(model, idx, 40, generator=[torch.Generator().manual_seed(s) for s in range(3)])
    row0 = free[0, 2:].tolist()
    stop = "".join(META["itos"][i] for i in row0[4:6])  # row 0's 5th and 6th tokens
    steps = list(stream(model, idx, 40, Decoding(stop=(stop,)), generators, stoi=STOI))
    ids = torch.cat([s.ids for s in steps], dim=1)  # (3, n)
    assert ids[0, :6].tolist() == row0[:6] and (ids[0, 6:] == -1).all()  # row 0 ends with its stop string
    for row in range(3):  # each row is the free row up to where it stops
        mine = [i for i in ids[row].tolist() if i >= 0]
        assert mine == free[row, 2:2 + len(mine)].tolist()
    assert steps[-1].finished.all() or len(steps) == 40


def test_generate_refuses_stop_strings_and_reports_a_row_with_nothing_left():
    model = make_tiny_model()
    with pytest.raises(ValueError, match="iterate stream"):
        generate(model, prompt(B=1), 5, stop=("a",), stoi=STOI)
    with pytest.raises(ValueError, match="nothing left to draw after 60 tokens"):
        generate(model, prompt(B=1, T=5), 100, temperature=0, no_repeat_ngram_size=1)  # 65 - 5 distinct left
    rows = torch.stack([torch.arange(16), torch.zeros(16, dtype=torch.long)])  # 16 distinct tokens; one token
    with pytest.raises(ValueError, match="row 0 has nothing left to draw after 49 tokens"):  # 65 - 16; row 1 goes on
        generate(model, rows, 100, temperature=0, no_repeat_ngram_size=1)


# ----------------------------------------------------------------------------- beam search with a stop: HF

@hugging_face_models
@torch.no_grad()
@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0, -1.0])
def test_beam_search_with_a_stop_token_matches_hugging_face_eos(length_penalty):
    """A one-character stop string is Hugging Face's end-of-sequence token: the same hypotheses,
    of different lengths, and the same scores."""
    model = make_sharp_model(4)
    hf = hf_copy(model)
    for seed in range(4):
        idx = prompt(B=1, T=5, seed=30 + seed)
        # a stop token the search meets: one the model likes after this prompt
        eos = int(model(idx)[0][0, -1].topk(3).indices[seed % 3])
        out = hf.generate(idx, attention_mask=torch.ones_like(idx), num_beams=3, num_return_sequences=3,
                          do_sample=False, max_new_tokens=10, length_penalty=length_penalty, early_stopping=False,
                          eos_token_id=eos, pad_token_id=eos, return_dict_in_generate=True, output_scores=True)
        found = beam_search(model, idx, 10, 3, length_penalty, stop=[[eos]])
        for h, sequence, score in zip(found, out.sequences, out.sequences_scores):
            length = h.ids.size(0)
            assert torch.equal(h.ids, sequence[:length]) and (sequence[length:] == eos).all()
            assert h.score == pytest.approx(score.item(), rel=1e-6, abs=1e-5)  # float32 sums, in another order
