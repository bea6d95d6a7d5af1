"""
How a language model picks its next token: every strategy as a small pure function.

Each filter or penalty takes logits (B, V) and returns new logits (B, V), with -inf for the
tokens it removes, and never edits its input. generate() applies them in this order
(the order of Hugging Face transformers):

    repetition penalty -> frequency/presence penalty -> no-repeat n-gram      (penalties)
    -> temperature -> top-k -> top-p -> min-p -> typical                      (warpers)
    -> softmax -> multinomial draw (or argmax when temperature == 0)

B: batch rows, V: vocabulary size, T: tokens of context so far.
"""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- choosing a token

def greedy(logits):
    """next = argmax_i logits_i; ties go to the lowest index. (B, V) -> (B, 1)"""
    return torch.argmax(logits, dim=-1, keepdim=True)  # (B, V) -> (B, 1)


def sample(logits, generator=None):
    """next ~ Multinomial(softmax(logits)). (B, V) -> (B, 1)

    generator: a seeded torch.Generator for repeatable draws, or a list of B of them, one per
    row, so that a row of a batch draws exactly what it would draw decoded alone."""
    probs = F.softmax(logits, dim=-1)  # (B, V)
    if isinstance(generator, (list, tuple)):
        return torch.cat([torch.multinomial(row[None], 1, generator=g) for row, g in zip(probs, generator)])  # (B, 1)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


# ----------------------------------------------------------------------------- warpers

def apply_temperature(logits, temperature):
    """p_i = exp(z_i / T) / sum_j exp(z_j / T)  (Ackley, Hinton & Sejnowski 1985).

    Divides the *logits*: T < 1 sharpens the distribution, T > 1 flattens it, T -> inf tends
    to uniform. (Dividing probabilities and applying softmax again is a common mistake.)"""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return logits / temperature  # (B, V)


def top_k_filter(logits, k):
    """Keep the tokens whose logit is >= the k-th largest; the rest get -inf (Fan et al. 2018).

    Ties at the k-th value are all kept; k >= V keeps everything."""
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, k) -> (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))  # (B, V)


def top_p_filter(logits, p, min_tokens_to_keep=1):
    """Nucleus sampling (Holtzman et al. 2019): keep the smallest set of most likely tokens
    whose probability mass is >= p, the token that crosses p included.

    Computed from the other end: sorted ascending, a token is removed when the mass of it and
    all less likely tokens is <= 1 - p. p = 1 keeps everything."""
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)  # (B, V), least likely first
    tail_mass = F.softmax(sorted_logits, dim=-1).cumsum(dim=-1)  # (B, V)
    remove = tail_mass <= 1 - p  # (B, V) in sorted order
    remove[:, logits.size(-1) - min_tokens_to_keep:] = False  # the most likely tokens always stay
    remove = remove.scatter(1, order, remove)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def min_p_filter(logits, min_p, min_tokens_to_keep=1):
    """Min-p sampling (Nguyen et al. 2024): keep token i when p_i >= min_p * max_j p_j.

    The cut scales with the model's confidence; the argmax always survives."""
    if not 0 <= min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")
    probs = F.softmax(logits, dim=-1)  # (B, V)
    remove = probs < min_p * probs.amax(dim=-1, keepdim=True)  # (B, V) < (B, 1)
    keep = torch.topk(probs, min(min_tokens_to_keep, logits.size(-1)), dim=-1).indices  # (B, min_tokens_to_keep)
    remove = remove.scatter(1, keep, False)
    return logits.masked_fill(remove, float("-inf"))


def typical_filter(logits, mass, min_tokens_to_keep=1):
    """Locally typical sampling (Meister et al. 2022).

    With entropy H = -sum_i p_i log p_i, rank tokens by |(-log p_i) - H|, how far their
    surprise is from the expected surprise, and keep the closest ones until their mass
    reaches `mass`. Unlike the others, this filter can remove the most likely token."""
    if not 0 < mass <= 1:
        raise ValueError(f"typical_p must be in (0, 1], got {mass}")
    if mass == 1:  # all the mass: every token stays (a float32 cumulative sum may reach 1 early)
        return logits.clone()
    log_probs = F.log_softmax(logits, dim=-1)  # (B, V)
    entropy = -(log_probs * log_probs.exp()).nansum(dim=-1, keepdim=True)  # (B, 1)
    distance = (-log_probs - entropy).abs()  # (B, V)
    sorted_distance, order = torch.sort(distance, dim=-1, descending=False)  # (B, V), most typical first
    cumulative = F.softmax(logits.gather(1, order), dim=-1).cumsum(dim=-1)  # (B, V)
    last = (cumulative < mass).sum(dim=1, keepdim=True).clamp(max=logits.size(-1) - 1)  # (B, 1)
    remove = sorted_distance > sorted_distance.gather(1, last)  # (B, V) in sorted order
    remove[:, :min_tokens_to_keep] = False
    remove = remove.scatter(1, order, remove)
    return logits.masked_fill(remove, float("-inf"))


# ----------------------------------------------------------------------------- penalties

