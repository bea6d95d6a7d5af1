"""
Speculative decoding: a cheap drafter guesses the next k tokens, the model checks all k in one
forward pass, and the text still has exactly the model's distribution (Leviathan, Kalman & Matias
2023, "Fast Inference from Transformers via Speculative Decoding"; Chen et al. 2023,
"Accelerating Large Language Model Decoding with Speculative Sampling").

One round, with p the target model's processed distribution and q the drafter's:

    draft    x_1 .. x_k,  each x_i ~ q_i = q(. | text, x_<i)                   k cheap steps
    verify   p_1 .. p_{k+1} = p(. | text, x_<i)                                 one target pass
    accept   x_1, x_2, ... in order, x_i with probability min(1, p_i(x_i) / q_i(x_i))
    then     at the first rejection i: one token from norm(max(0, p_i - q_i));
             when all k stand: one more token from p_{k+1}

so a round adds between 1 and k + 1 tokens for one pass of the target. Greedy decoding
(temperature 0) keeps the drafts while they equal the target's argmax, then adds the argmax.
p and q both come out of the same Decoding pipeline (penalties, temperature, filters), applied
at each position to the context up to that position.

Drafters, with the methods reset(ids, target), next_logits(ids) and rollback(length):
    ModelDrafter         a small GPT with its own KV cache (checkpoints/draft.pt: one layer)
    NgramDrafter         no network: counts of character n-grams in the training text
    PromptLookupDrafter  no network, no table: copies what followed the text's last characters in the text itself
    MedusaDrafter        heads on the target's own last hidden state (checkpoints/medusa.pt): no second model;
                         with width > 1, a tree of candidates per round, checked in one pass (tree_round())

One prompt at a time (batch size 1). V: vocabulary size, T: tokens of text so far, k: drafts.
"""
import functools
import math
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F

import checkpoint
import medusa
from model import Tree
from data.shakespeare_char import prepare
from sampling import Decoding, Run, categorical, characters, ends_with, generated_texts, matched, process, window_start

DRAFT_TOKENS = 5  # k: near the fastest for the n-gram drafter and the draft model (bench/bench_generate.py;
# Medusa's heads do best at k = 2 or 3, prompt lookup anywhere from 1 to 4)


# ----------------------------------------------------------------------------- the rule
# Every function below takes any number of independent rounds at once, as leading dimensions (...):
# the decode loop passes one round, a test can pass thousands.

def acceptance_probability(p, q, drafted):
    """min(1, p(x) / q(x)) for each drafted token x: the chance that it stands.

    p, q: (..., k, V) probabilities; drafted: (..., k) ids, each drawn from its row of q, so q(x) > 0.
    A token the drafter over-rates (q(x) > p(x)) is kept only in the proportion p(x) / q(x). -> (..., k)"""
    x = drafted[..., None]  # (..., k, 1)
    return (p.gather(-1, x) / q.gather(-1, x))[..., 0].clamp(max=1.0)  # (..., k)


def residual(p, q):
    """What to draw from after a rejection: norm(max(0, p - q)) = max(0, p - q) / sum_y max(0, p(y) - q(y)),
    the mass that p has and q lacks. (..., V) -> (..., V)

    Why the output then follows p exactly (Leviathan et al. 2023, appendix A.1): with
    beta = sum_x min(p(x), q(x)) the chance of accepting, and sum_y max(0, p(y) - q(y)) = 1 - beta,

        P(y) = q(y) min(1, p(y) / q(y)) + (1 - beta) max(0, p(y) - q(y)) / (1 - beta)
             = min(p(y), q(y)) + max(0, p(y) - q(y)) = p(y).

    When p = q nothing is left to redistribute and a rejection cannot happen: p is returned. After
    the last draft nothing was drafted, q = 0, and the residual is p itself."""
    excess = (p - q).clamp(min=0)  # (..., V)
    total = excess.sum(dim=-1, keepdim=True)  # (..., 1)
    return torch.where(total > 0, excess / total.clamp(min=torch.finfo(p.dtype).tiny), p)


def at(rows, n):
    """rows[..., n, :]: the row each round's n (...,) points at. rows (..., m, V) -> (..., V)"""
    return rows.gather(-2, n[..., None, None].expand(*n.shape, 1, rows.size(-1)))[..., 0, :]


