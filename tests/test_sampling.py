"""sampling.py: every filter, penalty and decoding loop, checked against hand calculations
and against independent references (the Hugging Face transformers logits processors, the
OpenAI frequency/presence formula written out here, hand-rolled decoding loops, an exhaustive
search, and Hugging Face's GPT-2 beam search loaded with the same weights).

No expected value below comes from sampling.py itself."""
import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from conftest import META, hugging_face_models, make_sharp_model, make_tiny_model
from hf_gpt2 import hf_copy
from sampling import (
    Decoding,
    entropy,
    Run,
    apply_temperature,
    beam_search,
    categorical,
    frequency_presence_penalty,
    generate,
    greedy,
    min_p_filter,
    no_repeat_ngram,
    process,
    repetition_penalty,
    sample,
    token_counts,
    top_k_filter,
    top_p_filter,
    typical_filter,
)

V = 65
NEG_INF = float("-inf")

# The article's toy distribution: 小 0.7, 冬 0.2, 瓜 0.1, as logits z = log p.
TOY_P = [0.7, 0.2, 0.1]


def toy_logits():
    return torch.tensor([TOY_P], dtype=torch.float32).log()  # (1, 3)


def kept(logits):
    """The token ids that are still finite in a single-row (1, V) tensor."""
    return torch.nonzero(torch.isfinite(logits[0])).flatten().tolist()


def assert_same(ours, reference, atol=1e-6):
    """Equal to atol (rtol 0), with the -inf positions identical."""
    assert ours.shape == reference.shape
    assert torch.equal(torch.isneginf(ours), torch.isneginf(reference)), "different tokens removed"
    torch.testing.assert_close(ours, reference, atol=atol, rtol=0)


# ----------------------------------------------------------------------------- test logits

def processed(logits, context, decoding, prompt_length):
    """The pipeline of `decoding` on one position's logits (B, V), after context (B, T)."""
    return process(logits, Run(context, prompt_length), decoding.stages(META["stoi"]))


def hypotheses(found):
    """beam_search's hypotheses, all of one length, as (ids (K, T + n), scores (K,))."""
    return torch.stack([h.ids for h in found]), torch.tensor([h.score for h in found])


def random_logits(seed, B=4, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, V, generator=g) * scale


def tied_logits(seed, B=4):
    """Integers in [-2, 2]: many exact ties, at the top and at every cut."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 3, (B, V), generator=g).float()


def logits_with_inf(seed, B=4):
    """About a third of the vocabulary already at -inf (each row keeps its first token finite)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, V, generator=g) * 2
    dead = torch.rand(B, V, generator=g) < 0.35
    dead[:, 0] = False
    return z.masked_fill(dead, NEG_INF)


CASES = {
    **{f"randn-{s}": (lambda s=s: random_logits(s)) for s in range(3)},
    **{f"peaked-{s}": (lambda s=s: random_logits(100 + s, scale=4.0)) for s in range(3)},
    "one-row": lambda: random_logits(7, B=1),
    "ties-0": lambda: tied_logits(0),
    "ties-1": lambda: tied_logits(1),
    "inf-0": lambda: logits_with_inf(0),
    "inf-1": lambda: logits_with_inf(1),
}
CASE_IDS = list(CASES)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one thread


def dummy_ids(z):
    return torch.zeros(z.size(0), 1, dtype=torch.long)


# ----------------------------------------------------------------------------- hand-computed values

def test_temperature_on_the_article_example():
    # softmax(log p / 2) = sqrt(p) / sum(sqrt(p))
    # sqrt(0.7) = 0.836660, sqrt(0.2) = 0.447214, sqrt(0.1) = 0.316228, sum = 1.600102
    # -> 0.836660 / 1.600102 = 0.52288, 0.447214 / 1.600102 = 0.27949, 0.316228 / 1.600102 = 0.19763
    probs = F.softmax(apply_temperature(toy_logits(), 2.0), dim=-1)
    torch.testing.assert_close(probs, torch.tensor([[0.5229, 0.2795, 0.1976]]), atol=1e-4, rtol=0)


def test_temperature_then_top2_on_the_article_example():
    # after T = 2 keep 小 and 冬 and renormalise by their sum (not a second softmax):
    # 0.836660 / (0.836660 + 0.447214) = 0.836660 / 1.283874 = 0.65167, 0.447214 / 1.283874 = 0.34833
    probs = F.softmax(top_k_filter(apply_temperature(toy_logits(), 2.0), 2), dim=-1)
    torch.testing.assert_close(probs, torch.tensor([[0.6517, 0.3483, 0.0]]), atol=1e-4, rtol=0)


def test_temperature_limits():
    z = torch.tensor([[3.0, 1.0, 0.0, -2.0]])
    # T -> inf: z / T -> 0, so softmax -> uniform 1/4
    torch.testing.assert_close(F.softmax(apply_temperature(z, 1e6), -1), torch.full((1, 4), 0.25), atol=1e-5, rtol=0)
    # T = 0.01: z / T = [300, 100, 0, -200]: all mass on token 0
    torch.testing.assert_close(F.softmax(apply_temperature(z, 0.01), -1), torch.tensor([[1.0, 0, 0, 0]]),
                               atol=1e-6, rtol=0)
    # T = 1 changes nothing
    assert torch.equal(apply_temperature(z, 1.0), z)


@pytest.mark.parametrize("p, expected", [
    # sorted most likely first, cumulative mass 0.7, 0.9, 1.0; keep up to the token that crosses p
    (0.5, [0]),         # 0.7 >= 0.5 at once
    (0.65, [0]),        # 0.7 >= 0.65
    (0.75, [0, 1]),     # 0.7 < 0.75, 0.9 >= 0.75: 冬 crosses p and is kept
    (0.85, [0, 1]),     # 0.7 < 0.85, 0.9 >= 0.85
    (0.95, [0, 1, 2]),  # 0.9 < 0.95, 1.0 >= 0.95
    (1.0, [0, 1, 2]),   # p = 1 keeps everything
])
def test_top_p_on_the_article_example(p, expected):
    out = top_p_filter(toy_logits(), p)
    assert kept(out) == expected
    # the survivors keep their logits unchanged
    assert torch.equal(out[0, expected], toy_logits()[0, expected])


