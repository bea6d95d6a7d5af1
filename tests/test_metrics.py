"""metrics.py: every measure on hand-made texts, with the arithmetic written out."""
import math

import pytest
import torch
import torch.nn.functional as F

import metrics


# ----------------------------------------------------------------------------- words

def test_words_are_lower_cased_runs_of_letters_and_apostrophes():
    assert metrics.words("O Romeo, Romeo! wherefore art thou Romeo?") == \
        ["o", "romeo", "romeo", "wherefore", "art", "thou", "romeo"]
    assert metrics.words("'Tis the King's; o'er 3 ' -- ROMEO!") == ["'tis", "the", "king's", "o'er", "romeo"]
    assert metrics.words("KING:\nGood-morrow.\n\nQUEEN:") == ["king", "good", "morrow", "queen"]


def test_words_of_a_text_without_letters():
    assert metrics.words("") == []
    assert metrics.words(" \n3 ' ;--!") == []


# ----------------------------------------------------------------------------- distinct-n

def test_distinct_n():
    w = ["a", "b", "a", "b"]
    assert metrics.distinct_n(w, 1) == 0.5  # {a, b} / [a, b, a, b] = 2/4
    assert metrics.distinct_n(w, 2) == pytest.approx(2 / 3)  # {ab, ba} / [ab, ba, ab] = 2/3
    assert metrics.distinct_n(w, 3) == 1.0  # {aba, bab} / [aba, bab] = 2/2
    assert metrics.distinct_n(w, 4) == 1.0  # one 4-gram, unique: 1/1


def test_distinct_n_without_ngrams_is_zero():
    assert metrics.distinct_n([], 1) == 0.0
    assert metrics.distinct_n(["a", "b", "a", "b"], 5) == 0.0  # 4 words hold no 5-gram


# ----------------------------------------------------------------------------- repetition

def test_repetition_of_a_loop():
    w = "to be or not to be or not to be".split()
    # 4-grams ending at words 4..10: "to be or not", "be or not to", "or not to be", "not to be or" are new;
    # words 8, 9, 10 complete "to be or not", "be or not to", "or not to be" again: 3 of 10 words
    assert metrics.repetition(w) == pytest.approx(0.3)


def test_repetition_with_other_n():
    assert metrics.repetition(["a", "b", "a"], n=1) == pytest.approx(1 / 3)  # the second "a": 1 of 3 words
    assert metrics.repetition(["a", "a", "a", "a"], n=2) == 0.5  # (a a) at words 2, 3, 4: the last two repeat: 2/4


def test_repetition_of_texts_without_repeats_or_too_short():
    assert metrics.repetition("now is the winter of our discontent".split()) == 0.0
    assert metrics.repetition(["a", "a", "a"]) == 0.0  # fewer than 4 words: no 4-gram at all
    assert metrics.repetition([]) == 0.0


# ----------------------------------------------------------------------------- real words and lines

def test_real_word_share():
    assert metrics.real_word_share(["thou", "art", "xyzzy", "thou"], {"thou", "art"}) == 0.75  # 3 of 4
    assert metrics.real_word_share(["xyzzy"], {"thou"}) == 0.0
    assert metrics.real_word_share([], {"thou"}) == 0.0


def test_mean_line_length():
    # "ROMEO:" 6, "O, she doth teach" 17, "the torches" 11; the blank line does not count: 34 / 3
    assert metrics.mean_line_length("ROMEO:\nO, she doth teach\n\nthe torches") == pytest.approx(34 / 3)
    assert metrics.mean_line_length("\nabc\n") == 3.0  # one non-empty line of 3 characters
    assert metrics.mean_line_length("") == 0.0
    assert metrics.mean_line_length("\n\n\n") == 0.0


# ----------------------------------------------------------------------------- perplexity

def perplexity_by_hand(model, prompt, continuation):
    """exp of the cross-entropy, one token at a time, each read from its last block_size tokens."""
    ids = list(prompt) + list(continuation)
    nll = 0.0
    for t in range(len(prompt), len(ids)):
        context = torch.tensor([ids[max(0, t - model.config.block_size):t]])  # (1, <= block_size)
        with torch.no_grad():
            logits = model(context)[0][0, -1]  # (V,)
        nll -= F.log_softmax(logits.double(), dim=-1)[ids[t]].item()
    return math.exp(nll / len(continuation))


def random_ids(length, seed):
    return torch.randint(0, 65, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_perplexity_of_a_text_within_one_window(tiny_model):
    prompt, continuation = random_ids(5, 1), random_ids(12, 2)  # 17 tokens: one window of block_size 16 + 1
    expected = perplexity_by_hand(tiny_model, prompt, continuation)
    assert metrics.perplexity(tiny_model, prompt, continuation) == pytest.approx(expected, rel=1e-5)


def test_perplexity_with_stride_1_is_exact_past_the_block_size(tiny_model):
    prompt, continuation = random_ids(5, 3), random_ids(40, 4)  # 45 tokens, block_size 16
    expected = perplexity_by_hand(tiny_model, prompt, continuation)
    assert metrics.perplexity(tiny_model, prompt, continuation, stride=1) == pytest.approx(expected, rel=1e-5)


def test_perplexity_with_the_default_stride_reads_long_texts(tiny_model):
    prompt, continuation = random_ids(20, 5), random_ids(40, 6)  # a prompt longer than block_size too
    exact = perplexity_by_hand(tiny_model, prompt, continuation)
    # each token sees 9 to 16 tokens instead of 16: a random model barely notices
    assert metrics.perplexity(tiny_model, prompt, continuation) == pytest.approx(exact, rel=0.02)


def test_perplexity_pools_the_rows_of_a_batch(tiny_model):
    prompts = torch.tensor([random_ids(6, 7), random_ids(6, 8)])  # (2, 6)
    continuations = torch.tensor([random_ids(30, 9), random_ids(30, 10)])  # (2, 30)
    one, two = (metrics.perplexity(tiny_model, p, c) for p, c in zip(prompts, continuations))
    # equal lengths: the pooled mean NLL is the mean of the rows', so PPL = sqrt(PPL_1 * PPL_2)
    assert metrics.perplexity(tiny_model, prompts, continuations) == pytest.approx(math.sqrt(one * two), rel=1e-5)


@pytest.mark.parametrize("stride", [None, 1, 5])
def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(tiny_model, stride):
    with torch.no_grad():
        tiny_model.lm_head.weight.zero_()  # logits 0 everywhere: p = 1/65 for every token
    assert metrics.perplexity(tiny_model, random_ids(3, 11), random_ids(50, 12), stride) == pytest.approx(65, rel=1e-6)


def test_perplexity_needs_a_prompt_and_a_continuation(tiny_model):
    with pytest.raises(ValueError, match="at least one token"):
        metrics.perplexity(tiny_model, [], [1, 2, 3])
    with pytest.raises(ValueError, match="non-empty continuation"):
        metrics.perplexity(tiny_model, [1, 2, 3], [])