def accept_or_resample(p, q, drafted, u, generator=None):
    """The verification step of speculative sampling (Leviathan et al. 2023, Algorithm 1; Chen et
    al. 2023, Algorithm 2): draft i stands when u_i < min(1, p_i(x_i) / q_i(x_i)), and the first
    one that fails ends the round with a token drawn from residual(p_i, q_i); when all k stand,
    one more token comes from p_{k+1} (the residual against q_{k+1} = 0: nothing was drafted there).

    p: (..., k + 1, V) the target's probabilities at the k drafted positions and the one after them;
    q: (..., k, V) the drafter's; drafted: (..., k) ids; u: (..., k) uniform numbers in [0, 1).
    Returns (n, token), both (...,): the first n drafts stand, and `token` follows them."""
    k = drafted.size(-1)
    stands = u < acceptance_probability(p[..., :k, :], q, drafted)  # (..., k)
    n = stands.int().cumprod(dim=-1).sum(dim=-1)  # (...,): drafts before the first rejection
    q = torch.cat((q, torch.zeros_like(p[..., :1, :])), dim=-2)  # (..., k + 1, V)
    last = residual(at(p, n), at(q, n))  # (..., V)
    token = categorical(last.reshape(-1, last.size(-1)), generator)  # (rounds, 1)
    return n, token.view(n.shape)


def accept_greedy(logits, drafted):
    """Greedy verification: the drafts stand while each is the target's argmax (ties: the lowest
    id), and the target's argmax follows them. logits: (..., k + 1, V) the target's processed
    logits; drafted: (..., k) ids. Returns (n, token), both (...,)."""
    best = logits.argmax(dim=-1)  # (..., k + 1): the first of equal maxima, as sampling.greedy
    n = (best[..., :-1] == drafted).int().cumprod(dim=-1).sum(dim=-1)  # (...,)
    return n, best.gather(-1, n[..., None])[..., 0]


class Verdict(NamedTuple):
    """What verify() decides about a round's drafts, (...,) one per round."""
    accepted: torch.Tensor  # (...,) the first `accepted` drafts stand
    token: torch.Tensor  # (...,) the target's token after them; -1 where it has nothing left to draw
    p: torch.Tensor  # (..., k + 1, V) the target's distributions p_1 .. p_{k+1}
    q: torch.Tensor  # (..., k, V) the drafter's distributions q_1 .. q_k
    u: Optional[torch.Tensor]  # (..., k) the uniform numbers of the acceptance test; None when greedy


def verify(p_logits, q_logits, drafted, decoding, generator=None):
    """The verdict on a round: p_logits (..., k + 1, V) the target's processed logits at the drafted
    positions and the one after, q_logits (..., k, V) the drafter's, drafted (..., k) its tokens.
    Greedy decoding keeps the drafts the target would have chosen (accept_greedy); sampling draws
    k uniform numbers and applies the rejection rule (accept_or_resample). A position where every
    token is removed (-inf) ends the text there, as in sampling.stream."""
    empty = p_logits.amax(dim=-1) == -math.inf  # (..., k + 1): every token removed (only a penalty can)
    some_empty = bool(empty.any())
    if some_empty:
        p_logits = p_logits.masked_fill(empty[..., None], 0.0)  # any finite row: its token is cut below
    p = F.softmax(p_logits, dim=-1)  # (..., k + 1, V)
    q = F.softmax(q_logits, dim=-1).reshape(*drafted.shape, p.size(-1))  # (..., k, V), also when k = 0
    u = None if decoding.is_greedy else torch.rand(drafted.shape, generator=generator, device=p.device)  # (..., k)
    n, token = accept_greedy(p_logits, drafted) if u is None else accept_or_resample(p, q, drafted, u, generator)
    if some_empty:  # no token at or after the first empty position
        first_empty = torch.where(empty.any(dim=-1), empty.int().argmax(dim=-1), empty.size(-1))  # (...,)
        n, token = torch.minimum(n, first_empty), token.masked_fill(first_empty <= n, -1)
    return Verdict(n, token, p, q, u)


# ----------------------------------------------------------------------------- the target's windows

