"""model.py's KVCache and sampling.next_logits: cached decoding must give the logits of a plain
forward pass over the same window, and batched decoding must give each row what it would get
alone. Every reference here is a plain, uncached forward pass or a hand-rolled loop."""
import pytest
import torch

from conftest import make_sharp_model, make_tiny_model
from sampling import beam_search, generate, next_logits
from test_sampling import hypotheses

V = 65
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one thread


def tokens(B, T, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def close(a, b, atol=1e-5):
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


# ----------------------------------------------------------------------------- the cache itself

def test_new_cache_is_empty_with_the_model_shape(tiny_model):
    c = tiny_model.config
    cache = tiny_model.new_cache(3)
    assert cache.length == 0
    shape = (c.n_layer, 3, c.n_head, c.block_size, c.n_embd // c.n_head)
    assert cache.k.shape == shape and cache.v.shape == shape
    assert cache.k.dtype == torch.float32


@torch.no_grad()
@pytest.mark.parametrize("which", ["tiny", "sharp"])
def test_one_token_at_a_time_equals_the_full_forward(tiny_model, which):
    model = tiny_model if which == "tiny" else make_sharp_model(1)
    bs = model.config.block_size
    seq = tokens(2, bs, seed=1)
    full = model(seq)[0]  # (2, 16, V): the reference, no cache
    cache = model.new_cache(2)
    prefill = model(seq[:, :5], cache=cache)[0]  # (2, 5, V)
    close(prefill, full[:, :5])
    assert cache.length == 5
    for t in range(5, bs):  # every position up to block_size
        step = model(seq[:, t:t + 1], cache=cache)[0]  # (2, 1, V)
        close(step[:, 0], full[:, t])
        assert cache.length == t + 1


@torch.no_grad()
@pytest.mark.parametrize("chunks", [[16], [1] * 16, [1, 15], [3, 5, 8], [7, 7, 2], [4, 4, 4, 4], [10, 1, 1, 4]])
def test_chunked_prefill_equals_the_full_forward(tiny_model, chunks):
    model = make_sharp_model(2)
    seq = tokens(3, 16, seed=2)
    full = model(seq)[0]
    cache = model.new_cache(3)
    parts, start = [], 0
    for n in chunks:
        parts.append(model(seq[:, start:start + n], cache=cache)[0])
        start += n
    close(torch.cat(parts, dim=1), full)


@torch.no_grad()
def test_a_full_cache_refuses_more_positions(tiny_model):
    cache = tiny_model.new_cache(1)
    tiny_model(tokens(1, 16), cache=cache)
    with pytest.raises(AssertionError):
        tiny_model(tokens(1, 1), cache=cache)


@torch.no_grad()
def test_reorder_follows_the_rows(tiny_model):
    """After reorder(rows), row i of the cache continues the sequence of row rows[i]."""
    seq = tokens(3, 10, seed=3)
    cache = tiny_model.new_cache(3)
    tiny_model(seq[:, :9], cache=cache)
    rows = torch.tensor([2, 0, 0])
    cache.reorder(rows)
    got = tiny_model(seq[rows, 9:10], cache=cache)[0][:, -1]
    close(got, tiny_model(seq[rows])[0][:, -1])


# ----------------------------------------------------------------------------- next_logits past block_size

@torch.no_grad()
def cached_windows(model, prompt_length, steps, seed=4):
    """Decode greedily with the cache through next_logits; at each step find the window w for
    which a plain forward pass over the last w tokens gives the cached logits (to 1e-5).
    Returns the list of windows (0 where no window matches)."""
    idx = tokens(2, prompt_length, seed=seed)
    cache = model.new_cache(2)
    logits = next_logits(model, idx, cache, new=prompt_length)
    windows = []
    for _ in range(steps):
        match = [w for w in range(1, min(idx.size(1), model.config.block_size) + 1)
                 if torch.allclose(logits, model(idx[:, -w:])[0][:, -1], atol=1e-5, rtol=0)]
        windows.append(match[0] if len(match) == 1 else 0)
        idx = torch.cat([idx, torch.argmax(logits, -1, keepdim=True)], dim=1)
        logits = next_logits(model, idx, cache)
    return windows


def test_next_logits_restarts_from_half_a_block():
    """The documented policy, block_size 16: the cache holds the whole context until it is full
    (16 tokens); the next token then restarts it from the last 16 // 2 = 8 tokens, and it grows
    again to 16. With a 3-token prompt the windows are 3, 4, ..., 16, then 8, 9, ..., 16, then 8, ..."""
    expected = list(range(3, 17)) + list(range(8, 17)) + list(range(8, 17)) + [8, 9]  # 14 + 9 + 9 + 2 = 34 steps
    assert cached_windows(make_sharp_model(3), 3, 34) == expected


@pytest.mark.parametrize("prompt_length, expected", [
    (16, [16] + list(range(8, 17)) + [8]),   # a full prompt: 16, then the first restart at once
    (20, [16] + list(range(8, 17)) + [8]),   # longer than block_size: its last 16 tokens are read
])
def test_next_logits_with_long_prompts(prompt_length, expected):
    assert cached_windows(make_sharp_model(3), prompt_length, len(expected)) == expected


def test_cache_with_a_one_token_block():
    """block_size 1 (a bigram model): every window is the last token alone, so the cache, whatever
    its restart policy, must give what the uncached loop gives (block_size // 2 = 0 tokens to
    restart from is not a window: at least the newest token has to be read)."""
    model = make_tiny_model(block_size=1)
    idx = tokens(2, 3, seed=11)
    assert torch.equal(generate(model, idx, 6, temperature=0, use_cache=True),
                       generate(model, idx, 6, temperature=0, use_cache=False))


# ----------------------------------------------------------------------------- generate and beam search

@torch.no_grad()
def hand_greedy_windows(model, idx, n):
    """Greedy decoding with the restart policy written out by hand: the window w grows by one per
    token and falls back to block_size // 2 when a token would not fit."""
    bs = model.config.block_size
    w = min(idx.size(1), bs)
    for _ in range(n):
        nxt = torch.argmax(model(idx[:, -w:])[0][:, -1], dim=-1, keepdim=True)
        idx = torch.cat([idx, nxt], dim=1)
        w = w + 1 if w < bs else bs // 2
    return idx


@pytest.mark.parametrize("which", ["tiny", "sharp"])
def test_cached_greedy_equals_uncached_within_block_size(tiny_model, which):
    model = tiny_model if which == "tiny" else make_sharp_model(5)
    idx = tokens(2, 4, seed=5)
    # 4 + 13 = 17: the 13th token is chosen from 16 positions, the last that fit a block
    cached = generate(model, idx, 13, temperature=0, use_cache=True)
    assert torch.equal(cached, generate(model, idx, 13, temperature=0, use_cache=False))


@pytest.mark.parametrize("which", ["tiny", "sharp"])
def test_cached_beam_search_equals_uncached_within_block_size(tiny_model, which):
    model = tiny_model if which == "tiny" else make_sharp_model(6)
    idx = tokens(1, 4, seed=6)
    beams, scores = hypotheses(beam_search(model, idx, 13, num_beams=3, use_cache=True))
    beams0, scores0 = hypotheses(beam_search(model, idx, 13, num_beams=3, use_cache=False))
    assert torch.equal(beams, beams0)
    close(scores, scores0)


def test_generation_past_block_size_with_the_cache(tiny_model):
    model = make_sharp_model(7)
    idx = tokens(2, 4, seed=7)
    n = 3 * model.config.block_size  # 48 new tokens, 52 positions
    cached = generate(model, idx, n, temperature=0, use_cache=True)
    assert cached.shape == (2, 4 + n) and cached.dtype == torch.long
    assert torch.equal(cached[:, :4], idx)
    assert ((cached >= 0) & (cached < V)).all()
    uncached = generate(model, idx, n, temperature=0, use_cache=False)
    assert torch.equal(cached[:, :4 + 13], uncached[:, :4 + 13])  # the tokens chosen within one block
    # the rest follows the restart policy, token for token
    assert torch.equal(cached, hand_greedy_windows(model, idx, n))
    # sampling too: same seed, same first tokens with and without the cache
    s_cached = generate(model, idx, n, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(1))
    s_plain = generate(model, idx, n, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(1),
                       use_cache=False)
    assert s_cached.shape == (2, 4 + n)
    assert torch.equal(s_cached[:, :4 + 13], s_plain[:, :4 + 13])


def test_beam_search_past_block_size_with_the_cache(tiny_model):
    model = make_sharp_model(8)
    idx = tokens(1, 5, seed=8)
    beams, scores = hypotheses(beam_search(model, idx, 40, num_beams=3, use_cache=True))
    assert beams.shape == (3, 45) and scores.shape == (3,)
    assert scores[0] >= scores[1] >= scores[2]
    # one beam is greedy decoding, cache policy included
    one, _ = hypotheses(beam_search(model, idx, 40, num_beams=1, use_cache=True))
    assert torch.equal(one, hand_greedy_windows(model, idx, 40))


# ----------------------------------------------------------------------------- batches

SETTINGS = [
    dict(temperature=0.9, top_k=20, repetition_penalty=1.3, frequency_penalty=0.5, presence_penalty=0.3),
    dict(temperature=1.2, top_p=0.9, min_p=0.05, repetition_penalty=1.5, no_repeat_ngram_size=2),
    dict(temperature=0.7, typical_p=0.9, frequency_penalty=1.0),
    dict(temperature=0, repetition_penalty=1.4, frequency_penalty=0.6, presence_penalty=0.4),
]


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_batched_rows_equal_each_row_alone(settings, use_cache):
    """Three different prompts decoded together, one seeded generator per row, equal each prompt
    decoded alone with its own seed: the penalties are counted per row (a count shared across
    the batch would change the rows), and each row draws from its own generator."""
    model = make_sharp_model(9)
    idx = torch.stack([tokens(1, 6, seed=20)[0], tokens(1, 6, seed=21)[0], torch.tensor([5, 5, 5, 9, 9, 9])])
    seeds = [10, 11, 12]
    n = 30  # past block_size: the cache restarts as well
    batched = generate(model, idx, n, generator=[torch.Generator().manual_seed(s) for s in seeds],
                       use_cache=use_cache, **settings)
    assert batched.shape == (3, 6 + n)
    for row, s in enumerate(seeds):
        alone = generate(model, idx[row:row + 1], n, generator=torch.Generator().manual_seed(s),
                         use_cache=use_cache, **settings)
        assert torch.equal(batched[row:row + 1], alone), f"row {row}"
    assert not torch.equal(batched[0, 6:], batched[1, 6:])


def test_penalties_are_counted_per_row():
    """Greedy with strong penalties on two different prompts: each row must decode as it does
    alone, so the contexts and counts of one row must not leak into the other."""
    model = make_sharp_model(10)
    idx = torch.cat([tokens(1, 5, seed=30), tokens(1, 5, seed=31)])
    kw = dict(temperature=0, repetition_penalty=2.0, frequency_penalty=1.5, presence_penalty=1.0)
    batched = generate(model, idx, 20, **kw)
    for row in range(2):
        assert torch.equal(batched[row:row + 1], generate(model, idx[row:row + 1], 20, **kw))
    # and the penalties matter here: without them row 0 decodes differently
    assert not torch.equal(batched[0], generate(model, idx[:1], 20, temperature=0)[0])


def test_the_shipped_model_s_cached_logits_are_within_the_stated_bound():
    """The README and notebook 8 state 1e-4 for the shipped model within block_size: float32 rounding,
    measured at 1e-5 to 2e-5 with other CPU kernels (ATEN_CPU_CAPABILITY), threads and PyTorch
    versions, so the bound holds with room on a machine that rounds otherwise."""
    import checkpoint

    model, meta, _ = checkpoint.load()
    torch.manual_seed(0)
    seq = torch.randint(0, 65, (1, model.config.block_size))  # (1, 128): any characters
    cache = model.new_cache(1)
    gap = 0.0
    with torch.inference_mode():
        for t in range(10, seq.size(1) + 1):
            cached = next_logits(model, seq[:, :t], cache, new=10 if t == 10 else 1)  # (1, V)
            full = model(seq[:, :t])[0][:, -1]  # (1, V)
            gap = max(gap, (cached - full).abs().max().item())
    assert 0 < gap < 1e-4