@pytest.mark.parametrize("logits, p, expected_count", [
    # uniform over 4: softmax is exactly 0.25 each and the cumulative masses 0.25, 0.5, 0.75, 1.0
    # are exact in float, so p sits exactly on a boundary: the token that reaches p is the last kept
    ([0.0, 0.0, 0.0, 0.0], 0.25, 1),
    ([0.0, 0.0, 0.0, 0.0], 0.5, 2),
    ([0.0, 0.0, 0.0, 0.0], 0.75, 3),
    ([0.0, 0.0, 0.0, 0.0], 1.0, 4),
    # p = [0.5, 0.25, 0.125, 0.125] (exact in float): 0.5 + 0.25 = 0.75 reaches p = 0.75 exactly
    ([math.log(0.5), math.log(0.25), math.log(0.125), math.log(0.125)], 0.75, 2),
    ([math.log(0.5), math.log(0.25), math.log(0.125), math.log(0.125)], 0.5, 1),
])
def test_top_p_at_exact_binary_boundaries(logits, p, expected_count):
    z = torch.tensor([logits])
    out = top_p_filter(z, p)
    assert len(kept(out)) == expected_count
    assert_same(out, TopPLogitsWarper(p)(dummy_ids(z), z))


def test_top_p_exact_float_boundary_agrees_with_hugging_face():
    # p = 0.9 sits exactly on the cumulative mass 0.7 + 0.2, where float rounding decides;
    # there we only ask for the same decision as Hugging Face.
    z = toy_logits()
    assert_same(top_p_filter(z, 0.9), TopPLogitsWarper(0.9)(dummy_ids(z), z))


@pytest.mark.parametrize("min_p, expected", [
    (0.0, [0, 1, 2]),   # threshold 0
    (0.1, [0, 1, 2]),   # threshold 0.1 * 0.7 = 0.07 <= 0.1
    (0.2, [0, 1]),      # threshold 0.14: 0.2 stays, 0.1 goes
    (0.5, [0]),         # threshold 0.35: only 0.7
    (1.0, [0]),         # threshold 0.7: only the argmax
])
def test_min_p_on_the_article_example(min_p, expected):
    assert kept(min_p_filter(toy_logits(), min_p)) == expected


def test_min_p_keeps_ties_with_the_argmax_at_one():
    z = torch.tensor([[2.0, 5.0, 5.0, 4.9]])
    assert kept(min_p_filter(z, 1.0)) == [1, 2]


@pytest.mark.parametrize("mass, expected", [
    # p = [0.5, 0.3, 0.2]. H = 0.5 ln 2 + 0.3 ln(1/0.3) + 0.2 ln 5
    #   = 0.346574 + 0.361192 + 0.321888 = 1.029653
    # surprise -ln p = 0.693147, 1.203973, 1.609438
    # distance |surprise - H| = 0.336506, 0.174320, 0.579785
    # most typical first: token 1 (0.3), token 0 (0.5), token 2 (0.2); cumulative 0.3, 0.8, 1.0
    (0.25, [1]),        # 0.3 >= 0.25 already: only token 1, the argmax (token 0) is dropped
    (0.5, [0, 1]),      # 0.3 < 0.5, 0.8 >= 0.5
    (0.9, [0, 1, 2]),   # 0.8 < 0.9, 1.0 >= 0.9
])
def test_typical_on_a_hand_worked_example(mass, expected):
    z = torch.tensor([[0.5, 0.3, 0.2]]).log()
    assert kept(typical_filter(z, mass)) == expected


@pytest.mark.parametrize("mass, expected", [
    # p = [0.5, 0.25, 0.125, 0.125], exact in float. In units of ln 2: surprise 1, 2, 3, 3;
    # H = 0.5 * 1 + 0.25 * 2 + 0.125 * 3 * 2 = 1.75; distance 0.75, 0.25, 1.25, 1.25.
    # Most typical first: token 1, token 0, then tokens 2 and 3 (tied); cumulative 0.25, 0.75, 0.875, 1.0
    (0.25, [1]),           # 0.25 reaches 0.25 exactly: stop there (the argmax is dropped)
    (0.5, [0, 1]),         # 0.25 < 0.5, 0.75 >= 0.5
    (0.75, [0, 1]),        # 0.75 reaches 0.75 exactly: tokens 2 and 3 are not needed
    (0.8, [0, 1, 2, 3]),   # 0.75 < 0.8: the next distance, 1.25, is shared by tokens 2 and 3: both stay
])
def test_typical_at_exact_binary_boundaries(mass, expected):
    z = torch.tensor([[0.5, 0.25, 0.125, 0.125]]).log()
    assert kept(typical_filter(z, mass)) == expected


def test_typical_can_drop_the_argmax():
    z = torch.tensor([[0.5, 0.3, 0.2]]).log()
    out = typical_filter(z, 0.25)
    assert out[0, 0] == NEG_INF  # 0.5 was the most likely token
    assert greedy(out).item() == 1


def test_repetition_penalty_by_hand():
    # context [0, 1, 2, 0], theta = 2: token 0: 2 > 0 -> 2 / 2 = 1 (once, although it appears twice)
    # token 1: -2 <= 0 -> -2 * 2 = -4; token 2: 0 -> 0 * 2 = 0; token 3 not in the context: 1 stays 1
    z = torch.tensor([[2.0, -2.0, 0.0, 1.0]])
    out = repetition_penalty(z, torch.tensor([[0, 1, 2, 0]]), 2.0)
    assert torch.equal(out, torch.tensor([[1.0, -4.0, 0.0, 1.0]]))


