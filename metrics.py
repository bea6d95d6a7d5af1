"""
How human does a text look? Small measures of quality and diversity, after Holtzman et al. 2019,
"The Curious Case of Neural Text Degeneration" (https://arxiv.org/abs/1904.09751).

Text measures work on words, as words(text) defines them; a text too short for a measure
(no words, fewer words than n, no lines) scores 0.0 rather than raising.
perplexity() asks the model how likely it finds a continuation.
"""
import math
import re

import torch
import torch.nn.functional as F

WORD = re.compile(r"[a-z']*[a-z][a-z']*")


def words(text):
    """The words of text: lower-cased runs of letters a-z and apostrophes holding at least one letter.

    "'Tis the King's; o'er 3 ' -- ROMEO!" -> ["'tis", "the", "king's", "o'er", "romeo"]
    Digits, punctuation, spaces and newlines separate words; a lone apostrophe is not a word."""
    return WORD.findall(text.lower())


def ngrams(words, n):
    """The n-grams of a word list, in order: (w_1..w_n), (w_2..w_n+1), ...; none if len(words) < n."""
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(words, n):
    """distinct-n (Li et al. 2016) = |unique n-grams| / |n-grams|, in (0, 1]; 1 when no n-gram repeats.

    0.0 when there is no n-gram (fewer than n words)."""
    grams = ngrams(words, n)
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition(words, n=4):
    """The share of words that complete an n-gram already seen earlier in the text:

        repetition = |{i : (w_i-n+1 .. w_i) = (w_j-n+1 .. w_j) for some j < i}| / |words|

    "to be or not to be or not to be": the last 3 of its 10 words repeat a 4-gram, 0.3.
    0.0 for an empty text (and for any text of fewer than n words)."""
    seen, repeats = set(), 0
    for gram in ngrams(words, n):
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(words) if words else 0.0


def real_word_share(words, vocabulary):
    """|{i : w_i in vocabulary}| / |words|: how many of the words exist (in the training text).
    0.0 for an empty text."""
    return sum(w in vocabulary for w in words) / len(words) if words else 0.0


def mean_line_length(text):
    """Characters per line, counting the non-empty lines only (blank lines separate speeches):

        sum_lines len(line) / |lines|,   newlines not counted

    0.0 for a text without a non-empty line."""
    lines = [line for line in text.split("\n") if line]
    return sum(map(len, lines)) / len(lines) if lines else 0.0


def _rows(ids, device):
    """ids as a (B, T) long tensor on device; a list or a (T,) tensor is one row."""
    ids = torch.as_tensor(ids, dtype=torch.long, device=device)
    return ids[None] if ids.dim() == 1 else ids


@torch.no_grad()
def negative_log_likelihood(model, prompt_ids, continuation_ids, stride=None):
    """Per row, the summed negative log-likelihood (nats) of the continuation given all that
    precedes it: -sum_{t=P}^{P+L-1} log p(x_t | x_<t). (B, P), (B, L) -> (B,)

    The model sees at most block_size tokens, so long texts are read in sliding windows of
    block_size tokens, `stride` tokens apart, each scoring the tokens the one before left
    (the strided perplexity of Hugging Face's "Perplexity of fixed-length models"): a token
    past the first window is predicted from the last block_size - stride + 1 to block_size
    tokens. stride=1 gives every token all of its last block_size tokens (exact, one forward
    pass per token); the default block_size // 2 costs two passes per block_size tokens.
    A text of up to block_size + 1 tokens is one window and exact with any stride."""
    device = model.lm_head.weight.device
    prompt, continuation = _rows(prompt_ids, device), _rows(continuation_ids, device)
    if prompt.size(1) == 0 or continuation.size(1) == 0:
        raise ValueError("perplexity needs a prompt of at least one token and a non-empty continuation")
    block_size = model.config.block_size
    stride = stride or max(1, block_size // 2)
    ids = torch.cat((prompt, continuation), dim=1)  # (B, N), N = P + L
    N = ids.size(1)
    nll, first = torch.zeros(ids.size(0), dtype=torch.float64), prompt.size(1)  # first: the next token to score
    while first < N:
        end = min(N, max(first + stride, block_size + 1))  # this window scores ids[:, first:end]
        start = max(0, end - 1 - block_size)  # and reads ids[:, start:end - 1], at most block_size tokens
        logits = model(ids[:, start:end - 1])[0][:, first - start - 1:]  # (B, W, V) -> (B, end - first, V)
        targets = ids[:, first:end]  # (B, end - first)
        nll += F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none").sum(dim=1).double().cpu()
        first = end
    return nll


def perplexity(model, prompt_ids, continuation_ids, stride=None):
    """exp of the mean negative log-likelihood of the continuation given all that precedes it:

        PPL = exp( -1/(B L) sum_b sum_{t=P}^{P+L-1} log p(x_bt | x_b,<t) )

    prompt_ids (B, P) and continuation_ids (B, L), or one row as (P,) and (L,); every token
    of every row is pooled. 1 is a certain model, V the uniform guess over V symbols. Long
    texts: see negative_log_likelihood()."""
    nll = negative_log_likelihood(model, prompt_ids, continuation_ids, stride)  # (B,)
    return math.exp(nll.sum().item() / (nll.numel() * _rows(continuation_ids, "cpu").size(1)))