def repetition_penalty(logits, context, penalty):
    """CTRL's repetition penalty (Keskar et al. 2019), for each distinct token i in the context:

        z_i -> z_i / theta  if z_i > 0,    z_i -> z_i * theta  otherwise

    Each token is penalised once however often it appeared; the prompt counts. theta = 1 does
    nothing, theta > 1 discourages repeats. context: (B, T) token ids."""
    if not penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty}")
    seen = logits.gather(1, context)  # (B, T): the logits of the context tokens
    penalised = torch.where(seen > 0, seen / penalty, seen * penalty)  # (B, T)
    return logits.scatter(1, context, penalised)  # (B, V); a repeated id writes the same value again


def token_counts(generated, vocab_size):
    """How many times each token id occurs in each row: (B, T) -> (B, V)."""
    counts = torch.zeros(generated.size(0), vocab_size, dtype=torch.long, device=generated.device)  # (B, V)
    return counts.scatter_add(1, generated, torch.ones_like(generated))


def frequency_presence_penalty(logits, counts, frequency, presence):
    """OpenAI's penalties, with c_i the number of times token i was generated so far:

        z_i -> z_i - c_i * alpha_frequency - [c_i > 0] * alpha_presence

    counts: (B, V), of generated tokens only (not the prompt), see token_counts()."""
    return logits - counts * frequency - (counts > 0).to(logits.dtype) * presence  # (B, V)


def no_repeat_ngram(logits, context, n):
    """Ban every token that would complete an n-gram already present in the context
    (prompt included), as in fairseq and Hugging Face. context: (B, T) token ids."""
    if n < 1:
        raise ValueError(f"no_repeat_ngram_size must be >= 1, got {n}")
    B, T = context.shape
    banned = torch.zeros_like(logits, dtype=torch.bool)  # (B, V)
    for row in range(B):
        ids = context[row].tolist()
        prefix = ids[T - (n - 1):]  # the last n-1 tokens: the n-gram the next token would complete
        for start in range(T - n + 1):  # every complete n-gram ids[start : start + n]
            if ids[start:start + n - 1] == prefix:
                banned[row, ids[start + n - 1]] = True
    return logits.masked_fill(banned, float("-inf"))


# ----------------------------------------------------------------------------- the pipeline

