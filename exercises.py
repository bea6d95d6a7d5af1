"""
Checkers for the notebooks' "write it yourself" exercises. Write the function, then

    exercises.check_top_k(my_top_k)

runs it beside the repository's own on edge cases and random inputs, smallest first, and prints
either a pass or the smallest input on which the two differ, with both outputs. Each checker
returns True or False; an exception in your function counts as a difference, reported in one line.
"""
import math

import torch
import torch.nn.functional as F

import metrics
import sampling
import speculative

NEG_INF = float("-inf")


# ----------------------------------------------------------------------------- inputs, smallest first

def logits_cases(seed=0):
    """Logits (B, V), smallest first: tiny hand-made rows (ties, -inf, one token), then random ones."""
    cases = [torch.tensor([[2.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 2.0, 1.0]]),
             torch.tensor([[0.7, 0.2, 0.1]]).log(),  # the article's 小, 冬, 瓜
             torch.tensor([[1.0, NEG_INF, 3.0, 3.0]]), torch.tensor([[-1.0, -2.0, 0.5, 0.5, -3.0]])]
    g = torch.Generator().manual_seed(seed)
    for B, V in [(1, 6), (2, 8), (3, 16), (4, 65)]:
        cases.append(torch.randn(B, V, generator=g) * 2)
        cases.append(torch.randint(-2, 3, (B, V), generator=g).float())  # many exact ties
    return cases


def describe(value):
    """A short, readable form of an input or an output."""
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} {value.tolist()}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(describe(v) for v in value) + ")"
    return repr(value)


def same(a, b, atol=1e-5):
    """Equal outputs: tensors of one shape, -inf in the same places, close elsewhere; or equal values."""
    if b is None:
        return a is None
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y, atol) for x, y in zip(a, b))
    if isinstance(b, torch.Tensor):
        a = torch.as_tensor(a, dtype=b.dtype)
        return (a.shape == b.shape and torch.equal(torch.isneginf(a), torch.isneginf(b))
                and torch.allclose(a.masked_fill(torch.isinf(a), 0), b.masked_fill(torch.isinf(b), 0), atol=atol))
    return isinstance(a, (int, float)) and math.isclose(a, b, abs_tol=atol)


def check(name, yours, reference, cases):
    """Run yours(*case) and reference(*case) on every case, smallest first; print and return the verdict."""
    for case in cases:
        try:
            got = yours(*[c.clone() if isinstance(c, torch.Tensor) else c for c in case])
        except Exception as e:  # the learner's function: anything may go wrong
            print(f"{name}: your function raised {type(e).__name__}: {e}\n  on input {describe(case)}")
            return False
        expected = reference(*case)
        if not same(got, expected):
            print(f"{name}: not yet. The smallest input where yours differs:\n  input    {describe(case)}\n"
                  f"  yours    {describe(got)}\n  expected {describe(expected)}")
            return False
    print(f"{name}: pass, {len(cases)} inputs (edge cases included)")
    return True


# ----------------------------------------------------------------------------- one checker per exercise

def check_greedy(fn):
    """fn(logits (B, V)) -> the argmax ids (B, 1), ties to the lowest index."""
    return check("greedy", fn, sampling.greedy, [(z,) for z in logits_cases()])


def check_softmax(fn):
    """fn(logits (B, V)) -> probabilities (B, V); -inf gets probability 0."""
    return check("softmax", fn, lambda z: F.softmax(z, dim=-1), [(z,) for z in logits_cases()])


def check_temperature(fn):
    """fn(logits (B, V), tau) -> logits / tau."""
    cases = [(z, tau) for tau in (1.0, 0.5, 2.0) for z in logits_cases()]
    return check("temperature", fn, sampling.apply_temperature, cases)


def check_top_k(fn):
    """fn(logits (B, V), k) -> logits with all but the k largest (ties kept) at -inf."""
    cases = [(z, k) for z in logits_cases() for k in (1, 2, 3, 5, 100)]
    return check("top-k", fn, sampling.top_k_filter, sorted(cases, key=lambda c: c[0].numel()))


def check_top_p(fn):
    """fn(logits (B, V), p) -> logits with -inf outside the smallest most-likely set of mass >= p."""
    cases = [(z, p) for z in logits_cases() for p in (0.3, 0.5, 0.75, 0.9, 1.0)]
    return check("top-p", fn, sampling.top_p_filter, sorted(cases, key=lambda c: c[0].numel()))


def check_repetition_penalty(fn):
    """fn(logits (B, V), context (B, T) ids, theta) -> Hugging Face's repetition penalty."""
    cases = []
    for z in logits_cases(1):
        z = z.masked_fill(torch.isinf(z), -5.0)  # a removed token has no logit to penalise
        g = torch.Generator().manual_seed(z.numel())
        for theta in (1.3, 2.0, 0.5):
            cases.append((z, torch.randint(0, z.size(-1), (z.size(0), 4), generator=g), theta))
    return check("repetition penalty", fn, sampling.repetition_penalty, cases)


def check_beam_step(fn):
    """fn(scores (K,), log_probs (K, V), num_beams) -> (scores, beams, tokens) of the num_beams best
    extensions, best first, ties to the lowest (beam, token) index."""
    g = torch.Generator().manual_seed(2)
    cases = [(torch.zeros(1), torch.tensor([[0.7, 0.2, 0.1]]).log(), 2),
             (torch.tensor([-0.1, -0.5]), torch.tensor([[0.5, 0.5], [0.9, 0.1]]).log(), 2)]
    for K, V, n in [(2, 5, 2), (3, 8, 3), (4, 65, 4)]:
        cases.append((-torch.rand(K, generator=g) * 3, F.log_softmax(torch.randn(K, V, generator=g), -1), n))
    return check("beam step", fn, sampling.beam_step, cases)