class WindowedModel:
    """A model read as plain cached decoding (sampling.stream) reads it: the logits of every
    position come from exactly the context, and the positions, window_start() gives it. The target
    is read this way, so that speculative decoding keeps its distribution past block_size too;
    ModelDrafter reads the drafter this way, so that both models see the same window.

    The KV cache holds ids[start : start + cache.length], a prefix of the context of the next
    position to predict. Where window_start() moves, the cache is emptied and the new window is
    read from its start (one more forward pass)."""

    def __init__(self, model, prompt_length, room=0):
        self.model, self.prompt_length = model, prompt_length
        self.block_size = model.config.block_size
        self.cache = model.new_cache(1, room)  # room: the positions a tree of candidates takes past block_size
        self.start = window_start(prompt_length, prompt_length, self.block_size)
        self.passes = 0  # forward passes so far
        self.first, self.hidden = None, None  # what the last call to logits() read: see there

    def logits(self, ids, first):
        """The logits for the tokens at indices first .. T of ids (1, T), each predicted from its own
        window, in one forward pass per window: (T - first + 1, V). The last hidden states that
        predicted them stay in self.hidden (T - first + 1, C), from index self.first on: the
        Medusa heads read them."""
        rows, states, t, T = [], [], first, ids.size(1)
        while t <= T:
            start = window_start(t, self.prompt_length, self.block_size)
            if start != self.start:  # a restart: read the new window from its first token
                self.cache.reset()
                self.start = start
            end = min(T, start + self.block_size)  # the last index this window predicts
            fed = ids[:, start + self.cache.length:end]  # (1, n): what the cache lacks, up to ids[end - 1]
            logits, _, hidden = self.model(fed, cache=self.cache, hidden=True)  # (1, n, V), (1, n, C)
            rows.append(logits[0, t - end - 1:])  # (end - t + 1, V)
            states.append(hidden[0, t - end - 1:])  # (end - t + 1, C)
            self.passes += 1
            t = end + 1
        self.first, self.hidden = first, torch.cat(states)  # (T - first + 1, C)
        return torch.cat(rows)  # (T - first + 1, V)

    def holds_tree(self, T, depth, nodes):
        """True when one pass of the current window can read a tree of `nodes` candidates, `depth`
        places deep, after a text of T tokens: no restart of the window is due at any index it
        predicts (T .. T + depth), and the cache has room for it."""
        ends = [window_start(t, self.prompt_length, self.block_size) for t in (T, T + depth)]
        return ends == [self.start] * 2 and T - self.start + nodes <= self.cache.k.size(3)

    def tree_logits(self, ids, tokens, depth, sees):
        """One pass over the end of the text ids (1, T) the cache lacks, then the tree of
        candidates tokens (N,), each at its depth (N,) after the text and seeing the nodes
        sees (N, N) says. Returns the logits (1 + N, V) and last hidden states (1 + N, C) at the
        text's last token and at each node; the cache then holds the whole tree (keep() prunes it)."""
        text = ids[:, self.start + self.cache.length:]  # (1, m): ends with the text's last token
        m, N = text.size(1), len(tokens)
        offsets = torch.cat((torch.arange(m), m - 1 + depth))  # (m + N,): positions after the cache
        seen = torch.ones(m + N, m + N, dtype=torch.bool).tril()  # (m + N, m + N): the text, causally
        seen[m:, m:] = sees  # each node: the whole text and its own ancestors
        logits, _, hidden = self.model(torch.cat((text, tokens[None]), dim=1), cache=self.cache, hidden=True,
                                       tree=Tree(offsets.to(ids.device), seen.to(ids.device)))  # (1, m + N, V), (1, m + N, C)
        self.passes += 1
        return logits[0, m - 1:], hidden[0, m - 1:]  # (1 + N, V), (1 + N, C)

    def keep(self, T, nodes, hidden):
        """After tree_logits() on a text of T tokens: only the candidates `nodes` (a path, indices
        of the tree, root first) stand. The cache keeps them after the text, and self.hidden holds
        the hidden states (1 + n, C) that predicted each token after the text, from index T on."""
        text_end = T - self.start  # the cache holds ids[start:T], then the tree
        self.cache.keep(text_end, nodes)
        self.first, self.hidden = T, hidden

    def rollback(self, length):
        """Only ids[:length] still stand, and the next call predicts index length + 1: forget the
        rest of the cache with KVCache.truncate, or empty it when that index has another window."""
        start = window_start(length + 1, self.prompt_length, self.block_size)
        if start == self.start:
            self.cache.truncate(min(length - start, self.cache.length))
        else:
            self.cache.reset()
            self.start = start


# ----------------------------------------------------------------------------- the drafters