def test_repetition_penalty_is_per_row():
    z = torch.tensor([[2.0, -2.0, 0.0, 1.0], [2.0, -2.0, 0.0, 1.0]])
    ctx = torch.tensor([[0, 0], [3, 1]])
    # row 0 penalises token 0 only: [1, -2, 0, 1]; row 1 tokens 3 and 1: [2, -4, 0, 0.5]
    out = repetition_penalty(z, ctx, 2.0)
    assert torch.equal(out, torch.tensor([[1.0, -2.0, 0.0, 1.0], [2.0, -4.0, 0.0, 0.5]]))


def test_repetition_penalty_of_one_changes_nothing():
    z = random_logits(3)
    ctx = torch.randint(0, V, (4, 10), generator=torch.Generator().manual_seed(3))
    assert torch.equal(repetition_penalty(z, ctx, 1.0), z)


def test_token_counts_by_hand():
    # row 0: 3 appears three times, 1 once; row 1: 0 twice, 4 twice
    counts = token_counts(torch.tensor([[3, 1, 3, 3], [0, 4, 4, 0]]), 5)
    assert counts.tolist() == [[0, 1, 0, 3, 0], [2, 0, 0, 0, 2]]


def test_frequency_presence_by_hand():
    # z = 1 everywhere, counts [0, 1, 3, 0], alpha_f = 0.5, alpha_p = 0.25:
    # token 0: 1; token 1: 1 - 1 * 0.5 - 0.25 = 0.25; token 2: 1 - 3 * 0.5 - 0.25 = -0.75; token 3: 1
    z = torch.ones(1, 4)
    out = frequency_presence_penalty(z, torch.tensor([[0, 1, 3, 0]]), 0.5, 0.25)
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.25, -0.75, 1.0]]), atol=1e-7, rtol=0)
    # negative alphas reward repeats: token 2: 1 + 3 * 0.5 + 0.25 = 2.75
    out = frequency_presence_penalty(z, torch.tensor([[0, 1, 3, 0]]), -0.5, -0.25)
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.75, 2.75, 1.0]]), atol=1e-7, rtol=0)


def test_decoding_counts_only_the_generated_tokens():
    # prompt [2, 2, 2] (length 3), generated [1, 2]: counts over the generated part are
    # token 1: 1, token 2: 1 -> z_1 = 0 - 1 * 1.0 - 0.5 = -1.5, z_2 = -1.5
    # (counting the prompt's three 2s as well would give z_2 = 0 - 4 * 1.0 - 0.5 = -4.5)
    dec = Decoding(frequency_penalty=1.0, presence_penalty=0.5)
    ctx = torch.tensor([[2, 2, 2, 1, 2]])
    out = processed(torch.zeros(1, 4), ctx, dec, prompt_length=3)
    torch.testing.assert_close(out, torch.tensor([[0.0, -1.5, -1.5, 0.0]]), atol=1e-7, rtol=0)
    # nothing generated yet: no penalty at all
    assert torch.equal(processed(torch.zeros(1, 4), ctx[:, :3], dec, prompt_length=3), torch.zeros(1, 4))


@pytest.mark.parametrize("n, context, banned", [
    (2, [1, 2, 3, 1], [2]),        # last token 1; bigrams (1,2) (2,3) (3,1): 1 was followed by 2
    (2, [1, 2, 1, 3, 1], [2, 3]),  # 1 was followed by 2 and by 3
    (3, [1, 2, 1, 2], [1]),        # last two 1 2; trigrams (1,2,1) (2,1,2): (1,2) was followed by 1
    (3, [1, 2, 3, 4], []),         # (3, 4) never seen before
    (1, [4, 1, 4, 2], [1, 2, 4]),  # unigrams: every token seen is banned
    (4, [1, 2, 3, 1], []),         # one 4-gram (1,2,3,1) whose prefix (1,2,3) is not the suffix (2,3,1)
    (5, [1, 2, 3, 1], []),         # n larger than the context: no n-gram exists, nothing is banned
    (2, [3], []),                  # a single token: no bigram yet
])
def test_no_repeat_ngram_by_hand(n, context, banned):
    z = torch.zeros(1, 6)
    out = no_repeat_ngram(z, torch.tensor([context]), n)
    assert [i for i in range(6) if out[0, i] == NEG_INF] == banned
    assert torch.equal(out[torch.isfinite(out)], z[torch.isfinite(out)])


def test_greedy_ties_go_to_the_lowest_index():
    z = torch.tensor([[1.0, 3.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0], [NEG_INF, NEG_INF, -1.0, -1.0]])
    assert greedy(z).tolist() == [[1], [0], [2]]


# ----------------------------------------------------------------------------- exactness against Hugging Face

@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("t", [0.05, 0.5, 1.0, 1.7, 10.0])
def test_temperature_matches_hugging_face(case, t):
    z = CASES[case]()
    assert_same(apply_temperature(z, t), TemperatureLogitsWarper(t)(dummy_ids(z), z))


@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("k", [1, 2, 5, 17, 64, 65, 100])
def test_top_k_matches_hugging_face(case, k):
    z = CASES[case]()
    assert_same(top_k_filter(z, k), TopKLogitsWarper(k)(dummy_ids(z), z))


@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("p", [1e-9, 0.05, 0.3, 0.5, 0.8, 0.9, 0.95, 0.999, 1.0])
def test_top_p_matches_hugging_face(case, p):
    z = CASES[case]()
    assert_same(top_p_filter(z, p), TopPLogitsWarper(p)(dummy_ids(z), z))


