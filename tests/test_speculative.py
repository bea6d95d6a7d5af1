"""speculative.py: speculative decoding must give the target model's own text, token for token
when greedy and in distribution when sampling.

References: sampling.generate and sampling.stream (plain decoding, tested elsewhere against
Hugging Face), the rule's formula summed by hand, the target's exact two-character distribution
with a chi-square test, Hugging Face's assisted generation, and counts made by collections.Counter.
No expected value comes from speculative.py itself."""
import copy
import math
import os
import re
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

import checkpoint
import sample
import sampling
from conftest import META, ROOT, hugging_face_models, make_sharp_model, make_tiny_model
from data.shakespeare_char import prepare
from model import KVCache
from sampling import Decoding
from speculative import (
    ModelDrafter,
    NgramDrafter,
    WindowedModel,
    accept_greedy,
    accept_or_resample,
    acceptance_probability,
    draft,
    ngram_counts,
    residual,
    speculative_generate,
    speculative_stream,
    verify,
)
from hf_gpt2 import hf_copy
from sampling import window_start
from test_sampling import prompt

STOI, ITOS = META["stoi"], META["itos"]
TEXT = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?

All:
Resolved. resolved.
"""  # a few lines of Tiny Shakespeare: the n-gram table of the tests
DRAWS = 20_000  # texts of the chi-square test
PENALTIES = dict(repetition_penalty=1.3, frequency_penalty=0.5, no_repeat_ngram_size=4, dry_multiplier=0.8)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one thread


def noisy_copy(model, std=0.02, seed=0):
    """The model with a little noise on every weight: a drafter that agrees with it often, not always."""
    copied = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in copied.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return copied


def rounds_of(target, drafter, idx, n, decoding, k, generator=None):
    """(the generated ids (1, T + n), the rounds)."""
    rounds = list(speculative_stream(target, drafter, idx, n, decoding, k, generator, STOI))
    return torch.cat([idx[0], *(r.tokens for r in rounds)])[None], rounds


# ----------------------------------------------------------------------------- the windows

@pytest.mark.parametrize("block_size", [1, 2, 3, 16])
@pytest.mark.parametrize("prompt_length", [1, 5, 16, 17, 40])
def test_window_start_is_the_schedule_of_plain_cached_decoding(block_size, prompt_length):
    """Drive sampling.model_input as stream() does and read where each context begins."""
    model = make_tiny_model(block_size=block_size)
    cache = KVCache(model.config, 1)
    ids, new = torch.zeros(1, prompt_length, dtype=torch.long), prompt_length
    for t in range(prompt_length, prompt_length + 100):  # predicting the token at index t
        fed = sampling.model_input(ids, cache, block_size, new)  # (1, n)
        cache.advance(fed.size(1))
        assert window_start(t, prompt_length, block_size) == t - cache.length, t
        ids, new = torch.cat((ids, ids[:, :1]), dim=1), 1


@torch.no_grad()
@pytest.mark.parametrize("chunks", [[1] * 30, [3] * 10, [8, 8, 8, 6], [17, 13]])
def test_windowed_model_gives_each_position_the_logits_plain_cached_decoding_gives(chunks):
    """A text past block_size read in chunks, with rollbacks of 0 to 2 tokens: every position's
    logits equal those stream() computed for it (observe='logits')."""
    model = make_sharp_model(3)
    idx = prompt(B=1, T=20, seed=3)
    seen = []
    steps = list(sampling.stream(model, idx, 30, Decoding(), torch.Generator().manual_seed(0),
                                 observe=lambda name, x: seen.append(x) if name == "logits" else None))
    text = torch.cat([idx, *(s.ids for s in steps)], dim=1)  # (1, 50)
    reader, t = WindowedModel(model, 20), 20
    for i, size in enumerate(chunks):
        end = min(t + size, 50)
        logits = reader.logits(text[:, :end], t)  # (end - t + 1, V), indices t .. end
        for j, row in enumerate(logits[:min(end, 49) - t + 1]):
            torch.testing.assert_close(row, seen[t + j - 20][0], atol=1e-5, rtol=0)
        back = i % 3 if end < 49 else 0  # take back the last 0, 1 or 2 tokens, as a rejection does
        reader.rollback(end - back)
        t = end - back + 1
        if t >= 50:
            break
    assert reader.passes > len(chunks)  # restarts inside chunks were split


# ----------------------------------------------------------------------------- greedy: the very tokens

def drafter_for(kind, target, idx):
    """A model drafter (a noisy copy of the target), or an n-gram table of the literal text and of
    the target's plain greedy continuation of idx, so that some drafts stand and some fall."""
    if kind == "model":
        return ModelDrafter(noisy_copy(target))
    continuation = sampling.generate(target, idx, 60, temperature=0)[0]
    return NgramDrafter(TEXT + checkpoint.decode(continuation, ITOS), STOI, order=4, min_count=1)