class ModelDrafter:
    """A small GPT of the target's vocabulary as the drafter, with its own KV cache. It reads the
    text in the target's windows when the block sizes agree (WindowedModel): any q would keep the
    output exact, but a drafter that sees what the target sees agrees with it more often."""

    def __init__(self, model):
        self.model = model
        self.reader = None

    def reset(self, ids, target=None):
        """A new text begins with the prompt ids (1, P); target, the WindowedModel that reads the
        target model, is for the drafters that read its hidden states (MedusaDrafter)."""
        self.reader = WindowedModel(self.model, ids.size(1))

    def next_logits(self, ids):
        """The logits (1, V) for the token after ids (1, T), reading only what the cache lacks."""
        return self.reader.logits(ids, ids.size(1))  # (1, V)

    def rollback(self, length):
        """Only the first `length` tokens of what was read still stand."""
        self.reader.rollback(length)


def ngram_counts(ids, n, vocab_size):
    """Every n-gram of ids (N,) as a base-V number, c_1 V^(n-1) + ... + c_n, sorted and without
    repeats, with how often it occurs: (codes (M,), counts (M,)). They fit an int64 while V^n < 2^63."""
    count = max(0, len(ids) - n + 1)
    codes = np.zeros(count, dtype=np.int64)  # (N - n + 1,)
    for j in range(n):
        codes = codes * vocab_size + ids[j:j + count]
    return np.unique(codes, return_counts=True)


class NgramDrafter:
    """A drafter without a network: a table of the character n-grams of a text.

    q(. | text) is the next-character distribution after the longest context c, of at most
    order - 1 characters, that occurs at least min_count times in the table's text:

        q(x | c) = count(c x) / count(c),   as logits ln count(c x)   (ln 0 = -inf)

    backing off to shorter contexts down to none (character frequencies). Order 6 and min_count 8
    brought q closest to the shipped model's p among orders 4 to 8 and min_counts 1 to 32: on 3,000
    characters the model wrote, sum_x min(p, q), the chance that a draft stands, is 0.76 when it
    samples, and q and p have the same argmax 84% of the time when it is greedy (the one-layer
    draft model: 0.79 and 82%, at twenty times the cost of a lookup: 0.67 ms against 0.03 ms in
    bench/bench_generate.py).

    Every n-gram of every order sits in one sorted array, an n-gram g of n characters as the
    number (n - 1) V^order + g_1 V^(n-1) + ... + g_n, so that the n-grams that continue a context
    form one run of it, and all the contexts' runs are found in one search. It needs no cache:
    its reset and rollback do nothing."""

    def __init__(self, text, stoi, order=6, min_count=8):
        V = len(stoi)
        if order < 1 or order * V ** order >= 2 ** 63:
            raise ValueError(f"order must be >= 1 and order * V^order < 2^63 (at most 9 for 65 characters), got {order}")
        self.vocab_size, self.order, self.min_count = V, order, min_count
        ids = np.array([stoi[c] for c in text], dtype=np.int64)  # (N,)
        codes, counts = zip(*(ngram_counts(ids, n, V) for n in range(1, order + 1)))
        self.keys = np.concatenate([n * V ** order + c for n, c in enumerate(codes)])  # (M,), sorted
        self.log_counts = np.log(np.concatenate(counts)).astype(np.float32)  # (M,)
        self.cumulative = np.concatenate(([0], np.cumsum(np.concatenate(counts))))  # (M + 1,)

    def reset(self, ids, target=None):
        pass

    def rollback(self, length):
        pass

    def next_logits(self, ids):
        """ln count(c x) for every x (1, V), c the longest context after which the text has at least
        min_count characters."""
        V = self.vocab_size
        context = ids[0, max(0, ids.size(1) - self.order + 1):].tolist()
        starts, code = [], 0  # the first key of the n-grams after each context, the empty one first
        for m in range(len(context) + 1):
            if m:
                code += context[-m] * V ** (m - 1)  # the code of the last m characters
            starts.append(m * V ** self.order + code * V)
        starts = np.array(starts)  # (m + 1,)
        bounds = np.searchsorted(self.keys, np.concatenate((starts, starts + V)))  # (2 (m + 1),)
        low, high = bounds[:len(starts)], bounds[len(starts):]
        seen = np.flatnonzero(self.cumulative[high] - self.cumulative[low] >= self.min_count)  # contexts seen enough
        m = seen[-1] if len(seen) else 0
        logits = np.full(V, -np.inf, dtype=np.float32)  # (V,)
        logits[self.keys[low[m]:high[m]] % V] = self.log_counts[low[m]:high[m]]
        return torch.from_numpy(logits)[None]  # (1, V)