@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("min_p", [0.0, 0.01, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_min_p_matches_hugging_face(case, min_p):
    z = CASES[case]()
    assert_same(min_p_filter(z, min_p), MinPLogitsWarper(min_p)(dummy_ids(z), z))


@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("mass", [1e-9, 0.1, 0.2, 0.5, 0.9, 0.95, 0.999])
def test_typical_matches_hugging_face(case, mass):
    # (Hugging Face refuses mass = 1; that boundary is tested on its own below.)
    z = CASES[case]()
    assert_same(typical_filter(z, mass), TypicalLogitsWarper(mass)(dummy_ids(z), z))


def test_typical_mass_one_keeps_every_token():
    """mass = 1 is accepted ((0, 1]) and means "keep tokens until their mass reaches 1": every
    token with a finite logit must stay (as top_p = 1 keeps everything, and as Hugging Face's
    generate() treats typical_p = 1.0 as switched off)."""
    removed = {}
    for seed in range(20):
        z = random_logits(seed, scale=3.0)
        out = typical_filter(z, 1.0)
        if not torch.equal(out, z):
            removed[seed] = torch.nonzero(torch.isneginf(out)).tolist()
    assert removed == {}, f"typical_filter(random_logits(seed, scale=3), 1.0) removed {{seed: [[row, token]]}}: {removed}"


def contexts(seed, B=4):
    g = torch.Generator().manual_seed(seed)
    return {
        "long": torch.randint(0, V, (B, 40), generator=g),
        "few-ids": torch.randint(0, 4, (B, 25), generator=g),   # many repeated n-grams
        "short": torch.randint(0, V, (B, 1), generator=g),
        "two": torch.randint(0, 3, (B, 2), generator=g),
    }


@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("theta", [0.5, 1.0, 1.3, 2.0, 10.0])
def test_repetition_penalty_matches_hugging_face(case, theta):
    z = CASES[case]()
    for ctx in contexts(len(case), B=z.size(0)).values():
        assert_same(repetition_penalty(z, ctx, theta), RepetitionPenaltyLogitsProcessor(theta)(ctx, z))


@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 30])
def test_no_repeat_ngram_matches_hugging_face(case, n):
    z = CASES[case]()
    for ctx in contexts(n, B=z.size(0)).values():
        assert_same(no_repeat_ngram(z, ctx, n), NoRepeatNGramLogitsProcessor(n)(ctx, z))


def openai_reference(mu, generated, alpha_frequency, alpha_presence):
    """mu[j] - c[j] * alpha_frequency - float(c[j] > 0) * alpha_presence, token by token, in float64,
    with c the counts of the generated tokens of each row."""
    out = torch.empty(mu.shape, dtype=torch.float64)
    for b in range(mu.size(0)):
        c = Counter(generated[b].tolist())
        for j in range(mu.size(1)):
            out[b, j] = mu[b, j].item() - c[j] * alpha_frequency - float(c[j] > 0) * alpha_presence
    return out