@pytest.mark.parametrize("kind", ["model", "ngram"])
@pytest.mark.parametrize("k", [1, 2, 4, 7])
@pytest.mark.parametrize("penalties", [{}, PENALTIES], ids=["plain", "penalties"])
def test_greedy_is_plain_greedy_past_block_size(kind, k, penalties):
    """A 20-token prompt and 60 new tokens on a model of block_size 16: the windows restart
    inside rounds, and the text is still plain greedy decoding's, character for character."""
    target = make_sharp_model(0)
    idx = prompt(B=1, T=20, seed=k)
    decoding = Decoding(temperature=0, **penalties)
    expected = sampling.generate(target, idx, 60, decoding, stoi=STOI)
    ours, rounds = rounds_of(target, drafter_for(kind, target, idx), idx, 60, decoding, k)
    assert torch.equal(ours, expected)
    accepted, drafted = sum(r.verdict.accepted for r in rounds), sum(len(r.drafted) for r in rounds)
    assert 0 < accepted < drafted  # drafts stood and drafts fell
    assert sum(r.passes for r in rounds) > len(rounds)  # some rounds were split at a restart


def test_a_drafter_equal_to_the_target_is_always_right():
    target = make_sharp_model(1)
    idx = prompt(B=1, T=20, seed=1)
    ours, rounds = rounds_of(target, ModelDrafter(target), idx, 60, Decoding(temperature=0), 4)
    assert torch.equal(ours, sampling.generate(target, idx, 60, temperature=0))
    assert all(r.verdict.accepted == len(r.drafted) for r in rounds)
    assert [len(r.tokens) for r in rounds] == [5] * 12  # 4 drafts and the target's token, 12 times


# ----------------------------------------------------------------------------- the rule, exactly

def Q(*row):
    return torch.tensor(row, dtype=torch.float64)


RULE_CASES = {
    "q 0 where p > 0": (Q(0.5, 0.3, 0.2, 0.0), Q(0.6, 0.4, 0.0, 0.0)),
    "p = q": (Q(0.1, 0.2, 0.3, 0.4), Q(0.1, 0.2, 0.3, 0.4)),
    "disjoint supports": (Q(0.5, 0.5, 0.0, 0.0), Q(0.0, 0.0, 0.3, 0.7)),
    "p one-hot": (Q(0.0, 1.0, 0.0, 0.0), Q(0.25, 0.25, 0.25, 0.25)),
    "q one-hot": (Q(0.1, 0.2, 0.3, 0.4), Q(1.0, 0.0, 0.0, 0.0)),
    "both one-hot, apart": (Q(0.0, 0.0, 0.0, 1.0), Q(1.0, 0.0, 0.0, 0.0)),
    "q flatter": (Q(0.7, 0.2, 0.1, 0.0), Q(0.25, 0.25, 0.25, 0.25)),
    "overlapping": (Q(0.05, 0.45, 0.15, 0.35), Q(0.3, 0.1, 0.4, 0.2)),
}


@pytest.mark.parametrize("case", list(RULE_CASES))
def test_the_output_of_the_rule_has_exactly_the_distribution_p(case):
    """P(y) = sum_x q(x) [a(x) [y = x] + (1 - a(x)) r(y)], with a = acceptance_probability and
    r = residual, the rule's own functions, equals p(y)."""
    p, q = RULE_CASES[case]
    r = residual(p, q)  # (V,)
    total = torch.zeros_like(p)
    for x in torch.nonzero(q).flatten():  # the tokens the drafter can propose
        a = acceptance_probability(p[None], q[None], x[None])[0]
        total += q[x] * ((1 - a) * r)
        total[x] += q[x] * a
    torch.testing.assert_close(total, p, atol=1e-6, rtol=0)