def prompt_lookup(ids, max_ngram=2):
    """Where prompt lookup decoding copies from (Saxena 2023, github.com/apoorvumang/prompt-lookup-decoding;
    Hugging Face's PromptLookupCandidateGenerator): the last n tokens of the text ids (N,), n from
    max_ngram down to 1, are searched for from the left, and the first occurrence that some token
    follows gives the index of that token. None when no ending of the text occurred before. -> int or None"""
    N = len(ids)
    for n in range(min(max_ngram, N - 1), 0, -1):
        occurrences = (ids.unfold(0, n, 1) == ids[-n:]).all(dim=1)  # (N - n + 1,): the n-gram starting at each index
        follows = occurrences.nonzero()[:, 0] + n  # (m,): the index after each occurrence
        follows = follows[follows < N]  # the text's own ending has nothing after it
        if len(follows):
            return int(follows[0])
    return None


class PromptLookupDrafter:
    """A drafter that copies from the text itself (prompt lookup decoding): at a round's first
    draft, prompt_lookup() finds the first earlier occurrence of the text's last characters, and
    the drafts are the characters that followed it, up to where the text ends, each one certain:

        q(x_i) = 1 for the i-th copied character (logits 0 there, -inf elsewhere)

    so a draft stands with probability min(1, p(x_i) / 1) = p(x_i), and greedy decoding keeps it
    while it is the target's argmax. Where there is nothing (more) to copy it returns -inf
    everywhere, and draft() stops: the round is one step of plain decoding."""

    def __init__(self, vocab_size, max_ngram=2):
        self.vocab_size, self.max_ngram = vocab_size, max_ngram
        self.copy, self.first = None, 0

    def reset(self, ids, target=None):
        self.copy = None

    def rollback(self, length):
        self.copy = None  # the next round looks again, in the text as it then is

    def next_logits(self, ids):
        """0 at the next copied character after ids (1, T), -inf elsewhere: (1, V)."""
        if self.copy is None:
            start = prompt_lookup(ids[0], self.max_ngram)
            self.copy, self.first = ids[0, start if start is not None else ids.size(1):], ids.size(1)  # (m,)
        logits = torch.full((1, self.vocab_size), -math.inf, device=ids.device)  # (1, V)
        i = ids.size(1) - self.first  # the drafts so far in this round
        if i < len(self.copy):
            logits[0, self.copy[i]] = 0.0
        return logits


class MedusaDrafter:
    """Medusa heads as the drafter (Cai et al. 2024; medusa.py): the target drafts for itself.
    The pass that checks a round ends with the target's token x at index L; the last hidden state
    h that predicted x comes out of that same pass (WindowedModel.hidden), and the heads read it:

        q_i = softmax(head_i(h)),   a guess at the token at index L + i,   i = 1 .. K

    so the next round's drafts cost 2K small matrix products (U_i and W_i) and no forward pass. q_i does not see
    the drafts before it, which the rejection rule allows (any q keeps the text exact). The first
    round has no h yet and drafts nothing: it is one step of plain decoding."""

    def __init__(self, heads, width=1):
        self.heads, self.target, self.width = heads, None, width  # width > 1: trees (tree_round())
        self.guesses, self.first = None, 0  # the heads' logits (K, V) for the round from index `first` on

    def tree_nodes(self, depth):
        """The candidates of a tree `depth` places deep; 0 for a chain."""
        return len(tree_shape(self.width, depth)[0]) if self.width > 1 else 0

    def reset(self, ids, target=None):
        self.target, self.guesses = target, None

    def rollback(self, length):
        """ids[:length] stand and the target's token follows at index length: read h, its hidden state."""
        h = self.target.hidden[length - self.target.first]  # (C,)
        with torch.inference_mode():
            self.guesses = self.heads(h)  # (K, V)
        self.first = length + 1  # the index of the first draft of the next round

    def next_logits(self, ids):
        """Head i's logits for ids (1, T) when T = the round's first index + i - 1; -inf everywhere
        past the last head, or before any h: (1, V)."""
        i = ids.size(1) - self.first  # the drafts so far in this round
        if self.guesses is None or i >= len(self.guesses):
            return self.heads.outputs[0].weight.new_full((1, self.heads.outputs[0].out_features), -math.inf)  # (1, V)
        return self.guesses[i][None]  # (1, V)


# ----------------------------------------------------------------------------- Medusa's trees