@pytest.mark.parametrize("alphas", [(0.5, 0.0), (0.0, 0.7), (1.3, 0.4), (-0.8, 2.0), (2.0, -2.0)])
@pytest.mark.parametrize("seed", range(3))
def test_frequency_presence_matches_the_openai_formula(alphas, seed):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(3, V, generator=g)
    prompt = torch.randint(0, 6, (3, 7), generator=g)
    generated = torch.randint(0, 6, (3, 12), generator=g)  # ids 0..5: counts up to ~6
    ctx = torch.cat([prompt, generated], dim=1)
    expected = openai_reference(mu, generated, *alphas)
    # the bare function, fed the counts of the generated tokens
    ours = frequency_presence_penalty(mu, token_counts(generated, V), *alphas)
    torch.testing.assert_close(ours.double(), expected, atol=1e-5, rtol=0)  # float32 vs float64 rounding
    # and the pipeline, which must leave the 7 prompt tokens out of the counts
    dec = Decoding(frequency_penalty=alphas[0], presence_penalty=alphas[1])
    ours = processed(mu, ctx, dec, prompt_length=7)
    torch.testing.assert_close(ours.double(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", CASE_IDS)
def test_whole_pipeline_matches_hugging_face_in_order(case):
    """Every stage at once, against Hugging Face's processors in Hugging Face's own order."""
    z = CASES[case]()
    ctx = contexts(1, B=z.size(0))["few-ids"]
    settings = [
        dict(temperature=0.7, top_k=30, top_p=0.9, min_p=0.05, typical_p=0.95, repetition_penalty=1.3,
             no_repeat_ngram_size=2),
        dict(temperature=1.5, top_k=50, top_p=0.5, repetition_penalty=0.8, no_repeat_ngram_size=3),
        dict(temperature=0.3, min_p=0.2, typical_p=0.6, repetition_penalty=2.0),
    ]
    for s in settings:
        hf = [RepetitionPenaltyLogitsProcessor(s["repetition_penalty"])]
        if "no_repeat_ngram_size" in s:
            hf.append(NoRepeatNGramLogitsProcessor(s["no_repeat_ngram_size"]))
        hf.append(TemperatureLogitsWarper(s["temperature"]))
        if "top_k" in s:
            hf.append(TopKLogitsWarper(s["top_k"]))
        if "top_p" in s:
            hf.append(TopPLogitsWarper(s["top_p"]))
        if "min_p" in s:
            hf.append(MinPLogitsWarper(s["min_p"]))
        if "typical_p" in s:
            hf.append(TypicalLogitsWarper(s["typical_p"]))
        expected = LogitsProcessorList(hf)(ctx, z)
        assert_same(processed(z, ctx, Decoding(**s), prompt_length=ctx.size(1)), expected)


# ----------------------------------------------------------------------------- properties

SEEDS = range(40)


def random_settings(seed):
    g = torch.Generator().manual_seed(10_000 + seed)
    u = torch.rand(4, generator=g).tolist()
    k = int(torch.randint(1, V + 10, (1,), generator=g))
    return dict(k=k, p=max(u[0], 1e-6), min_p=u[1], t=0.05 + 3 * u[2], mass=max(u[3], 1e-6))


@pytest.mark.parametrize("seed", SEEDS)
def test_the_argmax_survives_every_filter_but_typical(seed):
    z = random_logits(seed, scale=1 + seed % 5)  # randn: no ties at the top
    s = random_settings(seed)
    top = greedy(z)
    for out in [apply_temperature(z, s["t"]), top_k_filter(z, s["k"]), top_p_filter(z, s["p"]),
                min_p_filter(z, s["min_p"]),
                processed(z, torch.zeros(4, 0, dtype=torch.long),
                        Decoding(temperature=s["t"], top_k=s["k"], top_p=s["p"], min_p=s["min_p"]), 0)]:
        assert torch.isfinite(out.gather(1, top)).all()
        assert torch.equal(greedy(out), top)


@pytest.mark.parametrize("seed", SEEDS)
def test_at_least_one_token_survives_every_filter(seed):
    s = random_settings(seed)
    for z in [random_logits(seed, scale=1 + seed % 7), tied_logits(seed), logits_with_inf(seed)]:
        ctx = torch.randint(0, V, (4, 20), generator=torch.Generator().manual_seed(seed))
        outs = [top_k_filter(z, s["k"]), top_p_filter(z, s["p"]), min_p_filter(z, s["min_p"]),
                typical_filter(z, s["mass"]), top_k_filter(z, 1), top_p_filter(z, 1e-9),
                min_p_filter(z, 1.0), typical_filter(z, 1e-9), no_repeat_ngram(z, ctx, 3),
                processed(z, ctx, Decoding(temperature=s["t"], top_k=s["k"], top_p=s["p"], min_p=s["min_p"],
                                         typical_p=s["mass"], repetition_penalty=1.2, no_repeat_ngram_size=4), 0)]
        for out in outs:
            assert out.shape == z.shape
            assert torch.isfinite(out).any(dim=-1).all()


@pytest.mark.parametrize("seed", range(10))
def test_no_function_edits_its_input(seed):
    s = random_settings(seed)
    z = logits_with_inf(seed) if seed % 2 else random_logits(seed)
    ctx = torch.randint(0, 8, (4, 12), generator=torch.Generator().manual_seed(seed))
    counts = token_counts(ctx, V)
    calls = [
        lambda: greedy(z),
        lambda: sample(z, torch.Generator().manual_seed(0)),
        lambda: apply_temperature(z, s["t"]),
        lambda: top_k_filter(z, s["k"]),
        lambda: top_p_filter(z, s["p"]),
        lambda: min_p_filter(z, s["min_p"]),
        lambda: typical_filter(z, s["mass"]),
        lambda: repetition_penalty(z, ctx, 1.5),
        lambda: frequency_presence_penalty(z, counts, 0.7, 0.3),
        lambda: token_counts(ctx, V),
        lambda: no_repeat_ngram(z, ctx, 2),
        lambda: processed(z, ctx, Decoding(temperature=0.8, top_k=20, top_p=0.9, min_p=0.1, typical_p=0.9,
                                         repetition_penalty=1.3, frequency_penalty=0.5, presence_penalty=0.5,
                                         no_repeat_ngram_size=2), 4),
    ]
    for call in calls:
        before = (z.clone(), ctx.clone(), counts.clone())
        out = call()
        assert torch.equal(z, before[0]) and torch.equal(ctx, before[1]) and torch.equal(counts, before[2])
        assert out.size(0) == 4
        assert out is not z


@pytest.mark.parametrize("B", [1, 3])
def test_every_function_returns_b_by_v(B):
    z = random_logits(5, B=B)
    ctx = torch.randint(0, V, (B, 9), generator=torch.Generator().manual_seed(5))
    for out in [apply_temperature(z, 0.7), top_k_filter(z, 3), top_p_filter(z, 0.5), min_p_filter(z, 0.2),
                typical_filter(z, 0.5), repetition_penalty(z, ctx, 1.4), no_repeat_ngram(z, ctx, 2),
                frequency_presence_penalty(z, token_counts(ctx, V), 0.3, 0.2),
                processed(z, ctx, Decoding(temperature=0.8, top_k=5, repetition_penalty=1.2), 2)]:
        assert out.shape == (B, V) and out.dtype == z.dtype
    assert token_counts(ctx, V).shape == (B, V)
    assert greedy(z).shape == (B, 1) and sample(z).shape == (B, 1)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("call", [
    lambda z: top_k_filter(z, 0),
    lambda z: top_k_filter(z, -3),
    lambda z: top_p_filter(z, 0.0),
    lambda z: top_p_filter(z, -0.1),
    lambda z: top_p_filter(z, 1.01),
    lambda z: min_p_filter(z, -0.01),
    lambda z: min_p_filter(z, 1.5),
    lambda z: typical_filter(z, 0.0),
    lambda z: typical_filter(z, 1.2),
    lambda z: apply_temperature(z, 0.0),
    lambda z: apply_temperature(z, -1.0),
    lambda z: repetition_penalty(z, torch.tensor([[0]]), 0.0),
    lambda z: repetition_penalty(z, torch.tensor([[0]]), -1.2),
    lambda z: no_repeat_ngram(z, torch.tensor([[0]]), 0),
])
def test_functions_reject_out_of_range_settings(call):
    with pytest.raises(ValueError):
        call(torch.zeros(1, 5))


@pytest.mark.parametrize("name, value", [
    ("temperature", -0.1),
    ("top_k", 0),
    ("top_k", -1),
    ("top_p", 0.0),
    ("top_p", 1.5),
    ("min_p", -0.1),
    ("min_p", 1.1),
    ("typical_p", 0.0),
    ("typical_p", 1.1),
    ("repetition_penalty", 0.0),
    ("repetition_penalty", -1.0),
    ("frequency_penalty", 2.5),
    ("frequency_penalty", -2.1),
    ("presence_penalty", 3.0),
    ("presence_penalty", -2.5),
    ("no_repeat_ngram_size", -1),
])
def test_decoding_rejects_out_of_range_values_naming_the_setting(name, value):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        Decoding(**{name: value})


@pytest.mark.parametrize("settings", [
    dict(temperature=0), dict(top_k=1), dict(top_p=1.0), dict(min_p=0.0), dict(min_p=1.0), dict(typical_p=1.0),
    dict(repetition_penalty=0.01), dict(frequency_penalty=2.0), dict(presence_penalty=-2.0),
    dict(no_repeat_ngram_size=0),
])
def test_decoding_accepts_the_boundaries(settings):
    Decoding(**settings)


def test_generate_and_beam_search_reject_bad_settings(tiny_model):
    idx = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="top_p"):
        generate(tiny_model, idx, 2, top_p=0.0)
    with pytest.raises(ValueError, match="num_beams"):
        beam_search(tiny_model, idx, 2, num_beams=0)


# ----------------------------------------------------------------------------- drawing

def test_sample_with_a_seeded_generator_is_repeatable():
    z = random_logits(1)
    a = [sample(z, torch.Generator().manual_seed(42)) for _ in range(3)]
    assert all(torch.equal(a[0], x) for x in a[1:])
    g = torch.Generator().manual_seed(42)
    run1 = torch.cat([sample(z, g) for _ in range(10)], dim=1)
    g = torch.Generator().manual_seed(42)
    run2 = torch.cat([sample(z, g) for _ in range(10)], dim=1)
    assert torch.equal(run1, run2)


def test_sample_never_draws_a_removed_token():
    z = torch.full((1, V), NEG_INF)
    z[0, 17] = 0.3
    g = torch.Generator().manual_seed(0)
    assert all(sample(z, g).item() == 17 for _ in range(50))


def test_sample_frequencies_follow_the_softmax():
    # 200000 draws from the toy distribution: the standard error of each frequency is at most
    # sqrt(0.7 * 0.3 / 200000) = 0.001, so 0.006 is six standard errors.
    z = toy_logits().expand(200_000, 3)
    draws = sample(z, torch.Generator().manual_seed(0)).flatten()
    freq = torch.bincount(draws, minlength=3).double() / draws.numel()
    torch.testing.assert_close(freq, torch.tensor(TOY_P, dtype=torch.float64), atol=0.006, rtol=0)


def test_a_draw_inverts_the_cumulative_distribution_of_torch_rand():
    """The textbook draw, by hand: u from torch.rand with the same seed, then the first token whose
    cumulative probability exceeds u. For 0.7, 0.2, 0.1 the cumulative sums are 0.7, 0.9, 1.0."""
    us = torch.rand(50, generator=torch.Generator().manual_seed(3)).tolist()
    by_hand = [0 if u < 0.7 else 1 if u < 0.9 else 2 for u in us]
    g = torch.Generator().manual_seed(3)
    assert [categorical(torch.tensor([TOY_P]), g).item() for _ in range(50)] == by_hand
    assert len(set(by_hand)) == 3


@pytest.mark.parametrize("u", [0.0, 0.5, 1 - 2 ** -24])  # the smallest and the largest float32 torch.rand gives
def test_a_token_of_probability_zero_never_comes_out(u, monkeypatch):
    import sampling

    monkeypatch.setattr(sampling, "uniform", lambda rows, generator=None, device=None: torch.full((rows,), u))
    probs = torch.tensor([[0.0, 0.3, 0.0, 0.2, 0.0, 0.0], [0.0, 0.0, 0.0, 1e-30, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0, 0.0, 0.7]])
    chosen = categorical(probs)[:, 0].tolist()  # (3,)
    assert all(probs[row, i] > 0 for row, i in enumerate(chosen)), chosen
    assert chosen == {0.0: [1, 3, 0], 0.5: [1, 3, 5], 1 - 2 ** -24: [3, 3, 5]}[u]


def test_sample_with_one_generator_per_row_matches_each_row_alone():
    z = random_logits(9, B=3, scale=0.5)
    seeds = [5, 6, 7]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    batched = torch.cat([sample(z, gens) for _ in range(20)], dim=1)  # (3, 20)
    for row, s in enumerate(seeds):
        g = torch.Generator().manual_seed(s)
        alone = torch.cat([sample(z[row:row + 1], g) for _ in range(20)], dim=1)  # (1, 20)
        assert torch.equal(batched[row:row + 1], alone)
    # and the rows do not all draw the same thing
    assert not torch.equal(batched[0], batched[1])


# ----------------------------------------------------------------------------- generate()

def prompt(B=2, T=5, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def hand_greedy(model, idx, n, rep=1.0, freq=0.0, pres=0.0):
    """argmax of the model's last logits over the context cropped to block_size, n times,
    with the CTRL and OpenAI penalties written out token by token."""
    bs = model.config.block_size
    P = idx.size(1)
    for _ in range(n):
        logits = model(idx[:, -bs:])[0][:, -1, :].clone()  # (B, V)
        for b in range(idx.size(0)):
            for tok in set(idx[b].tolist()):  # CTRL: every distinct token of prompt + generated
                x = logits[b, tok].item()
                logits[b, tok] = x / rep if x > 0 else x * rep
            c = Counter(idx[b, P:].tolist())  # OpenAI: generated tokens only
            for tok, count in c.items():
                logits[b, tok] -= count * freq + pres
        nxt = torch.tensor([[max(range(V), key=lambda j: (logits[b, j].item(), -j))] for b in range(idx.size(0))])
        idx = torch.cat([idx, nxt], dim=1)
    return idx


def test_temperature_zero_is_a_hand_rolled_greedy_loop(tiny_model):
    idx = prompt()
    # within block_size (5 + 11 = 16 positions): the cache changes nothing
    assert torch.equal(generate(tiny_model, idx, 11, temperature=0), hand_greedy(tiny_model, idx, 11))
    # past block_size without the cache: the context is the last block_size tokens
    assert torch.equal(generate(tiny_model, idx, 30, temperature=0, use_cache=False),
                       hand_greedy(tiny_model, idx, 30))


def test_greedy_with_penalties_is_a_hand_rolled_loop():
    model = make_sharp_model(1)
    idx = prompt(B=3, T=6, seed=1)
    for rep, freq, pres in [(1.5, 0.0, 0.0), (1.0, 0.8, 0.0), (1.0, 0.0, 1.5), (1.3, 0.4, 0.6), (0.7, -0.5, 0.0)]:
        ours = generate(model, idx, 25, temperature=0, repetition_penalty=rep, frequency_penalty=freq,
                        presence_penalty=pres, use_cache=False)
        assert torch.equal(ours, hand_greedy(model, idx, 25, rep, freq, pres)), (rep, freq, pres)
    # the penalties do change the output here, so the comparison above is not empty
    assert not torch.equal(generate(model, idx, 25, temperature=0, use_cache=False),
                           generate(model, idx, 25, temperature=0, repetition_penalty=1.5, use_cache=False))


def test_no_repeat_unigram_generates_only_new_tokens(tiny_model):
    idx = torch.tensor([[0, 1, 2, 3, 4]])
    out = generate(tiny_model, idx, 40, temperature=0, no_repeat_ngram_size=1)
    assert len(set(out[0].tolist())) == 45  # every one of the 45 tokens differs from all the others
    out = generate(tiny_model, idx, 40, temperature=1.0, no_repeat_ngram_size=1,
                   generator=torch.Generator().manual_seed(3))
    assert len(set(out[0].tolist())) == 45


def test_same_seed_same_tokens_different_seed_different_tokens(tiny_model):
    idx = prompt(B=1)

    def run(seed):
        return generate(tiny_model, idx, 50, temperature=1.0, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    # the random model is close to uniform over 65 tokens: two seeds agreeing on 50 draws has
    # probability around 65 ** -50
    assert not torch.equal(a, c)
    assert a.shape == (1, 55) and torch.equal(a[:, :5], idx)


def test_top_k_one_sampling_is_greedy(tiny_model):
    idx = prompt(B=2)
    for use_cache in (True, False):
        sampled = generate(tiny_model, idx, 30, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(0),
                           use_cache=use_cache)
        assert torch.equal(sampled, generate(tiny_model, idx, 30, temperature=0, use_cache=use_cache))


def test_stages_are_in_the_documented_order():
    dec = Decoding(temperature=0.8, top_k=10, top_p=0.9, min_p=0.05, typical_p=0.9, repetition_penalty=1.2,
                   frequency_penalty=0.5, presence_penalty=0.1, no_repeat_ngram_size=3)
    names = [stage.name for stage in dec.stages()]
    expected = ["repetition", "frequency", "no repeat", "temperature", "top-k", "top-p", "min-p", "typical"]
    assert len(names) == len(expected)
    for name, word in zip(names, expected):
        assert word in name, names
    # greedy keeps the penalties and drops the warpers
    greedy_names = [stage.name for stage in Decoding(temperature=0, top_k=3, repetition_penalty=1.2).stages()]
    assert len(greedy_names) == 1 and "repetition" in greedy_names[0]
    # the defaults (pure sampling at T = 1) change nothing
    assert Decoding().stages() == []


def test_order_matters_penalty_before_temperature():
    # frequency penalty then temperature: (z - c * 1.0) / 2; z = [2, 2], token 1 generated once
    # -> [1, 0.5]. The other order, z / 2 - c, would give [1, 0].
    # (CTRL's penalty commutes with temperature, both being positive scalings, so the
    # frequency penalty is the one that shows the order.)
    z = torch.tensor([[2.0, 2.0]])
    out = processed(z, torch.tensor([[0, 1]]), Decoding(temperature=2.0, frequency_penalty=1.0), prompt_length=1)
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.5]]), atol=1e-7, rtol=0)