def test_residual_by_hand():
    # p - q = (0.2, -0.1, -0.1, 0): only the first token has mass q lacks
    torch.testing.assert_close(residual(Q(0.5, 0.3, 0.2, 0.0), Q(0.3, 0.4, 0.3, 0.0)), Q(1, 0, 0, 0))
    # p - q = (0.1, 0.1, -0.2): half and half
    torch.testing.assert_close(residual(Q(0.3, 0.3, 0.4), Q(0.2, 0.2, 0.6)), Q(0.5, 0.5, 0))
    torch.testing.assert_close(residual(Q(0.3, 0.7), Q(0.3, 0.7)), Q(0.3, 0.7))  # p = q: p


def test_accept_or_resample_follows_the_uniform_numbers():
    """Drafts (0, 1, 2) with min(1, p/q) = 1, 0.5, 0.25 at the three positions (by hand)."""
    q = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.8, 0.2], [0.0, 0.2, 0.8]])
    p = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.4, 0.6], [0.8, 0.0, 0.2], [0.0, 0.0, 1.0]])
    drafted = torch.tensor([0, 1, 2])
    torch.testing.assert_close(acceptance_probability(p[:3], q, drafted), torch.tensor([1.0, 0.5, 0.25]))

    def verdict(*u):
        return tuple(int(x) for x in accept_or_resample(p, q, drafted, torch.tensor(u)))

    # rejected at the second: residual norm(max(0, (0, 0.4, 0.6) - (0, 0.8, 0.2))) = token 2 alone
    assert verdict(0.99, 0.5, 0.0) == (1, 2)
    # rejected at the third: residual of (0.8, 0, 0.2) - (0, 0.2, 0.8) = token 0 alone
    assert verdict(0.99, 0.49, 0.25) == (2, 0)
    # all three stand: one more token from p_4 = token 2
    assert verdict(0.99, 0.49, 0.24) == (3, 2)
    # the same three rounds at once, as rows of a batch
    n, token = accept_or_resample(p.expand(3, 4, 3), q.expand(3, 3, 3), drafted.expand(3, 3),
                                  torch.tensor([[0.99, 0.5, 0.0], [0.99, 0.49, 0.25], [0.99, 0.49, 0.24]]))
    assert n.tolist() == [1, 2, 3] and token.tolist() == [2, 0, 2]


def test_accept_greedy_by_hand():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 3.0], [0.0, 0.0, 1.0]])  # argmaxes 1, 0 (tie), 2

    def verdict(*drafted):
        return tuple(int(x) for x in accept_greedy(logits, torch.tensor(drafted)))

    assert verdict(1, 2) == (1, 0) and verdict(1, 0) == (2, 2) and verdict(0, 0) == (0, 1)


# ----------------------------------------------------------------------------- stop strings, seeds, refusals

def test_a_stop_string_in_the_middle_of_a_round_ends_the_text_there():
    """A drafter equal to the target makes rounds of 5 tokens; the stop string ends at the 8th
    new token, inside the second round: the text is plain greedy decoding's, up to the stop."""
    target = make_sharp_model(1)
    idx = prompt(B=1, T=6, seed=2)
    plain = sampling.generate(target, idx, 12, temperature=0)[0, 6:].tolist()
    stop = checkpoint.decode(plain[5:8], ITOS)
    assert stop not in checkpoint.decode(plain[:7], ITOS)  # it first completes at the 8th token
    decoding = Decoding(temperature=0, stop=(stop,))
    expected = [s.ids[0, 0].item() for s in sampling.stream(target, idx, 12, decoding, stoi=STOI)]
    ours, rounds = rounds_of(target, ModelDrafter(target), idx, 12, decoding, 4)
    assert ours[0, 6:].tolist() == expected == plain[:8]
    assert [len(r.tokens) for r in rounds] == [5, 3] and rounds[-1].finished and rounds[-1].verdict.accepted == 4


def test_the_same_seed_gives_the_same_text():
    target = make_sharp_model(2)
    drafter = ModelDrafter(noisy_copy(target, std=0.05))
    idx = prompt(B=1, T=5, seed=4)

    def text(seed):
        return speculative_generate(target, drafter, idx, 40, Decoding(top_k=20), 3, torch.Generator().manual_seed(seed))

    assert torch.equal(text(1), text(1)) and not torch.equal(text(1), text(2))


@pytest.mark.parametrize("settings", [dict(xtc_probability=0.5), dict(mirostat=2)])
def test_a_decoding_that_draws_or_keeps_state_is_refused(settings):
    with pytest.raises(ValueError, match="XTC and mirostat"):
        speculative_generate(make_tiny_model(), NgramDrafter(TEXT, STOI), prompt(B=1), 5, Decoding(**settings))