@dataclass(frozen=True)
class Decoding:
    """The settings of one decoding strategy; the defaults are pure sampling at temperature 1."""
    temperature: float = 1.0  # 0 means greedy
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    min_p: Optional[float] = None
    typical_p: Optional[float] = None
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    no_repeat_ngram_size: int = 0

    def __post_init__(self):
        """Out-of-range values raise ValueError with a one-line message naming the setting."""
        checks = [
            ("temperature", self.temperature >= 0, ">= 0 (0 is greedy)"),
            ("top_k", self.top_k is None or self.top_k >= 1, ">= 1"),
            ("top_p", self.top_p is None or 0 < self.top_p <= 1, "in (0, 1]"),
            ("min_p", self.min_p is None or 0 <= self.min_p <= 1, "in [0, 1]"),
            ("typical_p", self.typical_p is None or 0 < self.typical_p <= 1, "in (0, 1]"),
            ("repetition_penalty", self.repetition_penalty > 0, "> 0"),
            ("frequency_penalty", -2 <= self.frequency_penalty <= 2, "in [-2, 2]"),
            ("presence_penalty", -2 <= self.presence_penalty <= 2, "in [-2, 2]"),
            ("no_repeat_ngram_size", self.no_repeat_ngram_size >= 0, ">= 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)}")

    @property
    def is_greedy(self):
        return self.temperature == 0

    def stages(self, prompt_length):
        """The steps that change the logits, in order, as (name, f(logits, context) -> logits).
        context (B, T) is the prompt followed by the generated tokens; greedy decoding keeps
        the penalties and skips the warpers, which cannot change the argmax (typical could)."""
        stages = []
        if self.repetition_penalty != 1.0:
            stages.append((f"repetition penalty {self.repetition_penalty:g}",
                           lambda z, ctx: repetition_penalty(z, ctx, self.repetition_penalty)))
        if self.frequency_penalty or self.presence_penalty:
            stages.append((f"frequency {self.frequency_penalty:g} / presence {self.presence_penalty:g}",
                           lambda z, ctx: frequency_presence_penalty(
                               z, token_counts(ctx[:, prompt_length:], z.size(-1)),
                               self.frequency_penalty, self.presence_penalty)))
        if self.no_repeat_ngram_size:
            stages.append((f"no repeated {self.no_repeat_ngram_size}-gram",
                           lambda z, ctx: no_repeat_ngram(z, ctx, self.no_repeat_ngram_size)))
        if self.is_greedy:
            return stages
        if self.temperature != 1.0:
            stages.append((f"temperature {self.temperature:g}", lambda z, ctx: apply_temperature(z, self.temperature)))
        if self.top_k is not None:
            stages.append((f"top-k {self.top_k}", lambda z, ctx: top_k_filter(z, self.top_k)))
        if self.top_p is not None:
            stages.append((f"top-p {self.top_p:g}", lambda z, ctx: top_p_filter(z, self.top_p)))
        if self.min_p is not None:
            stages.append((f"min-p {self.min_p:g}", lambda z, ctx: min_p_filter(z, self.min_p)))
        if self.typical_p is not None:
            stages.append((f"typical {self.typical_p:g}", lambda z, ctx: typical_filter(z, self.typical_p)))
        return stages

    def choose(self, logits, generator=None):
        """The next token from processed logits: argmax when greedy, else a draw. (B, V) -> (B, 1)"""
        return greedy(logits) if self.is_greedy else sample(logits, generator)


def process(logits, context, decoding, prompt_length):
    """Apply every stage of `decoding` to logits (B, V) in order."""
    for _, stage in decoding.stages(prompt_length):
        logits = stage(logits, context)
    return logits


def next_logits(model, idx, cache=None, new=1):
    """Logits (B, V) for the token after idx (B, T).

    Without a cache the model reads the whole context again (cropped to block_size): T^2 work
    over a generation. With a KVCache it reads only the `new` tokens not cached yet. Learned
    position embeddings cannot slide, so when the cache is full it restarts from the last
    W = block_size // 2 tokens: one prefill of W tokens every W + 1 steps, and a context that
    drops to W tokens at that point and grows back (without the cache it is always block_size)."""
    block_size = model.config.block_size
    if cache is None:
        return model(idx[:, -block_size:])[0][:, -1, :]  # (B, min(T, block_size), V) -> (B, V)
    if cache.length + new > block_size:
        window = max(1, block_size // 2) if cache.length else block_size
        cache.length = 0
        new = min(idx.size(1), window)
    return model(idx[:, -new:], cache=cache)[0][:, -1, :]  # (B, new, V) -> (B, V)


@torch.inference_mode()  # no autograd bookkeeping: less overhead per step than no_grad
def stream(model, idx, max_new_tokens, decoding=Decoding(), generator=None, use_cache=True):
    """Yield the next token ids (B, 1), one step at a time. idx: (B, T) prompt ids."""
    prompt_length = idx.size(1)
    cache = model.new_cache(idx.size(0)) if use_cache else None
    logits = next_logits(model, idx, cache, new=prompt_length)  # (B, V): the prompt, read once
    for step in range(max_new_tokens):
        logits = process(logits, idx, decoding, prompt_length)  # (B, V)
        next_id = decoding.choose(logits, generator)  # (B, 1)
        idx = torch.cat((idx, next_id), dim=1)  # (B, T + 1)
        yield next_id
        if step + 1 < max_new_tokens:
            logits = next_logits(model, idx, cache)


def generate(model, idx, max_new_tokens, *, temperature=1.0, top_k=None, top_p=None, min_p=None,
             typical_p=None, repetition_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0,
             no_repeat_ngram_size=0, generator=None, use_cache=True):
    """Extend idx (B, T) by max_new_tokens: returns (B, T + max_new_tokens)."""
    decoding = Decoding(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
                        repetition_penalty=repetition_penalty, frequency_penalty=frequency_penalty,
                        presence_penalty=presence_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    new = list(stream(model, idx, max_new_tokens, decoding, generator, use_cache))  # max_new_tokens x (B, 1)
    return torch.cat([idx, *new], dim=1)  # (B, T + max_new_tokens)


@torch.inference_mode()
def beam_search(model, idx, max_new_tokens, num_beams, length_penalty=1.0, use_cache=True):
    """Keep the num_beams most likely continuations, scored by summed log-probability:

        score(y) = sum_t log p(y_t | y_<t) / |y|^length_penalty,   |y| = generated tokens

    (the length penalty matters when beams have different lengths; here all have max_new_tokens).
    idx: (1, T). Returns sequences (num_beams, T + max_new_tokens), best first, and their scores
    (num_beams,). num_beams = 1 is greedy decoding."""
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    assert idx.size(0) == 1, "beam search decodes one prompt at a time"
    cache = model.new_cache(1) if use_cache else None
    beams = idx  # (K, T), K = 1 beam at the start
    scores = torch.zeros(1, device=idx.device)  # (K,): summed log-probabilities
    logits = next_logits(model, beams, cache, new=idx.size(1))  # (K, V)
    for step in range(max_new_tokens):
        log_probs = F.log_softmax(logits.float(), dim=-1)  # (K, V)
        V = log_probs.size(-1)
        candidates = (scores[:, None] + log_probs).view(-1)  # (K * V,): every beam x every next token
        # a stable sort breaks ties by the lowest (beam, token) index, as argmax does
        scores, flat = torch.sort(candidates, descending=True, stable=True)
        scores, flat = scores[:num_beams], flat[:num_beams]  # (K,)
        rows = flat // V  # (K,): the beam each survivor extends
        beams = torch.cat((beams[rows], (flat % V)[:, None]), dim=1)  # (K, T + 1)
        if step + 1 < max_new_tokens:
            if cache is not None:
                cache.reorder(rows)
            logits = next_logits(model, beams, cache)
    return beams, scores / max(1, max_new_tokens) ** length_penalty