def test_order_matters_penalties_before_top_k():
    z = torch.tensor([[2.0, 1.5, 0.0]])
    # repetition penalty 2 on token 0 (in the context): [1, 1.5, 0]; then top-1 keeps token 1.
    # (top-k first would keep token 0.)
    out = processed(z, torch.tensor([[0]]), Decoding(repetition_penalty=2.0, top_k=1), prompt_length=1)
    assert kept(out) == [1] and out[0, 1] == 1.5
    # no-repeat bigram bans token 0 (context 0 0: 0 was followed by 0); top-1 then keeps token 1.
    # (top-k first would keep token 0 and the ban would leave nothing.)
    out = processed(z, torch.tensor([[0, 0]]), Decoding(no_repeat_ngram_size=2, top_k=1), prompt_length=2)
    assert kept(out) == [1]


def test_order_matters_temperature_before_top_p():
    # after T = 2 the toy distribution is [0.5229, 0.2795, 0.1976]: top-p 0.6 needs 0.5229 + 0.2795
    # -> keeps 小 and 冬. (top-p 0.6 before temperature would keep 小 alone: 0.7 >= 0.6.)
    out = processed(toy_logits(), torch.zeros(1, 0, dtype=torch.long), Decoding(temperature=2.0, top_p=0.6), 0)
    assert kept(out) == [0, 1]
    torch.testing.assert_close(out[0, :2], toy_logits()[0, :2] / 2, atol=1e-7, rtol=0)