def test_a_batch_is_refused():
    with pytest.raises(ValueError, match="one prompt at a time, got a batch of 2"):
        speculative_generate(make_tiny_model(), NgramDrafter(TEXT, STOI), prompt(B=2), 5)


@pytest.mark.parametrize("temperature", [0, 1])
def test_the_text_ends_where_nothing_is_left_to_draw(temperature):
    """No repeated 1-gram: after a 1-character prompt the target can write each of the 64 other
    characters once, then nothing; greedy, the very text of stream(), which ends there too."""
    target = make_sharp_model(3)
    idx = prompt(B=1, T=1, seed=6)
    decoding = Decoding(temperature=temperature, no_repeat_ngram_size=1)
    ours, rounds = rounds_of(target, ModelDrafter(noisy_copy(target)), idx, 100, decoding, 4,
                             torch.Generator().manual_seed(0))
    assert sorted(ours[0].tolist()) == list(range(65)) and rounds[-1].finished
    if temperature == 0:
        plain = [s.ids[0, 0].item() for s in sampling.stream(target, idx, 100, decoding)]
        assert ours[0, 1:].tolist() == plain[:-1] and plain[-1] == -1


# ----------------------------------------------------------------------------- the caches roll back

def test_after_a_rejection_both_caches_hold_the_accepted_tokens(monkeypatch):
    """Every token of the text but the newest (the target's own, read in the next round): the
    accepted length. KVCache.truncate is what takes the rejected drafts back."""
    target = make_sharp_model(2)
    drafter = ModelDrafter(noisy_copy(target, std=0.05))
    made, truncated = [], []
    new_cache, truncate = target.new_cache, KVCache.truncate
    monkeypatch.setattr(target, "new_cache", lambda B, room=0: made.append(new_cache(B, room)) or made[-1])
    monkeypatch.setattr(KVCache, "truncate", lambda cache, n: truncated.append((cache, n)) or truncate(cache, n))
    idx = prompt(B=1, T=4, seed=5)
    text, rejections = idx.size(1), 0
    for r in speculative_stream(target, drafter, idx, 12, Decoding(), 4, torch.Generator().manual_seed(0)):
        text += len(r.tokens)
        if r.verdict.accepted < len(r.drafted):
            rejections += 1
            (target_cache,), drafter_cache = made, drafter.reader.cache
            assert target_cache.length == drafter_cache.length == text - 1
            assert (target_cache, text - 1) in truncated and (drafter_cache, text - 1) in truncated
        truncated.clear()
    assert text == 16 and rejections > 0  # within block_size: no restart


# ----------------------------------------------------------------------------- the n-gram drafter

def test_ngram_counts_are_those_of_counter():
    ids = [STOI[c] for c in TEXT]
    for n in range(1, 5):
        codes, counts = ngram_counts(torch.tensor(ids).numpy(), n, 65)
        grams = {tuple(int(code) // 65 ** (n - 1 - j) % 65 for j in range(n)): int(c) for code, c in zip(codes, counts)}
        assert grams == Counter(tuple(ids[i:i + n]) for i in range(len(ids) - n + 1))


def test_ngram_drafter_backs_off_to_a_context_seen_often_enough():
    """'abcabd': after 'ab' come 'c' and 'd' once each; with min_count 3, 'ab' (2) and 'b' (2)
    are too rare and the drafter falls back to the character counts a 2, b 2, c 1, d 1."""
    ids = torch.tensor([[STOI[c] for c in "zab"]])
    expected = torch.full((1, 65), -math.inf)
    expected[0, [STOI["c"], STOI["d"]]] = 0.0  # ln 1
    assert torch.equal(NgramDrafter("abcabd", STOI, order=3, min_count=1).next_logits(ids), expected)
    expected[0, [STOI["a"], STOI["b"]]] = math.log(2)
    assert torch.equal(NgramDrafter("abcabd", STOI, order=3, min_count=3).next_logits(ids), expected)
    short = NgramDrafter("abcabd", STOI, order=8, min_count=1).next_logits(ids[:, -1:])  # a context of one character
    assert torch.equal(short, NgramDrafter("abcabd", STOI, order=2, min_count=1).next_logits(ids))


# ----------------------------------------------------------------------------- Hugging Face's assisted generation

def first_layer(model):
    """A one-layer GPT made of the model's embeddings, first block and final LayerNorm: a drafter
    that agrees with the model now and then."""
    config = copy.copy(model.config)
    config.n_layer = 1
    one = type(model)(config).eval()
    one.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("transformer.h.")
                         or k.startswith("transformer.h.0.")})
    return one


