"""
How a language model picks its next token: every strategy as a small pure function.

Each filter or penalty takes logits (B, V) and returns new logits (B, V), with -inf for the
tokens it removes, and never edits its input. `Decoding` holds the settings of a strategy and
turns them into the list of stages a token passes through; `stream()` is the one decode loop.
The default order is the one of Hugging Face transformers:

    guidance -> pattern mask -> logit bias
    -> repetition -> frequency/presence -> DRY -> no-repeat n-gram                (penalties)
    -> temperature (or dynamic temperature) -> top-k -> top-p -> min-p -> typical
    -> epsilon -> eta -> top-n-sigma -> XTC -> mirostat                           (warpers)
    -> watermark
    -> softmax -> categorical draw (or argmax when temperature == 0)

(contrastive search, penalty_alpha > 0, replaces the warpers and the draw with its choice among the
top_k candidates; Hugging Face masks by a pattern, its prefix_allowed_tokens_fn, after the
penalties, which changes nothing: the mask and each penalty act on each token alone, and a removed
token stays removed), and Decoding(order="llama.cpp") gives llama.cpp's default chain, temperature last:

    guidance -> pattern mask -> logit bias -> penalties -> DRY -> top-n-sigma -> top-k -> typical
    -> top-p -> min-p -> XTC -> watermark -> temperature -> draw

B: batch rows, V: vocabulary size, T: tokens of context so far.
"""
import functools
import itertools
import math
from dataclasses import dataclass, field, fields
from typing import Callable, NamedTuple, Optional

import regex
import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- choosing a token

def greedy(logits):
    """next = argmax_i logits_i; ties go to the lowest index. (B, V) -> (B, 1)"""
    return torch.argmax(logits, dim=-1, keepdim=True)  # (B, V) -> (B, 1)


def argmax_only(logits):
    """The logits with every token but the argmax at -inf: temperature 0 as a stage. (B, V) -> (B, V)"""
    others = torch.ones_like(logits, dtype=torch.bool).scatter(1, greedy(logits), False)  # (B, V)
    return logits.masked_fill(others, float("-inf"))


def uniform(rows, generator=None, device=None):
    """One number drawn uniformly from [0, 1) per row, from the row's own generator when
    `generator` is a list of them (as sample() takes it). -> (rows,)"""
    if isinstance(generator, (list, tuple)):
        return torch.cat([torch.rand(1, generator=g, device=device) for g in generator])  # (B,)
    return torch.rand(rows, generator=generator, device=device)  # (B,)


def categorical(probs, generator=None):
    """One draw per row from the distribution probs (B, V) (a row is scaled by its sum), by
    inverting its cumulative distribution F(i) = p_0 + ... + p_i:

        u ~ Uniform[0, 1),   next = the first i with F(i) > u · F(V - 1)

    so token i comes out when u falls in an interval of width p_i, and a token of probability 0
    never does (its F(i) equals F(i - 1)). The draw reads only torch.rand, whose numbers are the
    same on every machine and PyTorch version tried for the same seed (torch.multinomial's
    changed in PyTorch 2.7). generator: as in uniform(). (B, V) -> (B, 1)"""
    cdf = probs.float().cumsum(dim=-1)  # (B, V), non-decreasing
    u = uniform(probs.size(0), generator, probs.device)[:, None] * cdf[:, -1:]  # (B, 1): u < 1 keeps it below F(V - 1)
    return torch.searchsorted(cdf, u, right=True)  # (B, 1): the first i with F(i) > u


def sample(logits, generator=None):
    """next ~ Categorical(softmax(logits)): one draw from the distribution (categorical()).
    (B, V) -> (B, 1)

    generator: a seeded torch.Generator for repeatable draws, or a list of B of them, one per
    row, so that a row of a batch draws exactly what it would draw decoded alone."""
    return categorical(F.softmax(logits, dim=-1), generator)  # (B, V) -> (B, 1)


# ----------------------------------------------------------------------------- warpers

def apply_temperature(logits, temperature):
    """p_i = exp(z_i / tau) / sum_j exp(z_j / tau)  (Ackley, Hinton & Sejnowski 1985).

    Divides the *logits*: tau < 1 sharpens the distribution, tau > 1 flattens it, tau -> inf
    tends to uniform. (Dividing probabilities and applying softmax again is a common mistake.)"""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return logits / temperature  # (B, V)


def entropy(logits):
    """H = -sum_i p_i ln p_i of p = softmax(logits), in nats: 0 when one token is certain,
    ln V when all V are equally likely; a removed token (-inf) adds 0. (..., V) -> (...)"""
    log_p = F.log_softmax(logits, dim=-1)  # (..., V)
    return -(log_p.exp() * log_p).nansum(dim=-1)  # (...,)


def dynamic_temperature(logits, temperature, delta, exponent=1.0):
    """Dynamic temperature (llama.cpp `llama_sampler_temp_ext_apply`, from kalomaze's "DynaTemp"):
    a flat distribution gets a high temperature, a peaked one a low temperature:

        tau = tau_min + (tau_max - tau_min) * (H / H_max)^exponent,
        tau_min = max(0, temperature - delta),  tau_max = temperature + delta

    with H the entropy of softmax(logits) over the finite logits and H_max = ln(their count),
    per row. A row with fewer than two finite logits is left as it is; tau = 0 keeps the argmax."""
    finite = torch.isfinite(logits)  # (B, V)
    count = finite.sum(dim=-1, keepdim=True)  # (B, 1)
    h_max = count.clamp(min=2).to(logits.dtype).log()  # (B, 1); rows with < 2 tokens are skipped below
    h = entropy(logits)[:, None]  # (B, 1)
    low, high = max(0.0, temperature - delta), temperature + delta
    tau = low + (high - low) * (h / h_max).clamp(min=0) ** exponent  # (B, 1)
    warped = torch.where(tau > 0, logits / tau.clamp(min=1e-30), argmax_only(logits))  # (B, V)
    return torch.where(count >= 2, warped, logits)


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