def cached_attention(q, k_cache, v_cache, k_new, v_new):
    """The attention output of one new token over the cached positions and itself, as model.py
    computes it: softmax(q [K; k]^T / sqrt(D)) [V; v]. q, k_new, v_new (B, H, 1, D), caches (B, H, S, D)."""
    k, v = torch.cat((k_cache, k_new), dim=2), torch.cat((v_cache, v_new), dim=2)  # (B, H, S + 1, D)
    return F.scaled_dot_product_attention(q, k, v)  # (B, H, 1, D)


def check_cached_attention(fn):
    """fn(q, k_cache, v_cache, k_new, v_new) -> the new token's attention output (B, H, 1, D)."""
    g = torch.Generator().manual_seed(3)
    cases = []
    for B, H, S, D in [(1, 1, 1, 2), (1, 2, 3, 4), (2, 6, 10, 32)]:
        cases.append(tuple(torch.randn(*shape, generator=g) for shape in
                           [(B, H, 1, D), (B, H, S, D), (B, H, S, D), (B, H, 1, D), (B, H, 1, D)]))
    return check("cached attention", fn, cached_attention, cases)


def check_distinct_n(fn):
    """fn(words, n) -> distinct-n: unique n-grams / n-grams (0.0 without n-grams)."""
    texts = ["", "to", "to be", "to be or not to be", "the world of the world of the world",
             "and therefore be the world of the world and therefore"]
    cases = [(metrics.words(t), n) for t in texts for n in (1, 2, 3)]
    return check("distinct-n", fn, metrics.distinct_n, cases)


def check_top_n_sigma(fn):
    """fn(logits (B, V), n) -> logits with -inf below max - n * sigma of the finite logits."""
    cases = [(z, n) for z in logits_cases()[1:] for n in (0.5, 1.0, 2.0)]
    return check("top-n-sigma", fn, sampling.top_n_sigma_filter, cases)


def check_residual(fn):
    """fn(p, q) -> norm(max(0, p - q)) per row, and p itself where p = q."""
    g = torch.Generator().manual_seed(4)
    cases = [(torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.3, 0.5, 0.2])),
             (torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5])),  # p = q: nothing to redistribute
             (torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.5, 0.5])),  # disjoint supports
             (torch.tensor([0.2, 0.8]), torch.tensor([0.0, 1.0]))]
    for V in (5, 65):
        cases.append((F.softmax(torch.randn(3, V, generator=g), -1), F.softmax(torch.randn(3, V, generator=g), -1)))
    return check("residual", fn, speculative.residual, cases)


def check_allowed(fn):
    """fn(pattern, text, vocabulary) -> (V,) bool: the characters c of vocabulary after which
    text + c can still become a full match of pattern."""
    abc, letters = "ab-", "-abcdefghijklmnopqrstuvwxyz"
    cases = [("a+", "", abc), ("a+", "a", abc), ("ab|ba", "", abc), ("ab|ba", "a", abc), ("ab|ba", "ab", abc),
             ("(ab)*", "ab", abc), ("x", "", abc), ("[a-z]{3}-[a-z]{2}", "abc", letters),
             ("[a-z]{3}-[a-z]{2}", "abc-d", letters)]
    return check("allowed", lambda *case: torch.as_tensor(fn(*case)).float(),
                 lambda *case: sampling.allowed(*case).float(), cases)


def check_green_list(fn):
    """fn(previous_token, vocab_size, gamma) -> (V,) bool: the green list of Hugging Face's "lefthash"
    watermark, the first floor(gamma V) ids of randperm(V) seeded with 15485863 * previous_token."""
    cases = [(0, 4, 0.5), (1, 4, 0.5), (3, 10, 0.3), (7, 65, 0.25), (64, 65, 0.5), (12, 65, 0.1)]
    return check("green list", lambda *case: torch.as_tensor(fn(*case)).float(),
                 lambda *case: sampling.green_list(*case).float(), cases)


def check_z_score(fn):
    """fn(green, total, gamma) -> z = (green - gamma total) / sqrt(total gamma (1 - gamma))."""
    cases = [(1, 4, 0.25), (25, 100, 0.25), (40, 100, 0.25), (10, 100, 0.25), (90, 200, 0.5), (30, 60, 0.1)]
    return check("z-score", fn, sampling.watermark_z_score, cases)


def check_prompt_lookup(fn):
    """fn(ids (N,), max_ngram) -> where prompt lookup copies from: the index after the first (leftmost)
    earlier occurrence of the text's last n tokens, n from max_ngram down to 1, that some token
    follows; None when there is none."""
    cases = [(torch.tensor(ids), n) for ids, n in [([1], 2), ([1, 2], 2), ([1, 2, 1], 2), ([1, 2, 3, 1, 2], 2),
                                                    ([1, 2, 9, 2, 3, 1, 2], 2), ([4, 2, 3, 1, 2], 2),
                                                    ([1, 2, 1, 2], 1), ([5, 6, 7], 3), ([1, 1, 1, 1], 3)]]
    g = torch.Generator().manual_seed(5)
    cases += [(torch.randint(0, 4, (N,), generator=g), n) for N in (6, 12, 30) for n in (1, 2, 3)]
    return check("prompt lookup", fn, speculative.prompt_lookup, cases)