@hugging_face_models
@torch.no_grad()
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_matches_hugging_face_assisted_generation(seed):
    """GPT2LMHeadModel.generate(assistant_model=...) with both models' weights: the same text,
    and the assistant was consulted. GPT-2 stops at n_positions: 4 + 12 tokens = block_size."""
    target = make_sharp_model(seed)
    draft_model = first_layer(target)
    hf_target, hf_draft = hf_copy(target), hf_copy(draft_model)
    calls = []
    hf_draft.register_forward_hook(lambda *_: calls.append(1))
    idx = prompt(B=1, T=4, seed=30 + seed)
    out = hf_target.generate(idx, attention_mask=torch.ones_like(idx), assistant_model=hf_draft, do_sample=False,
                             max_new_tokens=12, eos_token_id=None, pad_token_id=0)
    assert calls
    for k in (1, 3, 5):
        assert torch.equal(speculative_generate(target, ModelDrafter(draft_model), idx, 12, Decoding(temperature=0), k),
                           out)


# ----------------------------------------------------------------------------- the distribution, on the real models

class Remembered:
    """A GPT that remembers its logits by window: the speculative code drives it through its KV
    cache exactly as it drives the model (new_cache, a call with cache=), but each window is
    computed once, by a plain forward pass, so that 20,000 short texts take seconds."""

    def __init__(self, model):
        self.model, self.config = model, model.config
        self.rows, self.read = {}, {}  # window -> logits (n, V) and hidden states (n, C); cache -> the window it holds

    def new_cache(self, batch_size, room=0):
        return KVCache(self.config, 0)  # only its length is used: an empty batch allocates nothing

    def __call__(self, idx, cache, hidden=False):
        window = self.read.get(id(cache), ())[:cache.length] + tuple(idx[0].tolist())
        self.read[id(cache)] = window
        cache.advance(idx.size(1))
        if window not in self.rows:
            logits, _, states = self.model(torch.tensor([window]), hidden=True)  # (1, n, V), (1, n, C)
            self.rows[window] = logits[0], states[0]
        logits, states = (rows[None, len(window) - idx.size(1):] for rows in self.rows[window])  # (1, T, V), (1, T, C)
        return (logits, None, states) if hidden else (logits, None)


def chi_square_p_value(observed, expected, smallest=5.0):
    """Pearson's chi-square test of counts against expected counts (N,), the cells expected fewer
    than `smallest` times pooled into one: P(chi2(cells - 1) >= statistic) = Q((cells - 1) / 2, statistic / 2)."""
    rare = expected < smallest
    if rare.any():
        observed = torch.cat([observed[~rare], observed[rare].sum()[None]])
        expected = torch.cat([expected[~rare], expected[rare].sum()[None]])
    statistic = ((observed - expected) ** 2 / expected).sum()
    return torch.special.gammaincc(torch.tensor((len(expected) - 1) / 2, dtype=torch.float64), statistic / 2).item()


@pytest.fixture(scope="module")
def shipped():
    target, meta, _ = checkpoint.load(checkpoint.DEFAULT_CKPT)
    draft_model, draft_meta, _ = checkpoint.load(os.path.join(ROOT, "checkpoints", "draft.pt"))
    assert draft_meta["itos"] == meta["itos"] == ITOS
    return target, draft_model