# ----------------------------------------------------------------------------- beam search

def test_one_beam_is_greedy(tiny_model):
    idx = prompt(B=1)
    for use_cache in (True, False):
        beams, scores = hypotheses(beam_search(tiny_model, idx, 30, num_beams=1, use_cache=use_cache))
        assert beams.shape == (1, 35) and scores.shape == (1,)
        assert torch.equal(beams, generate(tiny_model, idx, 30, temperature=0, use_cache=use_cache))


@torch.no_grad()
def summed_log_prob(model, seq, prompt_length):
    """sum_t log p(seq[t] | seq[:t]) over the generated positions, one plain forward pass each
    (the context cropped to block_size)."""
    bs = model.config.block_size
    total = 0.0
    for t in range(prompt_length, seq.numel()):
        logits = model(seq[None, :t][:, -bs:])[0][0, -1]
        total += F.log_softmax(logits.double(), dim=-1)[seq[t]].item()
    return total


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
@pytest.mark.parametrize("which", ["tiny", "sharp"])
def test_beam_scores_are_recomputed_log_probabilities(tiny_model, which, length_penalty):
    model = tiny_model if which == "tiny" else make_sharp_model(2)
    idx = prompt(B=1, T=4, seed=3)
    n = 10  # 4 + 10 = 14 positions: within block_size
    beams, scores = hypotheses(beam_search(model, idx, n, num_beams=3, length_penalty=length_penalty))
    assert beams.shape == (3, 14) and scores.shape == (3,)
    assert all(torch.equal(b[:4], idx[0]) for b in beams)
    assert len({tuple(b.tolist()) for b in beams}) == 3  # three different continuations
    for b, s in zip(beams, scores):
        expected = summed_log_prob(model, b, 4) / n ** length_penalty
        assert abs(s.item() - expected) < 1e-4, (s.item(), expected)
    assert scores[0] >= scores[1] >= scores[2]  # best first