def tree_paths(width, depth):
    """Every path through the top `width` candidates of each of `depth` places, as tuples of ranks,
    parents before children: [(0,), (1,), (0, 0), (0, 1), (1, 0), (1, 1), ...] for width 2.
    width + width^2 + ... + width^depth of them."""
    paths = [()]
    for d in range(depth):
        paths += [path + (rank,) for path in paths if len(path) == d for rank in range(width)]
    return paths[1:]


def tree_sees(paths):
    """(N, N) bool: node i sees node j when j's path begins i's (an ancestor, or i itself)."""
    return torch.tensor([[p[:len(q)] == q for q in paths] for p in paths])


def choose_among(probs, candidates, generator=None):
    """One place of a tree, exactly: the candidates c_1 .. c_w (w,), distinct, are tried in turn,
    c_j standing with probability p_j(c_j), where p_1 = p (probs, (V,)) and p_{j+1} is p_j with c_j
    removed and renormalised; when none stands, the token is drawn from p_{w+1}. This is SpecInfer's
    rule for several drafts at one place (Miao et al. 2024) with every draft certain (q = 1 at it),
    and each token y comes out with probability p(y): a candidate c_j stands with probability
    (1 - p(c_1) - ... - p(c_{j-1})) p(c_j) / (1 - p(c_1) - ... - p(c_{j-1})) = p(c_j), and any
    other token with (1 - sum_j p(c_j)) p(y) / (1 - sum_j p(c_j)) = p(y).
    Returns (j, token): the index of the candidate that stood, or -1, and the token chosen."""
    left = probs.clone()  # (V,): p_j, unnormalised
    for j, c in enumerate(candidates.tolist()):
        if torch.rand(1, generator=generator, device=probs.device) * left.sum() < left[c]:
            return j, c
        left[c] = 0.0
    return -1, int(categorical(left[None], generator))


@functools.lru_cache(maxsize=None)
def tree_shape(width, depth):
    """A tree's paths, their depths (N,), who sees whom (N, N) and each path's children in rank
    order ({path: [node, ...]}, the root ()); made once for each width and depth."""
    paths = tree_paths(width, depth)
    children = {}
    for i, p in enumerate(paths):
        children.setdefault(p[:-1], []).append(i)
    return paths, torch.tensor([len(p) for p in paths]), tree_sees(paths), children


def tree_round(drafter, reader, run, depth, decoding, stages, generator=None):
    """A round of Medusa's tree: the top drafter.width candidates of each of `depth` heads (from the
    hidden state of the last round), every path through them read in one pass of the target
    (WindowedModel.tree_logits, a tree attention mask). From the text's last token, the walk
    keeps, at each place, the candidate the target chooses: greedy, the one equal to its argmax;
    sampling, choose_among(). It ends with the target's own token where no candidate stands or at a
    leaf. Each place's logits go through the stages with the path's own context, as plain decoding
    would. Returns (the tree's tokens (N,), a Verdict (accepted, token; p, q, u None), the path's
    tokens (n,))."""
    paths, depths, sees, children = tree_shape(drafter.width, depth)
    ranks = drafter.guesses[:depth].topk(drafter.width, dim=-1).indices  # (depth, width)
    tokens = torch.stack([ranks[len(p) - 1, p[-1]] for p in paths])  # (N,)
    T = run.ids.size(1)
    logits, hidden = reader.tree_logits(run.ids, tokens, depths, sees)  # (1 + N, V), (1 + N, C)
    path, nodes = (), []
    while True:
        row = nodes[-1] + 1 if nodes else 0  # the row of the node the walk stands on (0: the text's last token)
        ids = torch.cat((run.ids, tokens[nodes][None]), dim=1)  # (1, T + n): the text and the path so far
        z = process(logits[row:row + 1], Run(ids, run.prompt_length, run.generator), stages)[0]  # (V,)
        if z.amax() == -math.inf:  # the stages left nothing to draw: the text ends here
            token = -1
            break
        kids = children.get(path, [])
        if decoding.is_greedy:
            token = int(z.argmax())
            j = next((j for j, i in enumerate(kids) if int(tokens[i]) == token), -1)
        else:
            j, token = choose_among(F.softmax(z, dim=-1), tokens[kids], generator)
        if j < 0:
            break
        nodes.append(kids[j])
        path = paths[kids[j]]
    reader.keep(T, nodes, hidden[[0] + [i + 1 for i in nodes]])
    verdict = Verdict(torch.tensor(len(nodes), device=tokens.device), torch.tensor(token, device=tokens.device),
                      None, None, None)
    return tokens, verdict, tokens[nodes]