@torch.no_grad()
@pytest.mark.parametrize("kind, settings", [("model", {}), ("ngram", dict(temperature=0.8, top_k=12))])
def test_the_first_two_characters_have_the_target_distribution(shipped, kind, settings):
    """DRAWS texts of two characters after '\\nAnd Nero ', made as speculative_stream makes them with
    max_new_tokens=2: the drafter proposes one character (draft()), verify() keeps it or resamples
    it against the target's processed distributions, and where that leaves one character, a round
    with nothing to draft adds the second. The target's distributions are computed exactly, and
    verify() takes all the rounds at once (its leading dimension). The counts pass a chi-square
    test against p(c1) p(c2 | c1), from the target alone."""
    target, draft_model = shipped
    decoding = Decoding(**settings)
    stages = decoding.stages(STOI)
    idx = torch.tensor([checkpoint.encode("\nAnd Nero ", STOI)])  # (1, 10)
    z1 = sampling.process(target(idx)[0][:, -1], sampling.Run(idx, 10), stages)  # (1, V): the first character's logits
    both = torch.cat((idx.repeat(65, 1), torch.arange(65)[:, None]), dim=1)  # (V, 11): after every first character
    z2 = sampling.process(target(both)[0][:, -1], sampling.Run(both, 10), stages)  # (V, V): the second's
    expected = (F.softmax(z1, dim=-1)[0, :, None] * F.softmax(z2, dim=-1)).flatten().double() * DRAWS  # (V * V,)

    drafter = ModelDrafter(Remembered(draft_model)) if kind == "model" else NgramDrafter(TEXT, STOI)
    generator = torch.Generator().manual_seed(0)
    run = decoding.start(idx, generator)
    proposals = []
    for _ in range(DRAWS):  # a new text each time: the drafter proposes the first character
        drafter.reset(idx)
        proposals.append(draft(drafter, run, 1, decoding, stages))
    drafted = torch.stack([x for x, _ in proposals])  # (N, 1)
    q_logits = torch.stack([q for _, q in proposals])  # (N, 1, V)
    p_logits = torch.stack((z1.expand(DRAWS, -1), z2[drafted[:, 0]]), dim=1)  # (N, 2, V): p_1, and p_2 after x_1
    first = verify(p_logits, q_logits, drafted, decoding, generator)
    c1 = torch.where(first.accepted == 1, drafted[:, 0], first.token)  # (N,)
    nothing = torch.zeros(DRAWS, 0, dtype=torch.long)  # (N, 0): the second round has one character to make
    second = verify(z2[c1][:, None], torch.zeros(DRAWS, 0, 65), nothing, decoding, generator)
    c2 = torch.where(first.accepted == 1, first.token, second.token)  # (N,)
    observed = torch.bincount(c1 * 65 + c2, minlength=65 * 65).double()  # (V * V,)
    assert 0.1 < first.accepted.float().mean() < 0.9  # drafts stood and fell many times: both branches of the rule
    assert chi_square_p_value(observed, expected) > 1e-3


# ----------------------------------------------------------------------------- the command line