def test_beam_scores_past_block_size_without_cache(tiny_model):
    idx = prompt(B=1, T=4, seed=4)
    beams, scores = hypotheses(beam_search(tiny_model, idx, 20, num_beams=3, use_cache=False))  # 24 positions > 16
    for b, s in zip(beams, scores):
        assert abs(s.item() - summed_log_prob(tiny_model, b, 4) / 20) < 1e-5
    assert scores[0] >= scores[1] >= scores[2]


@torch.no_grad()
def test_wide_beam_equals_exhaustive_search():
    """Two new tokens with num_beams = V keeps every first token, so beam search is exact: its
    beams must be the top V of all V * V two-token continuations, scored independently."""
    model = make_sharp_model(3)
    idx = prompt(B=1, T=5, seed=5)
    first = F.log_softmax(model(idx)[0][0, -1].double(), -1)  # (V,)
    seqs = torch.cat([idx.expand(V, -1), torch.arange(V)[:, None]], dim=1)  # (V, 6): every first token
    second = F.log_softmax(model(seqs)[0][:, -1].double(), -1)  # (V, V)
    total = (first[:, None] + second).flatten()  # (V * V,), index a * V + b
    best = torch.argsort(total, descending=True)[:V]
    beams, scores = hypotheses(beam_search(model, idx, 2, num_beams=V, length_penalty=0.0))
    expected = torch.stack([best // V, best % V], dim=1)
    assert torch.equal(beams[:, 5:], expected)
    torch.testing.assert_close(scores.double(), total[best], atol=1e-5, rtol=0)




@pytest.fixture(scope="module", params=["tiny", "sharp"])
def model_pair(request):
    model = make_tiny_model() if request.param == "tiny" else make_sharp_model(4)
    return model, hf_copy(model)


@hugging_face_models
@torch.no_grad()
def test_hugging_face_gpt2_has_our_logits(model_pair):
    model, hf = model_pair
    idx = prompt(B=3, T=16, seed=6)
    torch.testing.assert_close(hf(idx).logits, model(idx)[0], atol=1e-5, rtol=0)


@hugging_face_models
@torch.no_grad()
@pytest.mark.parametrize("use_cache", [True, False])
def test_beam_search_matches_hugging_face(model_pair, use_cache):
    model, hf = model_pair
    for seed in range(3):
        idx = prompt(B=1, T=5, seed=10 + seed)
        out = hf.generate(idx, attention_mask=torch.ones_like(idx), num_beams=3, num_return_sequences=3,
                          do_sample=False, max_new_tokens=8, length_penalty=1.0, early_stopping=False,
                          eos_token_id=None, pad_token_id=0, return_dict_in_generate=True, output_scores=True)
        beams, scores = hypotheses(beam_search(model, idx, 8, num_beams=3, length_penalty=1.0, use_cache=use_cache))
        assert torch.equal(beams[0], out.sequences[0])
        assert torch.equal(beams, out.sequences)
        torch.testing.assert_close(scores, out.sequences_scores, atol=1e-5, rtol=0)


@hugging_face_models
@torch.no_grad()
def test_greedy_matches_hugging_face(model_pair):
    model, hf = model_pair
    idx = prompt(B=2, T=4, seed=20)
    out = hf.generate(idx, attention_mask=torch.ones_like(idx), do_sample=False, max_new_tokens=12,
                      eos_token_id=None, pad_token_id=0)
    assert torch.equal(generate(model, idx, 12, temperature=0), out)


def test_entropy_by_hand():
    # uniform over 4: -4 * (1/4) ln(1/4) = ln 4; one certain token: 0; a removed (-inf) token adds nothing;
    # p = (1/2, 1/4, 1/4): -(1/2 ln 1/2 + 2 * 1/4 ln 1/4) = 1.5 ln 2
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0],
                           [0.0, -float("inf"), -float("inf"), -float("inf")],
                           [math.log(0.5), math.log(0.25), math.log(0.25), -float("inf")]])
    torch.testing.assert_close(entropy(logits), torch.tensor([math.log(4), 0.0, 1.5 * math.log(2)]))