def training_text(path=None):
    """The training part of Tiny Shakespeare (prepare.TEXT unless path): its first 90%."""
    with open(path or prepare.TEXT, encoding="utf-8") as f:
        return prepare.split(f.read())[0]


def load_drafter(name, model, meta, device="cpu"):
    """The drafter --draft names for the model: 'ngram', 'prompt_lookup', 'medusa' (the heads of
    medusa.DEFAULT_HEADS), a file of Medusa heads, or a checkpoint of the model's vocabulary; a
    checkpoint.CheckpointError with one line when it cannot draft for this model."""
    if name == "prompt_lookup":
        return PromptLookupDrafter(meta["vocab_size"])
    if name == "medusa" or medusa.holds_heads(name):
        return MedusaDrafter(medusa.load(medusa.DEFAULT_HEADS if name == "medusa" else name, model))
    if name == "ngram":
        try:
            text = training_text()
        except OSError:
            raise checkpoint.CheckpointError(f"--draft ngram counts the characters of {prepare.TEXT}, which is "
                                             f"missing: run python data/shakespeare_char/prepare.py")
        if not set(text) <= set(meta["stoi"]):
            raise checkpoint.CheckpointError(f"--draft ngram: {prepare.TEXT} has characters the model's vocabulary lacks")
        return NgramDrafter(text, meta["stoi"])
    model, draft_meta, _ = checkpoint.load(name, device)
    if draft_meta["itos"] != meta["itos"]:
        raise checkpoint.CheckpointError(f"--draft {name}: its vocabulary is not the model's (the same characters "
                                         f"with the same ids): a drafter must propose the model's own tokens")
    return ModelDrafter(model)


# ----------------------------------------------------------------------------- one round, the loop

def draft(drafter, run, k, decoding, stages):
    """Up to k tokens from the drafter, each chosen as `decoding` chooses (argmax or a draw) from
    the drafter's logits after the stages, on the context up to it. Returns tokens (n,) and their
    processed logits q (n, V); n < k when the stages leave the drafter nothing to draw."""
    ids, tokens, rows = run.ids, [], []
    for _ in range(k):
        position = Run(ids, run.prompt_length, run.generator)
        logits = process(drafter.next_logits(ids), position, stages)  # (1, V)
        if logits.amax() == -math.inf:  # the drafter has nothing to propose, or a penalty removed every token
            break
        token = decoding.choose(logits, position)  # (1, 1)
        ids = torch.cat((ids, token), dim=1)  # (1, T + 1)
        tokens.append(token[0])
        rows.append(logits)
    if not tokens:  # the round is then one step of plain decoding
        return run.ids.new_zeros(0), torch.zeros(0, 0, device=run.ids.device)  # (0,), (0, 0)
    return torch.cat(tokens), torch.cat(rows)  # (n,), (n, V)


def process_rows(logits, ids, first, run, decoding, stages):
    """The stages on the target's logits (n, V), row i predicting ids' index first + i and seeing
    the context ids[:, :first + i], as sampling.stream would process it. Only the penalties, the
    watermark (its previous token) and the pattern's mask read the context: without them every row
    goes through the stages at once. -> (n, V)"""
    if not (decoding.penalties_on or decoding.watermark or decoding.regex):
        return process(logits, run, stages)  # (n, V)
    return torch.cat([process(logits[i:i + 1], Run(ids[:, :first + i], run.prompt_length, run.generator), stages)
                      for i in range(logits.size(0))])  # (n, V)


class Round(NamedTuple):
    """What speculative_stream() yields for each round."""
    drafted: torch.Tensor  # (k,) the drafter's tokens x_1 .. x_k; in a round of a tree, its N candidates
    verdict: Verdict  # how many stood, the target's token, p, q and u
    tokens: torch.Tensor  # (n,) what the round adds to the text: the drafts that stood and the target's token
    finished: bool  # a stop string completed, the pattern matched for good, or the target has nothing left to draw
    passes: int  # forward passes of the target (2 when its window restarts inside the round)


def check_decoding(decoding):
    """A ValueError with one line when speculative decoding cannot reproduce `decoding`: the
    acceptance test compares two distributions, which must be fixed by the context alone."""
    if decoding.is_random:
        raise ValueError("speculative decoding needs a distribution fixed by the context alone: "
                         "XTC and mirostat draw or keep state from step to step")
    if decoding.reads_model:
        raise ValueError("speculative decoding checks the model's distributions only: guidance and contrastive "
                         "search read the model again at each step")