@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A tiny random target, a one-layer drafter of the same vocabulary, and one of another vocabulary."""
    folder = tmp_path_factory.mktemp("speculative")
    target = make_sharp_model(0)
    paths = {name: str(folder / f"{name}.pt") for name in ("target", "draft", "foreign")}
    checkpoint.save(paths["target"], target, META)
    checkpoint.save(paths["draft"], first_layer(target), META)
    backwards = "".join(reversed(ITOS.values()))  # the same characters, other ids
    foreign = {"vocab_size": 65, "stoi": {c: i for i, c in enumerate(backwards)}, "itos": dict(enumerate(backwards))}
    checkpoint.save(paths["foreign"], first_layer(target), foreign)
    return paths


@pytest.fixture
def ngram_text(tmp_path, monkeypatch):
    """--draft ngram counts the literal text above, not the real one."""
    path = tmp_path / "input.txt"
    path.write_text(TEXT * 10)
    monkeypatch.setattr(prepare, "TEXT", str(path))
    return path


def cli(capsys, *args):
    """(exit status, stdout, stderr) of sample.main in-process."""
    try:
        status = sample.main(list(args))
    except SystemExit as e:  # argparse's errors
        status = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err


STATISTICS = re.compile(r"speculative decoding: (\d+) of (\d+) drafted characters accepted \(\d+\.\d%\), "
                        r"(\d+\.\d\d) characters per pass of the model \((\d+) passes\), \d+ characters/s$")


@pytest.mark.parametrize("drafter", ["draft", "ngram"])
def test_draft_greedy_prints_plain_greedy_text_and_statistics_on_stderr(ckpts, ngram_text, capsys, drafter):
    flags = ["--ckpt", ckpts["target"], "--temperature", "0", "--max_new_tokens", "40", "--repetition_penalty", "1.3"]
    _, plain, _ = cli(capsys, *flags)
    status, out, err = cli(capsys, *flags, "--draft", ckpts.get(drafter, drafter), "--num_draft_tokens", "3")
    assert status == 0 and out == plain
    accepted, drafted, per_pass, passes = STATISTICS.fullmatch(err.strip()).groups()
    assert int(accepted) <= int(drafted) and float(per_pass) == pytest.approx(40 / int(passes), abs=0.005)


def test_draft_sampling_is_repeatable_with_a_seed(ckpts, capsys):
    flags = ["--ckpt", ckpts["target"], "--draft", ckpts["draft"], "--max_new_tokens", "30", "--top_p", "0.9"]
    assert cli(capsys, *flags, "--seed", "3")[1] == cli(capsys, *flags, "--seed", "3")[1] != cli(capsys, *flags, "--seed", "4")[1]


def test_draft_stops_where_plain_greedy_stops(capsys, ngram_text):
    """The shipped model, greedy: its first line after 'ROMEO:' ends at the first newline, wherever in a round."""
    flags = ["--start", "ROMEO:\\n", "--temperature", "0", "--stop", "\\n", "--max_new_tokens", "200"]
    _, plain, _ = cli(capsys, *flags)
    status, out, _ = cli(capsys, *flags, "--draft", "ngram")
    assert status == 0 and out == plain and out.count("\n") == 2  # the prompt's newline, and the final one


def test_walkthrough_with_a_draft_shows_the_rounds(capsys, ngram_text):
    """The shipped model and an n-gram table of the literal text, which it continues: drafts stand and fall."""
    status, out, err = cli(capsys, "--walkthrough", "--draft", "ngram", "--start", "First Citizen:\\n",
                           "--num_draft_tokens", "4", "--steps", "4", "--max_new_tokens", "60", "--seed", "1")
    assert status == 0 and "round 4:" in out and "round 5:" not in out
    assert "   accepted: u < min(1, p/q)" in out and "   rejected: u >= min(1, p/q)" in out
    assert "drawn from the residual norm(max(0, p - q))" in out
    assert out.count("min(1, p/q)") >= 4 + 2  # a header per round, and the explanations
    rest = out.split("...the remaining rounds, the same way:\n\n")[1]
    assert rest.startswith("First Citizen:\n") and len(rest) == len("First Citizen:\n") + 60 + 1
    assert STATISTICS.fullmatch(err.strip())


def test_walkthrough_with_a_draft_greedy(ckpts, capsys):
    status, out, _ = cli(capsys, "--ckpt", ckpts["target"], "--walkthrough", "--draft", ckpts["draft"],
                         "--temperature", "0", "--steps", "30", "--max_new_tokens", "20")
    assert status == 0 and "the model's argmax" in out and "u >=" not in out
    assert out.rstrip("\n").endswith(cli(capsys, "--ckpt", ckpts["target"], "--temperature", "0", "--start",
                                         "\\nAnd Nero ", "--max_new_tokens", "20")[1].rstrip("\n"))


@pytest.mark.parametrize("flags, message", [
    (["--xtc_probability", "0.5"], "--draft: speculative decoding needs a distribution fixed by the context alone"),
    (["--mirostat", "2"], "XTC and mirostat draw or keep state"),
    (["--num_samples", "2"], "--draft decodes one sample with the KV caches: drop --num_samples"),
    (["--num_beams", "3", "--no_cache"], "drop --num_beams, --no_cache"),
    (["--walkthrough", "--lang", "zh"], "--draft explains its rounds in English only: drop --lang zh"),
    (["--num_draft_tokens", "0"], "--num_draft_tokens must be in [1, 16], got 0"),
    (["--num_draft_tokens", "17"], "--num_draft_tokens must be in [1, 16], got 17"),
])
def test_what_draft_cannot_do_exits_2_with_one_line(ckpts, capsys, flags, message):
    status, out, err = cli(capsys, "--ckpt", ckpts["target"], "--draft", ckpts["draft"], *flags)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and message in lines[0], err


@pytest.mark.parametrize("which, message", [
    ("foreign", "its vocabulary is not the model's"),
    ("missing", "no checkpoint at"),
    ("ngram", "which is missing: run python data/shakespeare_char/prepare.py"),
])
def test_a_draft_that_cannot_be_used_exits_1_with_one_line(ckpts, capsys, monkeypatch, tmp_path, which, message):
    monkeypatch.setattr(prepare, "TEXT", str(tmp_path / "missing.txt"))
    name = {"foreign": ckpts["foreign"], "missing": str(tmp_path / "missing.pt"), "ngram": "ngram"}[which]
    status, out, err = cli(capsys, "--ckpt", ckpts["target"], "--draft", name)
    lines = err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
