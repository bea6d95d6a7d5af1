"""exercises.py: every checker passes the repository's own function and catches a wrong one, and
every solution folded into a notebook (a <details> block of Python) passes its checker."""
import glob
import io
import math
import os
import re
from contextlib import redirect_stdout

import pytest
import torch
import torch.nn.functional as F

import exercises
import metrics
import sampling
import speculative
from conftest import ROOT

# A plausible mistake for each exercise, which its checker must catch.
WRONG = {
    "check_greedy": lambda z: torch.argmax(z.flip(-1), dim=-1, keepdim=True),  # ties to the highest index
    "check_softmax": lambda z: z.exp() / z.exp().sum(),  # normalised over the whole batch, not per row
    "check_temperature": lambda z, tau: F.log_softmax(F.softmax(z, -1) / tau, -1),  # the article's mistake
    "check_top_k": lambda z, k: z.masked_fill(z <= torch.topk(z, min(k, z.size(-1)), -1).values[:, -1:], -math.inf),
    "check_top_p": lambda z, p: sampling.top_p_filter(z, min(1.0, p + 0.05)),
    "check_repetition_penalty": lambda z, ctx, theta: z.scatter(1, ctx, z.gather(1, ctx) / theta),  # CTRL's rule
    "check_beam_step": lambda s, lp, n: sampling.beam_step(torch.zeros_like(s), lp, n),  # forgets the beams' scores
    "check_cached_attention": lambda q, kc, vc, k, v: F.scaled_dot_product_attention(q, kc, vc),  # forgets the new token
    "check_distinct_n": lambda words, n: len(set(words)) / len(words) if words else 0.0,  # always unigrams
    "check_top_n_sigma": lambda z, n: sampling.top_n_sigma_filter(z, n + 0.5),
    "check_residual": lambda p, q: (p - q).clamp(min=0) / (p - q).clamp(min=0).sum(-1, keepdim=True),  # 0/0 at p = q
    "check_allowed": lambda pattern, text, vocabulary: sampling.allowed(pattern, text[:-1], vocabulary),  # reads one character too few
    "check_green_list": lambda previous, V, gamma: sampling.green_list(previous + 1, V, gamma),  # seeded by the wrong token
    "check_z_score": lambda green, total, gamma: (green - gamma * total) / math.sqrt(total * gamma),  # forgets 1 - gamma
    "check_prompt_lookup": lambda ids, n: latest_occurrence(ids, n),  # copies after the latest occurrence, not the first
}


def latest_occurrence(ids, max_ngram):
    """Prompt lookup from the last earlier occurrence of the text's ending instead of the first."""
    N = len(ids)
    for n in range(min(max_ngram, N - 1), 0, -1):
        follows = [i + n for i in range(N - n) if ids[i:i + n].tolist() == ids[N - n:].tolist()]
        if follows:
            return follows[-1]
    return None


REFERENCE = {
    "check_greedy": sampling.greedy, "check_softmax": lambda z: F.softmax(z, -1),
    "check_temperature": sampling.apply_temperature, "check_top_k": sampling.top_k_filter,
    "check_top_p": sampling.top_p_filter, "check_repetition_penalty": sampling.repetition_penalty,
    "check_beam_step": sampling.beam_step, "check_cached_attention": exercises.cached_attention,
    "check_distinct_n": metrics.distinct_n, "check_top_n_sigma": sampling.top_n_sigma_filter,
    "check_residual": speculative.residual, "check_allowed": sampling.allowed,
    "check_green_list": sampling.green_list, "check_z_score": sampling.watermark_z_score,
    "check_prompt_lookup": speculative.prompt_lookup,
}
CHECKERS = sorted(name for name in dir(exercises) if name.startswith("check_"))


def verdict(checker, fn):
    out = io.StringIO()
    with redirect_stdout(out):
        ok = getattr(exercises, checker)(fn)
    return ok, out.getvalue()


def test_every_checker_has_a_reference_and_a_mistake():
    assert set(CHECKERS) == set(WRONG) == set(REFERENCE)


@pytest.mark.parametrize("checker", CHECKERS)
def test_the_repository_s_own_function_passes(checker):
    ok, text = verdict(checker, REFERENCE[checker])
    assert ok and ": pass" in text, text


@pytest.mark.parametrize("checker", CHECKERS)
def test_a_wrong_solution_is_caught_and_shown_on_its_smallest_input(checker):
    ok, text = verdict(checker, WRONG[checker])
    assert not ok and "not yet" in text and "yours" in text and "expected" in text, text


def test_a_solution_that_raises_is_one_line_not_a_traceback():
    def unfinished(logits, k):
        raise NotImplementedError("your code here")

    ok, text = verdict("check_top_k", unfinished)
    assert not ok and text.startswith("top-k: your function raised NotImplementedError") and "Traceback" not in text


# ----------------------------------------------------------------------------- the notebooks' solutions

SOLUTION = re.compile(r"<details>\s*<summary>[^<]*</summary>\s*```python\n(.*?)```", re.DOTALL)


def solutions():
    """(notebook, code) of every Python block folded into a <details> in a notebook's markdown."""
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "notebooks", "**", "*.ipynb"), recursive=True)):
        import nbformat

        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                found += [(os.path.relpath(path, ROOT), code) for code in SOLUTION.findall(cell.source)]
    return found


@pytest.mark.parametrize("notebook, code", solutions(), ids=lambda v: v if v.endswith(".ipynb") else "")
def test_every_folded_solution_passes_its_checker(notebook, code):
    assert "exercises.check_" in code, f"a solution in {notebook} calls no checker:\n{code}"
    out = io.StringIO()
    with redirect_stdout(out):
        exec(code, {"torch": torch, "F": F, "math": math, "exercises": exercises, "sampling": sampling,
                    "metrics": metrics, "speculative": speculative})
    assert ": pass" in out.getvalue() and "not yet" not in out.getvalue(), f"{notebook}:\n{code}\n{out.getvalue()}"