@torch.inference_mode()
def speculative_stream(target, drafter, idx, max_new_tokens, decoding=Decoding(), num_draft_tokens=DRAFT_TOKENS,
                       generator=None, stoi=None):
    """Speculative decoding of the prompt idx (1, T): yield a Round for each target pass, until
    max_new_tokens tokens or a stop string (decoding.stop, encoded with stoi; it ends the text
    wherever in a round it completes, and stays in Round.tokens for the caller to cut), or until
    the text matches decoding.regex in full and no character can extend it (sampling.matched()).
    Drafts are masked by the pattern as the target's distributions are: none can break it.

    The text has the distribution of sampling.stream(target, idx, ...) with the same decoding, and
    greedy decoding gives its very tokens. A round drafts min(num_draft_tokens, tokens left - 1)."""
    check_decoding(decoding)
    if idx.size(0) != 1:
        raise ValueError(f"speculative decoding continues one prompt at a time, got a batch of {idx.size(0)}")
    stages = decoding.stages(stoi)
    stops = [[stoi[c] for c in s] for s in decoding.stop]
    vocabulary = characters(stoi) if decoding.regex else None
    run = decoding.start(idx, generator)
    trees = isinstance(drafter, MedusaDrafter) and drafter.width > 1 and num_draft_tokens >= 1
    depth = min(num_draft_tokens, drafter.heads.num_heads) if trees else 0
    reader = WindowedModel(target, idx.size(1), room=drafter.tree_nodes(depth) if trees else 0)
    drafter.reset(idx, reader)
    made = 0
    while made < max_new_tokens:
        T, passes, k = run.ids.size(1), reader.passes, min(num_draft_tokens, max_new_tokens - made - 1)
        if trees and drafter.guesses is not None and k >= depth and \
                reader.holds_tree(T, depth, drafter.tree_nodes(depth)):
            drafted, verdict, stood = tree_round(drafter, reader, run, depth, decoding, stages, generator)
        else:  # a chain: the drafts one after another, checked in one pass
            drafted, q_logits = draft(drafter, run, k, decoding, stages)
            ids = torch.cat((run.ids, drafted[None]), dim=1)  # (1, T + k)
            p_logits = process_rows(reader.logits(ids, T), ids, T, run, decoding, stages)  # (k + 1, V)
            verdict = verify(p_logits, q_logits, drafted, decoding, generator)
            stood = drafted[:int(verdict.accepted)]  # (n,)
        n, finished = int(verdict.accepted), bool(verdict.token < 0)
        tokens = torch.cat((stood, verdict.token[None]))[:n + (not finished)]  # (n + 1,), or (n,) at the end
        for i in range(len(tokens) if stops else 0):
            if ends_with(torch.cat((run.ids, tokens[None, :i + 1]), dim=1), stops, run.prompt_length)[0]:
                tokens, finished = tokens[:i + 1], True
                break
        run.ids = torch.cat((run.ids, tokens[None]), dim=1)  # (1, T + n + 1)
        if vocabulary:  # the mask lets nothing follow a complete match: only the last token can complete it
            finished = finished or matched(decoding.regex, generated_texts(run, vocabulary)[0], vocabulary)
        made += len(tokens)
        reader.rollback(T + n)
        drafter.rollback(T + n)
        yield Round(drafted, verdict, tokens, finished, reader.passes - passes)
        if finished:
            return


def tally(rounds):
    """(drafted, accepted, tokens, passes): the rounds' drafts, the drafts that stood, the tokens
    added and the target's forward passes. accepted / drafted is the acceptance rate, tokens /
    passes the characters each pass of the target buys."""
    return (sum(len(r.drafted) for r in rounds), sum(int(r.verdict.accepted) for r in rounds),
            sum(len(r.tokens) for r in rounds), sum(r.passes for r in rounds))


def speculative_generate(target, drafter, idx, max_new_tokens, decoding=Decoding(), num_draft_tokens=DRAFT_TOKENS,
                         generator=None, stoi=None):
    """idx (1, T) extended by speculative decoding: (1, T + n), n = max_new_tokens unless a stop
    string or an empty distribution ended the text earlier."""
    rounds = speculative_stream(target, drafter, idx, max_new_tokens, decoding, num_draft_tokens, generator, stoi)
    return torch.cat([idx[0], *(r.tokens for r in rounds)])[None]  # (1, T + n)