def keep_at_least(remove, logits, n):
    """remove (B, V) less every token whose logit is at least the n-th largest (ties kept):
    Hugging Face's min_tokens_to_keep."""
    nth = torch.topk(logits, min(n, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
    return remove & (logits < nth)


def min_p_filter(logits, min_p, min_tokens_to_keep=1):
    """Min-p sampling (Nguyen et al. 2024): keep token i when p_i >= min_p * max_j p_j.

    The cut scales with the model's confidence; the argmax always survives."""
    if not 0 <= min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")
    probs = F.softmax(logits, dim=-1)  # (B, V)
    remove = probs < min_p * probs.amax(dim=-1, keepdim=True)  # (B, V) < (B, 1)
    return logits.masked_fill(keep_at_least(remove, probs, min_tokens_to_keep), float("-inf"))


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
    distance = (-log_probs - entropy(logits)[:, None]).abs()  # (B, V)
    sorted_distance, order = torch.sort(distance, dim=-1, descending=False)  # (B, V), most typical first
    cumulative = F.softmax(logits.gather(1, order), dim=-1).cumsum(dim=-1)  # (B, V)
    last = (cumulative < mass).sum(dim=1, keepdim=True).clamp(max=logits.size(-1) - 1)  # (B, 1)
    remove = sorted_distance > sorted_distance.gather(1, last)  # (B, V) in sorted order
    remove[:, :min_tokens_to_keep] = False
    remove = remove.scatter(1, order, remove)
    return logits.masked_fill(remove, float("-inf"))


def epsilon_filter(logits, epsilon, min_tokens_to_keep=1):
    """Epsilon sampling (Hewitt et al. 2022, "Truncation Sampling as Language Model
    Desmoothing"; Hugging Face EpsilonLogitsWarper): keep token i when p_i >= epsilon.

    An absolute bar, unlike min-p's: the same epsilon on a flat and on a peaked distribution."""
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon_cutoff must be in (0, 1), got {epsilon}")
    remove = F.softmax(logits, dim=-1) < epsilon  # (B, V)
    return logits.masked_fill(keep_at_least(remove, logits, min_tokens_to_keep), float("-inf"))


def eta_filter(logits, epsilon, min_tokens_to_keep=1):
    """Eta sampling (Hewitt et al. 2022; Hugging Face EtaLogitsWarper): keep token i when

        p_i >= eta = min(epsilon, sqrt(epsilon) * exp(-H)),   H the entropy of p in nats

    The bar drops when the distribution is flat (high H), so more tokens stay there. The paper
    calls the setting epsilon too; --eta_cutoff is Hugging Face's name for it."""
    if not 0 < epsilon < 1:
        raise ValueError(f"eta_cutoff must be in (0, 1), got {epsilon}")
    eta = torch.clamp(math.sqrt(epsilon) * torch.exp(-entropy(logits)), max=epsilon)[:, None]  # (B, 1)
    remove = F.softmax(logits, dim=-1) < eta  # (B, V)
    return logits.masked_fill(keep_at_least(remove, logits, min_tokens_to_keep), float("-inf"))


def top_n_sigma_filter(logits, n):
    """Top-n-sigma (Tang et al. 2024, "Top-nσ: Not All Logits Are You Need"; llama.cpp
    `llama_sampler_top_n_sigma_apply`): keep token i when

        z_i >= max_j z_j - n * sigma,   sigma the population standard deviation of the finite logits

    It works on logits, not probabilities, so a temperature applied before it does not change
    which tokens stay (both sides scale alike)."""
    if not n > 0:
        raise ValueError(f"top_n_sigma must be > 0, got {n}")
    finite = torch.isfinite(logits)  # (B, V)
    count = finite.sum(dim=-1, keepdim=True)  # (B, 1)
    z = logits.masked_fill(~finite, 0.0)  # (B, V): -inf counts as nothing in the sums
    mean = z.sum(dim=-1, keepdim=True) / count  # (B, 1)
    sigma = (((z - mean) ** 2) * finite).sum(dim=-1, keepdim=True).div(count).sqrt()  # (B, 1)
    bar = logits.amax(dim=-1, keepdim=True) - n * sigma  # (B, 1)
    return logits.masked_fill(logits < bar, float("-inf"))


def xtc_filter(logits, threshold, probability, generator=None):
    """Exclude Top Choices (text-generation-webui, by p-e-w; llama.cpp `llama_sample_xtc_apply`):
    with probability `probability` (one uniform draw per row), when at least two tokens have
    p_i >= threshold, remove all of them but the least likely one.

    The opposite of truncation: it removes the most likely tokens, to avoid the obvious
    choice, and keeps the least likely of them so that the text stays plausible. A threshold
    above 0.5 does nothing (two tokens cannot both pass it). Ties for the least likely: the
    highest id stays."""
    if not 0 <= threshold <= 1 or not 0 <= probability <= 1:
        raise ValueError(f"xtc_threshold and xtc_probability must be in [0, 1], got {threshold}, {probability}")
    probs = F.softmax(logits, dim=-1)  # (B, V)
    above = probs >= threshold  # (B, V)
    fires = (uniform(logits.size(0), generator, logits.device) < probability) & (above.sum(dim=-1) >= 2)  # (B,)
    least_p = probs.masked_fill(~above, math.inf).amin(dim=-1, keepdim=True)  # (B, 1)
    ids = torch.arange(logits.size(-1), device=logits.device)  # (V,)
    least = torch.where(above & (probs == least_p), ids, -1).amax(dim=-1, keepdim=True)  # (B, 1): highest id among ties
    remove = above & (ids != least) & fires[:, None]  # (B, V)
    return logits.masked_fill(remove, float("-inf"))


def mirostat_filter(logits, mu):
    """Mirostat 2 (Basu et al. 2021, "Mirostat: A Neural Text Decoding Algorithm that Directly
    Controls Perplexity"; llama.cpp `llama_sampler_mirostat_v2_apply`), its truncation: keep the
    tokens whose surprise -log2 p_i is at most mu (B,), and always the most likely one."""
    surprise = -torch.log2(F.softmax(logits, dim=-1))  # (B, V), in bits
    remove = (surprise > mu[:, None]).scatter(1, greedy(logits), False)  # (B, V)
    return logits.masked_fill(remove, float("-inf"))


def mirostat_update(mu, logits, chosen, tau, eta):
    """Mirostat 2, after the draw: mu <- mu - eta * (surprise - tau), with the surprise
    -log2 p of the chosen token under the truncated distribution it was drawn from. Mirostat
    steers the surprise of the text towards tau bits per token. mu (B,), chosen (B, 1) -> (B,)"""
    surprise = -torch.log2(F.softmax(logits, dim=-1).gather(1, chosen))[:, 0]  # (B,)
    return mu - eta * (surprise - tau)


# ----------------------------------------------------------------------------- penalties

def logit_bias(logits, bias):
    """OpenAI's logit_bias: z_i -> z_i + b_i, a fixed number added to chosen tokens' logits
    (bias: (V,), zero for the others). -100 practically bans a token, +100 practically forces it."""
    return logits + bias  # (B, V) + (V,)


def repetition_penalty(logits, context, penalty):
    """The repetition penalty as Hugging Face transformers implements it (as do llama.cpp and
    vLLM), for each distinct token i in the context:

        z_i -> z_i / theta  if z_i > 0,    z_i -> z_i * theta  otherwise

    Each token is penalised once however often it appeared; the prompt counts. theta = 1 does
    nothing, theta > 1 discourages repeats. CTRL (Keskar et al. 2019, section 4.1), where the
    penalty comes from, divides every generated token's logit by theta whatever its sign, which
    *raises* a negative logit. Hugging Face's implementation counts the prompt too, and since
    transformers PR #2303 multiplies negative logits instead. context: (B, T) token ids."""
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


def dry_penalty(logits, context, multiplier, base=1.75, allowed_length=2, breakers=(), window=None):
    """DRY, "Don't Repeat Yourself" (p-e-w, text-generation-webui PR #5677; llama.cpp's
    `llama_sampler_dry_apply` ports pi6am's koboldcpp version).
    A token that would extend a repeat gets

        z_i -> z_i - multiplier * base^(n - allowed_length)    when n >= allowed_length

    where n is the length of the longest run of tokens that ends the context and also occurs
    earlier, followed there by token i: emitting i would make the repeat n + 1 long. The
    penalty grows exponentially with the repeat, so short common runs ("the ") cost nothing and
    a looping paragraph soon costs more than any logit.

    breakers (token ids) end repeats: the run never reaches back past the last breaker in the
    context, and a breaker is never penalised itself. window: search only the last `window`
    tokens (None: the whole context). The exponent is capped so that base^exponent fits a
    float32, as llama.cpp does. context: (B, T) token ids."""
    if multiplier == 0:
        return logits.clone()
    out = logits.clone()
    max_exponent = int(88.7228391 / math.log(base)) if base > 1.000001 else None  # ln(float32 max)
    for row in range(context.size(0)):
        ids = context[row].tolist()[-window:] if window else context[row].tolist()
        N = len(ids)
        if N <= allowed_length:
            continue
        limit = next((i for i in range(N) if ids[N - 1 - i] in breakers), N)  # tokens after the last breaker
        if limit < allowed_length:
            continue
        longest = {}  # token -> the longest repeat it would extend
        for j in range(N - 1):  # the run ending at position j, followed there by ids[j + 1]
            n = 0
            while n <= j and n < limit and ids[j - n] == ids[N - 1 - n]:
                n += 1
            if n >= allowed_length:
                longest[ids[j + 1]] = max(longest.get(ids[j + 1], 0), n)
        for token, n in longest.items():
            if token not in breakers:
                exponent = n - allowed_length if max_exponent is None else min(n - allowed_length, max_exponent)
                out[row, token] -= multiplier * base ** exponent
    return out


# ----------------------------------------------------------------------------- the watermark

WATERMARK_KEY = 15485863  # the hash key: Hugging Face's default (the millionth prime); a deployment picks its own
WATERMARK_THRESHOLD = 4.0  # z above this: watermarked (the paper's; one-sided p = 3e-5 for a text written without it)


def green_list(previous_token, vocab_size, gamma=0.25, key=WATERMARK_KEY):
    """The green list of the soft watermark (Kirchenbauer et al. 2023, "A Watermark for Large
    Language Models", Algorithm 2), seeded by the previous token alone (context width 1):

        seed = key * previous_token,   green = the first floor(gamma * V) ids of randperm(V) drawn with seed

    Hugging Face's WatermarkLogitsProcessor._get_greenlist_ids with seeding_scheme "lefthash"
    (transformers/generation/logits_process.py), whose lists these equal. The permutation is drawn on
    the CPU whatever the model's device (CUDA's randperm gives others), so that a text written on a
    GPU is detected alike on a CPU. -> (V,) bool"""
    generator = torch.Generator().manual_seed(key * previous_token % (2 ** 64 - 1))
    ids = torch.randperm(vocab_size, generator=generator)[:int(vocab_size * gamma)]  # (floor(gamma V),)
    return torch.zeros(vocab_size, dtype=torch.bool).index_fill(0, ids, True)  # (V,)


def green_lists(previous, vocab_size, gamma=0.25, key=WATERMARK_KEY):
    """green_list() of each token of previous (N,), on its device. -> (N, V) bool"""
    return torch.stack([green_list(p, vocab_size, gamma, key) for p in previous.tolist()]).to(previous.device)


def watermark_logits(logits, previous, delta, gamma=0.25, key=WATERMARK_KEY):
    """The soft watermark (Kirchenbauer et al. 2023, Algorithm 2; Hugging Face's
    WatermarkLogitsProcessor, "lefthash", context width 1): delta added to the logits of the green
    list of each row's previous token,

        z_i -> z_i + delta * [i in green_list(previous)]

    Where one token is far likelier than the rest it still wins; where several are close, a green
    one mostly does, and the text holds more green tokens than the gamma expected by chance.
    previous: (B,) the last token of each row's context; a removed token (-inf) stays removed."""
    green = green_lists(previous, logits.size(-1), gamma, key)  # (B, V)
    return torch.where(green, logits + delta, logits)  # (B, V)


def watermark_z_score(green, total, gamma=0.25):
    """z = (g - gamma T) / sqrt(T gamma (1 - gamma)) (Kirchenbauer et al. 2023, section 3; Hugging
    Face's WatermarkDetector._compute_z_score): how many standard deviations the green count g of T
    scored tokens lies above gamma T, its mean in a text written without the watermark, where each
    token is green with probability gamma (a binomial count). Numbers or tensors alike."""
    return (green - gamma * total) / (total * gamma * (1 - gamma)) ** 0.5


def green_tokens(ids, vocab_size, gamma=0.25, key=WATERMARK_KEY):
    """Whether each token of ids (..., N) but the first is in the green list of the token before it.
    -> (..., N - 1) bool"""
    lists = green_lists(torch.arange(vocab_size, device=ids.device), vocab_size, gamma, key)  # (V, V): row p, p's list
    return lists[ids[..., :-1], ids[..., 1:]]  # (..., N - 1)


class Detection(NamedTuple):
    """What detect_watermark() finds in a text."""
    scored: int  # T: every token but the first, which has no previous token to seed its list
    green: int  # how many of them are in their previous token's green list
    z: float  # watermark_z_score(green, scored, gamma)
    watermarked: bool  # z > threshold


def detect_watermark(ids, vocab_size, gamma=0.25, threshold=WATERMARK_THRESHOLD, key=WATERMARK_KEY):
    """The detector of Kirchenbauer et al. 2023 (section 3) on ids (N,): token t is green when it is in
    green_list(ids[t - 1]), and the text is called watermarked when the z-score of the green count
    exceeds the threshold. As Hugging Face's WatermarkDetector with its default
    ignore_repeated_ngrams=False (a repeated pair counts each time); its default z_threshold is 3,
    the paper's 4. A ValueError when N < 2: nothing to score."""
    if ids.numel() < 2:
        raise ValueError(f"the detector scores each token by the one before it: it needs at least 2, got {ids.numel()}")
    green = int(green_tokens(ids, vocab_size, gamma, key).sum())  # (N - 1,) -> ()
    z = watermark_z_score(green, ids.numel() - 1, gamma)
    return Detection(ids.numel() - 1, green, z, z > threshold)


# ----------------------------------------------------------------------------- a pattern: constrained decoding

def characters(stoi):
    """The vocabulary as one string, the character of id i at index i: {'b': 1, 'a': 0} -> 'ab'."""
    return "".join(sorted(stoi, key=stoi.get))


def generated_texts(run, vocabulary):
    """Each row's text after the prompt, as B strings. vocabulary: see characters()."""
    return ["".join(vocabulary[i] for i in row) for row in run.ids[:, run.prompt_length:].tolist()]


@functools.lru_cache(maxsize=4096)
def can_follow(pattern, text, vocabulary):
    """For each character c of vocabulary, whether text + c is still a prefix of some string that
    matches pattern in full: regex.fullmatch(pattern, text + c, partial=True), the partial matching
    of the regex package (the standard library's re has none). A tuple of V bools, cached: where a
    text ends (matched()) asks about the text the next step's mask asks about, and a drafter about
    the texts its target then checks."""
    compiled = regex.compile(pattern)  # once: regex.fullmatch(pattern, ...) would look it up V times
    return tuple(compiled.fullmatch(text + c, partial=True) is not None for c in vocabulary)


def allowed(pattern, text, vocabulary):
    """The characters that may follow text, (V,) bool: those after which the text can still become
    a full match of pattern. vocabulary: the characters in id order, as one string ('小冬瓜')."""
    return torch.tensor(can_follow(pattern, text, vocabulary), dtype=torch.bool)  # (V,)


def matched(pattern, text, vocabulary):
    """True where a constrained text ends: it matches pattern in full and no character can extend it."""
    return regex.fullmatch(pattern, text) is not None and not any(can_follow(pattern, text, vocabulary))


def regex_filter(logits, pattern, texts, vocabulary):
    """Constrained decoding by masking (as Outlines and Hugging Face's prefix_allowed_tokens_fn do):
    with t the row's text after the prompt (texts: B strings),

        z_i -> z_i  if t + vocabulary[i] is a prefix of some string that matches pattern in full,  else -inf

    so that at every step the text can still become a match. The text ends where it matches in
    full and no character can extend it (matched(); stream() finishes the row there); a pattern
    whose matches can always go on ([a-z]+) runs to max_new_tokens, and a text cut there may be an
    unfinished prefix of a match. Each step tries all V characters (can_follow()): O(V T) per row
    and step, where a DFA built once from the pattern (Outlines) would cost O(V).

    The mask renormalises each step on its own: the text is not drawn from the model's
    distribution conditioned on matching the pattern (masked_vs_conditioned()).

    It comes first (FIRST, in both orders). llama.cpp's common_sampler_sample (common/sampling.cpp)
    draws from its whole chain first and, only when the token breaks the grammar, draws again with
    the grammar first: without truncations the same distribution, p(x) + (1 - Z) p(x) / Z = p(x) / Z
    with Z the allowed mass; with them not.

    Partial matching says only that some string might still match: a pattern no string matches
    (a[^\\s\\S]) lets 'a' through, and the row then has nothing left to draw. (B, V) -> (B, V)"""
    keep = torch.stack([allowed(pattern, text, vocabulary) for text in texts]).to(logits.device)  # (B, V)
    return logits.masked_fill(~keep, float("-inf"))


def is_pattern(text):
    """True when text is a non-empty regular expression that the regex package compiles."""
    try:
        regex.compile(text)
    except regex.error:
        return False
    return bool(text)


def masked_vs_conditioned(pattern, vocabulary, next_probs, max_length):
    """{text: (masked, conditioned)} for every text of 1 to max_length characters of vocabulary that
    matches pattern in full, for a pattern none of whose matches begins another (so that the masked
    sampler stops at each). next_probs(context) gives the model's p(. | context), (V,).

        masked(c)      = prod_t p(c_t | c_<t) m_t(c_t) / sum_x p(x | c_<t) m_t(x)    m_t = allowed(pattern, c_<t)
        conditioned(c) = P(c) / sum_{s matches} P(s),    P(c) = prod_t p(c_t | c_<t)

    the first what the mask draws, renormalised step by step; the second the model's probability of
    the text given that it begins with a match."""
    def probability(text, masked):
        total = 1.0
        for t, char in enumerate(text):
            p = torch.as_tensor(next_probs(text[:t]), dtype=torch.float64)  # (V,)
            if masked:
                kept = p * allowed(pattern, text[:t], vocabulary)  # (V,)
                p = kept / kept.sum()
            total *= p[vocabulary.index(char)].item()
        return total

    texts = ["".join(s) for n in range(1, max_length + 1) for s in itertools.product(vocabulary, repeat=n)]
    matches = [t for t in texts if regex.fullmatch(pattern, t)]
    mass = sum(probability(t, masked=False) for t in matches)
    return {t: (probability(t, masked=True), probability(t, masked=False) / mass) for t in matches}


# ----------------------------------------------------------------------------- guidance and contrastive search

def classifier_free_guidance(logits, unconditional_logits, scale):
    """Classifier-free guidance (Sanchez et al. 2023, "Stay on topic with Classifier-Free
    Guidance"; Hugging Face UnbatchedClassifierFreeGuidanceLogitsProcessor), on log-probabilities:

        log p_s(i) = log p_u(i) + s * (log p(i | prompt) - log p_u(i))

    with p = softmax(logits) given the prompt and p_u = softmax(unconditional_logits) given
    something else (a negative prompt). s = 1 gives log p, s = 0 log p_u, s > 1 moves the
    distribution further from p_u than p is: p_s(i) is proportional to p(i)^s / p_u(i)^(s - 1).
    The result is not normalised; softmax() of it is. (B, V), (B, V) -> (B, V)"""
    log_p = F.log_softmax(logits, dim=-1)  # (B, V)
    log_u = F.log_softmax(unconditional_logits, dim=-1)  # (B, V)
    return log_u + scale * (log_p - log_u)


def contrastive_score(probs, candidate_hidden, context_hidden, alpha):
    """Contrastive search's score (Su et al. 2022, "A Contrastive Framework for Neural Text
    Generation"), for each candidate v:

        (1 - alpha) * p(v | x_<t) - alpha * max_{j < t} cos(h_v, h_j)

    the model's confidence less the degeneration penalty, how much the candidate's last hidden
    state h_v resembles one of the context's h_j (a repeat). probs (B, k) of the candidates,
    candidate_hidden (B, k, C), context_hidden (B, T, C) -> (B, k)"""
    h_v = F.normalize(candidate_hidden, dim=-1)  # (B, k, C)
    h_j = F.normalize(context_hidden, dim=-1)  # (B, T, C)
    penalty = (h_v @ h_j.transpose(1, 2)).amax(dim=-1)  # (B, k, C) @ (B, C, T) -> (B, k, T) -> (B, k)
    return (1 - alpha) * probs - alpha * penalty


def contrastive_filter(logits, ids, reader, k, alpha):
    """Contrastive search as a stage: the k most likely tokens of softmax(logits) are the
    candidates; the reader (a Reader of B * k rows) reads the context ids (B, T) with each of
    them, which gives their hidden states and the context's; every token but the candidate of the
    best contrastive_score() gets -inf. A removed token (probability 0) is never chosen. Ties go to
    the more likely candidate.

    As Hugging Face's contrastive search (its _ranking_fast, penalty_alpha and top_k; transformers
    moved it out of the library in version 4.56, to the Hub repository
    transformers-community/contrastive-search), with h the last hidden state after the final
    LayerNorm. k >= V makes every token a candidate. (B, V) -> (B, V)"""
    B, k = logits.size(0), min(k, logits.size(-1))
    probs, candidates = torch.topk(F.softmax(logits, dim=-1), k, dim=-1)  # (B, k), most likely first
    reader(torch.cat((ids.repeat_interleave(k, dim=0), candidates.reshape(-1, 1)), dim=1))  # (B * k, T + 1)
    hidden = reader.hidden.view(B, k, -1, reader.hidden.size(-1))  # (B * k, n, C) -> (B, k, n, C)
    reader.forget(1)  # the candidate is no part of the context
    score = contrastive_score(probs, hidden[:, :, -1], hidden[:, 0, :-1], alpha)  # (B, k)
    chosen = candidates.gather(1, score.masked_fill(probs == 0, -math.inf).argmax(dim=-1, keepdim=True))  # (B, 1)
    others = torch.ones_like(logits, dtype=torch.bool).scatter(1, chosen, False)  # (B, V)
    return logits.masked_fill(others, float("-inf"))


# ----------------------------------------------------------------------------- the settings

def setting(default, kind, help, rule=None, ok=None):
    """A Decoding field: its default, the type of its command-line value, its help text, and
    its allowed values as words (rule) and as a test (ok). None means "off" and always passes."""
    return field(default=default, metadata=dict(kind=kind, help=help, rule=rule, ok=ok))


def finite_in(low, high):
    return lambda v: math.isfinite(v) and low <= v <= high


ORDERS = ("hf", "llama.cpp")


@dataclass(frozen=True)
class Decoding:
    """Every setting of a decoding strategy, in the order Hugging Face applies them. The
    command line, generate() and the walkthrough all read this one list. The defaults are
    pure sampling at temperature 1; a setting at its default changes nothing."""
    logit_bias: tuple = setting(
        (), "bias", "add a fixed number to chosen characters' logits, 'e:-5,z:+2' (OpenAI)",
        "each bias in [-100, 100]", lambda v: all(-100 <= b <= 100 for _, b in v))
    repetition_penalty: float = setting(
        1.0, float, "each character already in the context, once: z/θ if z > 0, else z·θ "
        "(Hugging Face's rule, also llama.cpp's and vLLM's; CTRL divides every generated token's z by θ)",
        "in [0.001, 1000]", finite_in(1e-3, 1e3))
    frequency_penalty: float = setting(
        0.0, float, "subtract this times how often a character was generated (OpenAI)",
        "in [-2, 2]", finite_in(-2, 2))
    presence_penalty: float = setting(
        0.0, float, "subtract this once from every character generated so far (OpenAI)",
        "in [-2, 2]", finite_in(-2, 2))
    penalty_last_n: Optional[int] = setting(
        None, int, "the three penalties above look only at the last n characters (llama.cpp; default: all)",
        ">= 1", lambda v: v >= 1)
    dry_multiplier: float = setting(
        0.0, float, "DRY: a character that would extend a repeat of n >= allowed_length "
        "characters loses multiplier·base^(n - allowed_length) (llama.cpp; 0.8 is usual)",
        "in [0, 100]", finite_in(0, 100))
    dry_base: float = setting(1.75, float, "DRY: how fast the penalty grows with the repeat", "in [1, 10]",
                              finite_in(1, 10))
    dry_allowed_length: int = setting(2, int, "DRY: repeats this long cost nothing", "in [0, 1000]",
                                      lambda v: 0 <= v <= 1000)
    dry_penalty_last_n: Optional[int] = setting(
        None, int, "DRY: look for repeats in the last n characters only (default: all)", ">= 1", lambda v: v >= 1)
    dry_sequence_breakers: str = setting(
        '\n:"*', str, "DRY: each of these characters ends a repeat (llama.cpp's default; those "
        "outside the vocabulary are ignored)", None, None)
    no_repeat_ngram_size: int = setting(
        0, int, "never repeat a run of this many characters (Hugging Face)", "in [0, 10000]",
        lambda v: 0 <= v <= 10_000)
    temperature: float = setting(
        1.0, float, "divide the logits by τ; 0 is greedy (in order hf: no warper then)", "0 or in [0.001, 1000]",
        lambda v: v == 0 or finite_in(1e-3, 1e3)(v))
    dynatemp_range: float = setting(
        0.0, float, "dynamic temperature: τ moves within τ ± range, higher where the distribution is "
        "flatter (llama.cpp)", "in [0, 1000]", finite_in(0, 1e3))
    dynatemp_exponent: float = setting(1.0, float, "dynamic temperature: τ follows (H / H_max)^exponent",
                                       "in [0, 100]", finite_in(0, 100))
    top_k: Optional[int] = setting(None, int, "keep only the k most likely characters", ">= 1", lambda v: v >= 1)
    top_p: Optional[float] = setting(
        None, float, "keep the most likely characters until their probability reaches p (nucleus)",
        "in (0, 1]", lambda v: 0 < v <= 1)
    min_p: Optional[float] = setting(
        None, float, "keep characters at least min_p times as likely as the most likely one",
        "in [0, 1]", lambda v: 0 <= v <= 1)
    typical_p: Optional[float] = setting(
        None, float, "keep the characters of typical surprise until their mass reaches p",
        "in (0, 1]", lambda v: 0 < v <= 1)
    epsilon_cutoff: Optional[float] = setting(
        None, float, "keep characters of probability >= ε (Hugging Face)", "in (0, 1)", lambda v: 0 < v < 1)
    eta_cutoff: Optional[float] = setting(
        None, float, "keep characters of probability >= min(ε, √ε·exp(-entropy)) (Hugging Face)",
        "in (0, 1)", lambda v: 0 < v < 1)
    top_n_sigma: Optional[float] = setting(
        None, float, "keep characters whose logit is within n standard deviations of the largest (llama.cpp)",
        "in (0, 100]", lambda v: 0 < v <= 100)
    xtc_threshold: float = setting(
        0.1, float, "XTC: characters at least this likely are the 'top choices' (llama.cpp)", "in [0, 1]",
        finite_in(0, 1))
    xtc_probability: float = setting(
        0.0, float, "XTC: how often to remove every top choice but the least likely", "in [0, 1]",
        finite_in(0, 1))
    mirostat: int = setting(
        0, int, "2: mirostat 2 keeps the surprise of the text near --mirostat_tau bits per character "
        "(llama.cpp); 0 is off", "0 or 2", lambda v: v in (0, 2))
    mirostat_tau: float = setting(5.0, float, "mirostat: the target surprise, in bits", "in (0, 100]",
                                  lambda v: math.isfinite(v) and 0 < v <= 100)
    mirostat_eta: float = setting(0.1, float, "mirostat: the learning rate of its bound μ", "in (0, 1]",
                                  lambda v: 0 < v <= 1)
    # the watermark (Kirchenbauer et al. 2023)
    watermark: float = setting(
        0.0, float, "watermark the text: add δ to the logits of a green list of characters seeded by the "
        "previous one, for --detect to find (Kirchenbauer et al. 2023; 2 is usual); 0 is off", "in [0, 100]",
        finite_in(0, 100))
    watermark_gamma: float = setting(
        0.25, float, "the watermark's green lists hold this fraction γ of the vocabulary (the writer's and "
        "--detect's must agree)", "in (0, 1)", lambda v: 0 < v < 1)
    # constrained decoding: a regular expression the text must match
    regex: Optional[str] = setting(
        None, str, "keep the text after the prompt a prefix of a full match of this pattern (the regex "
        "package's syntax); a sample ends when it matches in full and no character can extend it, or at "
        "--max_new_tokens, maybe as an unfinished prefix of a match", "a valid, non-empty regular expression",
        is_pattern)
    # classifier-free guidance and contrastive search
    guidance_scale: float = setting(
        1.0, float, "classifier-free guidance: log-probabilities pushed away from those without the prompt, "
        "log p_u + s·(log p - log p_u) (Sanchez et al. 2023; Hugging Face); 1 is off", "in [0, 100]",
        finite_in(0, 100))
    negative_prompt: Optional[str] = setting(
        None, str, "guidance: the text p_u continues instead of the prompt (default: the prompt's last "
        "character alone, as Hugging Face's)", "non-empty", lambda v: len(v) > 0)
    penalty_alpha: float = setting(
        0.0, float, "contrastive search: of the --top_k most likely characters, choose the one with the highest "
        "(1 - α)·p - α·(its hidden state's greatest cosine similarity to the context's) (Su et al. 2022; "
        "Hugging Face); no draw, no warper; 0 is off", "in [0, 1]", finite_in(0, 1))
    order: str = setting("hf", str, "the order of the stages: Hugging Face's, or llama.cpp's (temperature last)",
                         "hf or llama.cpp", lambda v: v in ORDERS)
    stop: tuple = setting((), str, "end a sample when its text ends with this string, which is not "
                          "printed (repeat the flag for several)", "non-empty strings", lambda v: all(v))

    def __post_init__(self):
        """Out-of-range values raise ValueError with a one-line message naming the setting."""
        for f in fields(self):
            value, ok = getattr(self, f.name), f.metadata["ok"]
            if value is not None and ok is not None and not ok(value):
                raise ValueError(f"{f.name} must be {f.metadata['rule']}, got {value!r}")
        for problem in self.conflicts():
            raise ValueError(problem)

    def conflicts(self):
        """Combinations that have no meaning, each as a one-line message."""
        problems = []
        if self.dynatemp_range and self.is_greedy:
            problems.append("dynatemp_range needs a temperature > 0 (0 is greedy)")
        if self.mirostat:
            truncation = [name for name in ("top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
                                            "top_n_sigma") if getattr(self, name) is not None]
            truncation += ["xtc_probability"] * bool(self.xtc_probability) + ["dynatemp_range"] * bool(self.dynatemp_range)
            if truncation:
                problems.append(f"mirostat chooses its own cut: drop {', '.join(truncation)} (llama.cpp ignores them)")
            if self.is_greedy:
                problems.append("mirostat needs a temperature > 0 (0 is greedy)")
            if self.order == "llama.cpp" and self.penalties_on:
                problems.append("llama.cpp applies no penalties when mirostat is on: drop them, or use order hf")
        if self.negative_prompt is not None and self.guidance_scale == 1:
            problems.append("negative_prompt needs a guidance_scale other than 1 (1 is off)")
        if self.penalty_alpha:
            if self.top_k is None or self.top_k < 2:
                problems.append("penalty_alpha needs top_k >= 2: contrastive search compares the top_k candidates")
            if self.order == "llama.cpp":
                problems.append("penalty_alpha (contrastive search) is Hugging Face's, with no llama.cpp order: use order hf")
        return problems

    def ignored(self):
        """The settings that change nothing: greedy decoding in Hugging Face's order applies the
        penalties and no warper, as generate() with do_sample=False does (it warns about them too).
        Some could have changed the argmax (typical, XTC); llama.cpp's order applies them all.
        Contrastive search applies no warper either (Hugging Face's, with do_sample=False): top_k
        only counts its candidates; the temperature changes nothing."""
        if self.penalty_alpha:
            return [name for name in ("temperature", "dynatemp_range", *WARPER_SETTINGS)
                    if name != "top_k" and name in self.changed()]
        if not (self.is_greedy and self.order == "hf"):
            return []
        return [name for name in WARPER_SETTINGS if getattr(self, name)]

    @property
    def is_greedy(self):
        return self.temperature == 0

    @property
    def penalties_on(self):
        return (self.repetition_penalty != 1 or self.frequency_penalty or self.presence_penalty
                or self.dry_multiplier or self.no_repeat_ngram_size)

    @property
    def is_random(self):
        """True when a stage draws random numbers or keeps state from step to step (XTC,
        mirostat): the processed logits are then not a function of the context alone."""
        return bool(self.xtc_probability) or bool(self.mirostat)

    @property
    def reads_model(self):
        """True when a stage runs the model itself (guidance, contrastive search): start() then
        needs the model."""
        return self.guidance_scale != 1 or bool(self.penalty_alpha)

    def changed(self):
        """{name: value} of the settings that differ from their defaults."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}

    def stages(self, stoi=None):
        """The steps that change the logits, in order, as Stage(name, apply(logits, run) -> logits).

        stoi (character -> id) is needed when a setting names characters: logit_bias, DRY's
        breakers. Greedy decoding in Hugging Face's order keeps the penalties and skips the
        warpers (see ignored()); llama.cpp runs its whole chain and keeps the argmax at the
        temperature stage."""
        stages = {name: stage for name, stage in self._all_stages(stoi)}
        chain = LLAMA_CPP_CHAIN if self.order == "llama.cpp" else HF_CHAIN
        if self.penalty_alpha:
            chain = FIRST + PENALTIES + ("watermark", "contrastive")
        elif self.mirostat:
            chain = FIRST + (PENALTIES if self.order == "hf" else ()) + ("temperature", "mirostat", "watermark")
        elif self.is_greedy and self.order == "hf":
            chain = FIRST + PENALTIES + ("watermark",)
        return [stages[name] for name in chain if name in stages]

    def _all_stages(self, stoi):
        """(chain name, Stage) for every stage these settings switch on."""
        if self.guidance_scale != 1:
            if self.negative_prompt is not None and stoi is None:
                raise ValueError("negative_prompt names characters: pass the vocabulary (stoi)")
            negative = None if self.negative_prompt is None else torch.tensor([[stoi[c] for c in self.negative_prompt]])
            against = "the prompt's last character" if negative is None else repr(self.negative_prompt)
            yield "guidance", Stage(f"guidance {self.guidance_scale:g} against {against}",
                                    lambda z, run: classifier_free_guidance(
                                        z, run.unconditional(unconditional_ids(run, negative)), self.guidance_scale))
        if self.regex:
            if stoi is None:
                raise ValueError("the pattern's mask reads the text: pass the vocabulary (stoi)")
            vocabulary = characters(stoi)
            yield "regex", Stage(f"regex {self.regex}".replace("\n", "\\n"),
                                 lambda z, run: regex_filter(z, self.regex, generated_texts(run, vocabulary), vocabulary))
        if self.logit_bias:
            yield "logit_bias", Stage(f"logit bias {format_bias(self.logit_bias)}",
                                      lambda z, run: logit_bias(z, bias_vector(self.logit_bias, stoi, z)))
        if self.repetition_penalty != 1:
            yield "repetition", Stage(f"repetition penalty {self.repetition_penalty:g}",
                                      lambda z, run: repetition_penalty(z, run.window(self.penalty_last_n),
                                                                        self.repetition_penalty))
        if self.frequency_penalty or self.presence_penalty:
            yield "frequency_presence", Stage(
                f"frequency {self.frequency_penalty:g} / presence {self.presence_penalty:g}",
                lambda z, run: frequency_presence_penalty(
                    z, token_counts(run.window(self.penalty_last_n, generated_only=True), z.size(-1)),
                    self.frequency_penalty, self.presence_penalty))
        if self.dry_multiplier:
            if stoi is None and self.dry_sequence_breakers:
                raise ValueError("DRY's sequence breakers are characters: pass the vocabulary (stoi)")
            breakers = {stoi[c] for c in self.dry_sequence_breakers if c in stoi} if stoi else set()
            yield "dry", Stage(f"DRY {self.dry_multiplier:g} · {self.dry_base:g}^(n - {self.dry_allowed_length})",
                               lambda z, run: dry_penalty(z, run.ids, self.dry_multiplier, self.dry_base,
                                                          self.dry_allowed_length, breakers, self.dry_penalty_last_n))
        if self.no_repeat_ngram_size:
            yield "no_repeat", Stage(f"no repeated {self.no_repeat_ngram_size}-gram",
                                     lambda z, run: no_repeat_ngram(z, run.ids, self.no_repeat_ngram_size))
        if self.watermark:
            yield "watermark", Stage(f"watermark δ {self.watermark:g}, γ {self.watermark_gamma:g}",
                                     lambda z, run: watermark_logits(z, run.ids[:, -1], self.watermark,
                                                                     self.watermark_gamma))
        if self.is_greedy and self.order == "llama.cpp":
            yield "temperature", Stage("temperature 0: the argmax only", lambda z, run: argmax_only(z))
        elif self.dynatemp_range:
            yield "temperature", Stage(
                f"dynamic temperature {self.temperature:g} ± {self.dynatemp_range:g}",
                lambda z, run: dynamic_temperature(z, self.temperature, self.dynatemp_range, self.dynatemp_exponent))
        elif self.temperature != 1:
            yield "temperature", Stage(f"temperature {self.temperature:g}",
                                       lambda z, run: apply_temperature(z, self.temperature))
        for name, value, label, filter_ in [
            ("top_k", self.top_k, "top-k", top_k_filter), ("top_p", self.top_p, "top-p", top_p_filter),
            ("min_p", self.min_p, "min-p", min_p_filter), ("typical", self.typical_p, "typical", typical_filter),
            ("epsilon", self.epsilon_cutoff, "epsilon", epsilon_filter), ("eta", self.eta_cutoff, "eta", eta_filter),
            ("top_n_sigma", self.top_n_sigma, "top-n-sigma", top_n_sigma_filter),
        ]:
            if value is not None:
                yield name, Stage(f"{label} {value:g}", lambda z, run, f=filter_, v=value: f(z, v))
        if self.xtc_probability:
            yield "xtc", Stage(f"XTC {self.xtc_threshold:g} with probability {self.xtc_probability:g}",
                               lambda z, run: xtc_filter(z, self.xtc_threshold, self.xtc_probability, run.generator))
        if self.mirostat:
            yield "mirostat", Stage(f"mirostat 2 (τ {self.mirostat_tau:g}, η {self.mirostat_eta:g})",
                                    lambda z, run: mirostat_filter(z, run.mu))
        if self.penalty_alpha:
            yield "contrastive", Stage(f"contrastive search α {self.penalty_alpha:g} among the top {self.top_k}",
                                       lambda z, run: contrastive_filter(z, run.ids, run.lookahead, self.top_k,
                                                                         self.penalty_alpha))

    def start(self, ids, generator=None, model=None, use_cache=True):
        """The Run of a generation that continues the prompts ids (B, T); guidance and contrastive
        search read the model too, each with a Reader of its own, cached as the decode loop is."""
        mu = torch.full((ids.size(0),), 2.0 * self.mirostat_tau, device=ids.device) if self.mirostat else None
        if self.reads_model and model is None:
            raise ValueError("guidance and contrastive search run the model: pass it to start()")
        unconditional = Reader(model, ids.size(0), use_cache) if self.guidance_scale != 1 else None
        candidates = min(self.top_k or 0, model.config.vocab_size) if self.penalty_alpha else 0
        lookahead = Reader(model, ids.size(0) * candidates, use_cache, keep_hidden=True) if candidates else None
        return Run(ids, ids.size(1), generator, mu, unconditional=unconditional, lookahead=lookahead)

    def choose(self, logits, run):
        """The next token from processed logits: argmax when greedy or contrastive (its stage left
        one token), else a draw from the row's generator; mirostat then moves its bound. (B, V) -> (B, 1)"""
        if self.is_greedy or self.penalty_alpha:
            return greedy(logits)
        chosen = sample(logits, run.generator)  # (B, 1)
        if self.mirostat:
            run.mu = mirostat_update(run.mu, logits, chosen, self.mirostat_tau, self.mirostat_eta)
        return chosen


# Guidance reads the model's own logits; the pattern's mask comes before the penalties and the
# truncations, in both orders: a truncation before it could keep only characters the pattern forbids.
FIRST = ("guidance", "regex", "logit_bias")
PENALTIES = ("repetition", "frequency_presence", "dry", "no_repeat")
WARPER_SETTINGS = ("top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_n_sigma",
                   "xtc_probability")  # the settings of the stages that only sampling applies in Hugging Face's order
# The watermark comes last in Hugging Face's order, after the temperature and the truncations
# (_get_logits_processor: "Watermarking should be after all logits processing is finished (see
# #34630)", a transformers issue): delta is added to the logits the draw reads, so its strength
# does not depend on the temperature, and a truncated token stays removed.
HF_CHAIN = FIRST + PENALTIES + ("temperature", "top_k", "top_p", "min_p", "typical", "epsilon", "eta",
                                "top_n_sigma", "xtc", "mirostat", "watermark")
# llama.cpp's default sampler chain (common/common.h): penalties, dry, top_n_sigma, top_k, typ_p,
# top_p, min_p, xtc, temperature; logit bias comes first. No-repeat-n-gram, epsilon and eta are
# not in llama.cpp: they sit with the penalties and the truncations. llama.cpp has no watermark: it
# comes after the truncations, as in Hugging Face's order, and before the temperature, which
# llama.cpp keeps last and which at 0 keeps the argmax alone (a watermark after it would change
# nothing); delta is then divided by the temperature like every other logit.
LLAMA_CPP_CHAIN = FIRST + PENALTIES + ("top_n_sigma", "top_k", "typical", "top_p", "min_p", "epsilon", "eta", "xtc",
                                       "watermark", "temperature")


def format_bias(bias):
    """(('e', -5.0), ('z', 2.0)) -> 'e:-5,z:+2'"""
    return ",".join(f"{char}:{value:+g}" for char, value in bias).replace("\n", "\\n")


def bias_vector(bias, stoi, like):
    """The (V,) vector of logit_bias's biases by token id, zero elsewhere."""
    if stoi is None:
        raise ValueError("logit_bias names characters: pass the vocabulary (stoi)")
    vector = torch.zeros(like.size(-1), dtype=like.dtype, device=like.device)  # (V,)
    for char, value in bias:
        vector[stoi[char]] += value
    return vector


class Stage(NamedTuple):
    """One step of the pipeline: its name as the walkthrough prints it, and the function."""
    name: str
    apply: Callable  # (logits (B, V), run: Run) -> logits (B, V)


@dataclass
class Run:
    """What the stages of one generation read besides the logits."""
    ids: torch.Tensor  # (B, T): the prompt and every token chosen so far
    prompt_length: int
    generator: object = None  # a torch.Generator, a list of B of them (one per row), or None
    mu: Optional[torch.Tensor] = None  # (B,): mirostat's bound on the surprise, per row
    unconditional: Optional["Reader"] = None  # guidance: the model reading the text without the prompt
    lookahead: Optional["Reader"] = None  # contrastive search: the model reading the text with each candidate

    def window(self, last_n, generated_only=False):
        """The last `last_n` tokens of the context (all when None), (B, <= T); only the
        generated ones, not the prompt's, when generated_only."""
        start = self.prompt_length if generated_only else 0
        if last_n is not None:
            start = max(start, self.ids.size(1) - last_n)
        return self.ids[:, start:]


def process(logits, run, stages, observe=None):
    """Apply the stages to logits (B, V) in order; observe(name, logits) sees each result."""
    for stage in stages:
        logits = stage.apply(logits, run)
        if observe is not None:
            observe(stage.name, logits)
    return logits


# ----------------------------------------------------------------------------- the decode loop

def model_input(idx, cache, block_size, new=1):
    """The ids (B, n) the model reads to predict the token after idx (B, T).

    Without a cache the model reads the whole context again, cropped to its last block_size
    tokens: T^2 work over a generation up to block_size, T * block_size after. With a KVCache it
    reads only the `new` tokens not cached yet. Learned position embeddings cannot slide, so
    when the cache is full it restarts (empties it) from the last W = block_size // 2 tokens:
    one prefill of W tokens every block_size + 1 - W steps (W + 1 when block_size is even, as
    the shipped model's 128 is), and a context that drops to W tokens at that
    point and grows back (without the cache it is always block_size)."""
    if cache is None:
        return idx[:, -block_size:]  # (B, min(T, block_size))
    if cache.length + new > block_size:
        window = max(1, block_size // 2) if cache.length else block_size
        cache.reset()
        new = min(idx.size(1), window)
    return idx[:, -new:]  # (B, new)


def window_start(t, prompt_length, block_size):
    """Where the context of position t begins (the token at index t is predicted from
    ids[start:t]) under plain cached decoding, model_input()'s schedule:

    the prompt is read once, cropped to its last block_size tokens; the context then grows by one
    token a step until it holds block_size tokens, and the next step restarts from the last
    W = block_size // 2 of them. From s_0 = max(0, P - block_size), the n-th restart comes at
    t = s_{n-1} + block_size + 1 and starts at s_n = t - W: each restart moves the start by
    block_size + 1 - W."""
    start = max(0, prompt_length - block_size)
    if t - start <= block_size:
        return start
    period = block_size + 1 - max(1, block_size // 2)
    return start + ((t - start - block_size - 1) // period + 1) * period


def next_logits(model, idx, cache=None, new=1):
    """Logits (B, V) for the token after idx (B, T), reading what model_input() says."""
    fed = model_input(idx, cache, model.config.block_size, new)  # (B, n)
    return model(fed, cache=cache)[0][:, -1, :]  # (B, n, V) -> (B, V)


class Reader:
    """The model reading a text of a stage's own as it grows, on model_input()'s schedule (with a
    KV cache of its own, or without one as the decode loop's use_cache says): guidance's text
    without the prompt, contrastive search's text with each candidate. With keep_hidden it keeps
    the last hidden state of every position it holds (after a restart of the window, those of the
    new window)."""

    def __init__(self, model, rows, use_cache=True, keep_hidden=False):
        self.model, self.read = model, 0
        self.cache = model.new_cache(rows) if use_cache else None
        self.hidden = model.lm_head.weight.new_zeros(rows, 0, model.config.n_embd) if keep_hidden else None  # (rows, 0, C)

    def __call__(self, ids):
        """The logits (rows, V) for the token after ids (rows, T), whose first self.read tokens it has read before."""
        fed = model_input(ids, self.cache, self.model.config.block_size, ids.size(1) - self.read)  # (rows, n)
        logits, _, hidden = self.model(fed, cache=self.cache, hidden=True)  # (rows, n, V), (rows, n, C)
        if self.hidden is not None:
            held = fed.size(1) if self.cache is None else self.cache.length
            self.hidden = torch.cat((self.hidden, hidden), dim=1)[:, -held:]  # (rows, held, C)
        self.read = ids.size(1)
        return logits[:, -1]  # (rows, V)

    def forget(self, n):
        """Take back the last n tokens read."""
        if self.cache is not None:
            self.cache.truncate(self.cache.length - n)
        if self.hidden is not None:
            self.hidden = self.hidden[:, :-n]  # (rows, held - n, C)
        self.read -= n


def unconditional_ids(run, negative=None):
    """Guidance's text without the prompt, as Hugging Face's: the negative prompt (1, N), or else
    the prompt's last token, then every token generated so far. -> (B, N + generated)"""
    first = run.ids[:, run.prompt_length - 1:run.prompt_length] if negative is None else \
        negative.to(run.ids.device).expand(run.ids.size(0), -1)  # (B, N)
    return torch.cat((first, run.ids[:, run.prompt_length:]), dim=1)  # (B, N + generated)


class Step(NamedTuple):
    """What stream() yields at each step."""
    ids: torch.Tensor  # (B, 1): the token chosen for each row; -1 where a row has none (it has finished)
    logits: torch.Tensor  # (B, V): the processed logits it was chosen from
    finished: torch.Tensor  # (B,) bool: the row has ended (a stop string, or nothing left to draw)


def ends_with(ids, endings, start):
    """(B,) bool: the row of ids (B, T) ends with one of `endings` (lists of ids) within ids[:, start:]."""
    if not endings:
        return torch.zeros(ids.size(0), dtype=torch.bool, device=ids.device)
    rows = ids[:, start:].tolist()
    return torch.tensor([any(len(e) <= len(row) and row[len(row) - len(e):] == e for e in endings)
                         for row in rows], dtype=torch.bool, device=ids.device)


@torch.inference_mode()  # no autograd bookkeeping: less overhead per step than no_grad
def stream(model, idx, max_new_tokens, decoding=Decoding(), generator=None, use_cache=True, stoi=None,
           observe=None):
    """The decode loop: yield a Step for each new token, until max_new_tokens or until every
    row has finished. idx: (B, T) prompt ids.

    A row finishes when its generated text ends with one of decoding.stop (stoi encodes them;
    the stop string is part of the text, for the caller to cut), when it matches decoding.regex
    in full and no character can extend it (matched()), or when the stages leave it nothing to
    draw, every token removed (the row then gets no token, -1). observe(name,
    tensor), when given, sees at every step the ids fed to the model ("ids"), its logits
    ("logits") and the logits after every stage."""
    stages = decoding.stages(stoi)
    stops = [[stoi[c] for c in s] for s in decoding.stop]
    vocabulary = characters(stoi) if decoding.regex else None
    run = decoding.start(idx, generator, model, use_cache)
    cache = model.new_cache(idx.size(0)) if use_cache else None
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)  # (B,)
    rows_can_end = bool(stages or stops)  # the model's own logits are finite: only a stage can remove every token
    new = idx.size(1)  # the prompt is read once
    for _ in range(max_new_tokens):
        fed = model_input(run.ids, cache, model.config.block_size, new)  # (B, n)
        logits = model(fed, cache=cache)[0][:, -1, :]  # (B, n, V) -> (B, V)
        new = 1  # from now on one token a step, while the cache has room
        if observe is not None:
            observe("ids", fed)
            observe("logits", logits)
        logits = process(logits, run, stages, observe)  # (B, V)
        if not rows_can_end:  # a token for every row at every step: nothing to keep track of
            chosen = decoding.choose(logits, run)  # (B, 1)
            run.ids = torch.cat((run.ids, chosen), dim=1)  # (B, T + 1)
            yield Step(chosen, logits, finished)
            continue
        empty = ~torch.isfinite(logits).any(dim=-1)  # (B,): nothing left to draw
        chosen = decoding.choose(logits.masked_fill(empty[:, None], 0.0), run)  # (B, 1)
        run.ids = torch.cat((run.ids, chosen), dim=1)  # (B, T + 1)
        chosen = chosen.masked_fill((finished | empty)[:, None], -1)
        finished |= empty
        if stops:
            finished |= ends_with(run.ids, stops, run.prompt_length)
        if vocabulary:
            finished |= torch.tensor([matched(decoding.regex, text, vocabulary)
                                      for text in generated_texts(run, vocabulary)], device=finished.device)
        yield Step(chosen, logits, finished.clone())
        if finished.all():
            return


def generate(model, idx, max_new_tokens, decoding=None, *, generator=None, use_cache=True, stoi=None, **settings):
    """Extend idx (B, T) by max_new_tokens: returns (B, T + max_new_tokens).

    The strategy is a Decoding, or its settings as keywords: generate(model, idx, 100, top_p=0.9).
    Every row gets max_new_tokens; stop strings and patterns, which end rows at different lengths,
    need the rows one step at a time: iterate stream() instead."""
    decoding = decoding or Decoding(**settings)
    if decoding.stop or decoding.regex:
        raise ValueError("generate() returns rows of equal length: for stop strings and patterns iterate stream()")
    steps = list(stream(model, idx, max_new_tokens, decoding, generator, use_cache, stoi))
    if steps and steps[-1].finished.any():
        row = int(steps[-1].finished.nonzero()[0])
        drawn = sum(int(step.ids[row, 0] >= 0) for step in steps)  # the tokens it got before it ran dry
        raise ValueError(f"row {row} has nothing left to draw after {drawn} tokens: every token is removed")
    return torch.cat([idx, *(step.ids for step in steps)], dim=1)  # (B, T + max_new_tokens)


def beam_step(scores, log_probs, num_beams):
    """One step of beam search: each beam's score plus each next token's log-probability,

        candidate(b, i) = scores_b + log p(i | beam b),

    and the num_beams best candidates, best first; ties go to the lowest (beam, token) index, as
    argmax's do. scores (K,), log_probs (K, V) -> scores (n,), the beam each extends (n,), its token (n,)"""
    V = log_probs.size(-1)
    candidates = (scores[:, None] + log_probs).view(-1)  # (K * V,): every beam x every next token
    best, flat = torch.sort(candidates, descending=True, stable=True)  # stable: ties keep index order
    best, flat = best[:num_beams], flat[:num_beams]  # (n,)
    return best, flat // V, flat % V


class Hypothesis(NamedTuple):
    """A finished beam: its ids (T + n,), prompt included, and its score."""
    ids: torch.Tensor
    score: float


@torch.inference_mode()
def beam_search(model, idx, max_new_tokens, num_beams, length_penalty=1.0, stop=(), use_cache=True):
    """Keep the num_beams best *extensions* of the current beams at each step, scored by summed
    log-probability; a beam that ends with a stop sequence is set aside as a finished hypothesis
    with the score

        score(y) = sum_t log p(y_t | y_<t) / |y|^length_penalty,   |y| = generated tokens

    and at max_new_tokens every live beam is one too. The search stops early when the best live
    beam, scored as if it ended now, cannot beat the worst of num_beams finished hypotheses:
    Hugging Face's heuristic, certain for length_penalty <= 0 (a longer beam only scores lower),
    a guess for length_penalty > 0 (a longer beam divides by more). Without stop sequences every
    hypothesis has max_new_tokens tokens and length_penalty only rescales the scores; with them
    it decides between short and long hypotheses (> 0 favours long ones).

    This is Hugging Face's beam search (early_stopping=False), stop sequences playing the part
    of its end-of-sequence tokens. idx: (1, T); stop: sequences of token ids. Returns the best
    num_beams Hypothesis(ids (T + n,), score), best first; num_beams = 1 is greedy decoding."""
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    assert idx.size(0) == 1, "beam search decodes one prompt at a time"
    stop = [list(s) for s in stop]
    P = idx.size(1)
    if max_new_tokens == 0:
        return [Hypothesis(idx[0], 0.0)]
    cache = model.new_cache(1) if use_cache else None
    beams = idx  # (K, P + t): K = 1 beam at the start
    scores = torch.zeros(1, device=idx.device)  # (K,): summed log-probabilities
    finished = []  # the best num_beams hypotheses so far, best first
    logits = next_logits(model, beams, cache, new=P)  # (K, V)
    for step in range(max_new_tokens):
        log_probs = F.log_softmax(logits.float(), dim=-1)  # (K, V)
        cand_scores, rows, tokens = beam_step(scores, log_probs, 2 * num_beams)  # (2K,): spares for finished ones
        cand_beams = torch.cat((beams[rows], tokens[:, None]), dim=1)  # (2K, P + t + 1)
        last = step + 1 == max_new_tokens
        ends = torch.ones_like(rows, dtype=torch.bool) if last else ends_with(cand_beams, stop, P)  # (2K,)
        worst = finished[-1].score if len(finished) == num_beams else -math.inf
        for rank in range(min(num_beams, len(rows))):  # only the top num_beams candidates may finish
            score = cand_scores[rank].item() / (step + 1) ** length_penalty
            if ends[rank] and score > worst:
                finished = sorted(finished + [Hypothesis(cand_beams[rank], score)], key=lambda h: -h.score)[:num_beams]
                worst = finished[-1].score if len(finished) == num_beams else -math.inf
        live = torch.nonzero(~ends).flatten()[:num_beams]  # the best candidates that go on
        if last or len(live) == 0:
            break
        best_possible = cand_scores[live[0]].item() / (step + 1) ** length_penalty
        if len(finished) == num_beams and best_possible <= worst:
            break  # no live beam can beat the finished ones any more
        beams, scores = cand_beams[live], cand_scores[live]  # (K, P + t + 1), (K,)
        if cache is not None:
            cache.reorder(rows[live])
        logits = next_logits(model, beams, cache)
    return finished

