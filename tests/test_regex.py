"""Constrained decoding (--regex): the mask, where a text ends, every sampler, batches, speculative
decoding, the command line, and why a mask is not the model conditioned on the pattern."""
import math
import os
import re

import pytest
import torch
import torch.nn.functional as F

import checkpoint
import sample
import sampling
from conftest import CHARS, META, ROOT, make_sharp_model, make_tiny_model
from sampling import Decoding, allowed, masked_vs_conditioned, matched, regex_filter
from speculative import ModelDrafter, NgramDrafter, speculative_stream, verify
from test_sample_cli import failure
from test_speculative import noisy_copy

STOI = META["stoi"]
CODE = r"[a-z]{3}-[a-z]{4}"  # (Tiny Shakespeare has one digit, 3: a telephone number would be 333-3333)
CODE_PREFIX = re.compile(r"[a-z]{0,3}|[a-z]{3}-[a-z]{0,4}")  # its prefixes, written out by hand for the standard re

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one thread


def mask_of(chars):
    """The (V,) bool mask of the 65-character vocabulary that keeps exactly `chars`."""
    return torch.tensor([c in chars for c in CHARS])


def texts_of(steps, rows):
    """Each row's text after every step: [[text after step 1, ...], ...]."""
    out = [[] for _ in range(rows)]
    for step in steps:
        for row in range(rows):
            if step.ids[row, 0] >= 0:
                out[row].append((out[row][-1] if out[row] else "") + CHARS[step.ids[row, 0]])
    return out


# ----------------------------------------------------------------------------- the mask, by hand

@pytest.mark.parametrize("pattern, text, chars", [
    ("ab|cd", "", "ac"),
    ("ab|cd", "a", "b"),
    ("ab|cd", "ab", ""),
    (CODE, "ab", "abcdefghijklmnopqrstuvwxyz"),
    (CODE, "abc", "-"),
    (CODE, "abc-defg", ""),
    ("(?i)romeo", "Ro", "mM"),
    ("[A-Z]+", "AB", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    ("é+", "", ""),  # no character of the vocabulary begins it
    ("x{0}", "", ""),  # only the empty text matches
])
def test_allowed_characters_by_hand(pattern, text, chars):
    assert torch.equal(allowed(pattern, text, CHARS), mask_of(chars))


def test_allowed_on_the_toy_vocabulary():
    assert allowed("小冬|瓜.", "", "小冬瓜").tolist() == [True, False, True]
    assert allowed("小冬|瓜.", "小", "小冬瓜").tolist() == [False, True, False]
    assert allowed("小冬|瓜.", "瓜", "小冬瓜").tolist() == [True, True, True]


@pytest.mark.parametrize("pattern, text, ends", [
    ("ab|cd", "ab", True), ("ab|cd", "a", False), (CODE, "abc-defg", True), (CODE, "abc-def", False),
    ("[A-Z]+", "AB", False),  # a full match that another letter extends
    ("ab|abc", "ab", False), ("ab|abc", "abc", True),
])
def test_a_text_ends_when_it_matches_and_nothing_can_extend_it(pattern, text, ends):
    assert matched(pattern, text, CHARS) is ends


def test_regex_filter_sets_minus_inf_row_by_row_and_leaves_its_input():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]]))  # (2, 3): the toy distribution twice
    before = logits.clone()
    out = regex_filter(logits, "小冬|瓜.", ["", "小"], "小冬瓜")
    assert torch.equal(logits, before)
    assert torch.equal(torch.isinf(out), torch.tensor([[False, True, False], [True, False, True]]))
    # renormalised: 0.7 / (0.7 + 0.1) and 0.1 / 0.8; then 冬 alone
    assert torch.allclose(F.softmax(out, dim=-1), torch.tensor([[0.875, 0.0, 0.125], [0.0, 1.0, 0.0]]))


# ----------------------------------------------------------------------------- the lesson: a mask is not conditioning

def test_a_mask_is_not_the_model_conditioned_on_the_pattern():
    """The toy model of the article, 小 0.7, 冬 0.2, 瓜 0.1 at every step, and the pattern 小冬|瓜.
    The mask first renormalises over {小, 瓜}: 小 0.7 / 0.8 = 0.875, and 冬 is then the only way on.
    The model gives 小冬 0.7 · 0.2 = 0.14, 瓜x 0.1 · p(x), in all 0.14 + 0.1 = 0.24 to condition on."""
    result = masked_vs_conditioned("小冬|瓜.", "小冬瓜", lambda context: [0.7, 0.2, 0.1], 3)
    by_hand = {"小冬": (0.875, 0.14 / 0.24), "瓜小": (0.125 * 0.7, 0.07 / 0.24),
               "瓜冬": (0.125 * 0.2, 0.02 / 0.24), "瓜瓜": (0.125 * 0.1, 0.01 / 0.24)}
    assert result.keys() == by_hand.keys()
    for text, (masked, conditioned) in by_hand.items():
        assert result[text] == pytest.approx((masked, conditioned), abs=1e-12)
    assert sum(m for m, _ in result.values()) == pytest.approx(1) and result["小冬"][0] > result["小冬"][1] + 0.29


# ----------------------------------------------------------------------------- the stage and the loop

@pytest.mark.parametrize("settings", [
    dict(), dict(temperature=0), dict(top_k=3, temperature=0.7), dict(top_p=0.5), dict(min_p=0.3),
    dict(typical_p=0.5), dict(top_n_sigma=0.5), dict(xtc_probability=1.0, xtc_threshold=0.05), dict(mirostat=2),
    dict(repetition_penalty=1.5, no_repeat_ngram_size=2, dry_multiplier=0.8), dict(order="llama.cpp", top_k=2),
    dict(order="llama.cpp", temperature=0, min_p=0.5), dict(logit_bias=(("-", -100.0), ("z", 100.0))),
], ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "sampling")
def test_every_sampler_keeps_each_row_a_prefix_and_ends_it_at_the_full_match(settings):
    """Three rows with their own generators: after every step each text is a prefix of a match
    (checked by hand with the standard re), and each row finishes at the step of its 8th character,
    a complete match, like a stop string: no -1 is drawn for it and the loop stops there."""
    decoding = Decoding(regex=CODE, **settings)
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    steps = list(sampling.stream(make_sharp_model(0), torch.zeros(3, 2, dtype=torch.long), 20, decoding,
                                 generators, stoi=STOI))
    assert len(steps) == 8 and steps[-1].finished.all() and not steps[-2].finished.any()
    assert all((step.ids >= 0).all() for step in steps)
    for row in texts_of(steps, 3):
        assert all(CODE_PREFIX.fullmatch(text) for text in row) and re.fullmatch(CODE, row[-1]), row


def test_the_mask_comes_first_in_both_orders():
    settings = dict(regex="a+", logit_bias=(("a", 1.0),), repetition_penalty=1.2, top_k=3, temperature=0.7)
    for order in sampling.ORDERS:
        names = [stage.name for stage in Decoding(order=order, **settings).stages(STOI)]
        assert names[:2] == ["regex a+", "logit bias a:+1"], names
    assert Decoding(regex="a+", temperature=0).stages(STOI)[0].name == "regex a+"
    assert Decoding(regex="a+", mirostat=2).stages(STOI)[0].name == "regex a+"
    assert Decoding(regex="a\nb").stages(STOI)[0].name == "regex a\\nb"  # one line in the walkthrough


def test_a_truncation_before_the_mask_could_leave_nothing_to_draw():
    """Why the mask comes first: after '小' the pattern 小冬|瓜. allows 冬 alone. Top-1 applied
    first keeps the argmax 小, which the mask then removes: nothing is left. The mask first keeps
    冬, and top-1 keeps it."""
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))  # (1, 3)
    truncated_then_masked = regex_filter(sampling.top_k_filter(logits, 1), "小冬|瓜.", ["小"], "小冬瓜")
    masked_then_truncated = sampling.top_k_filter(regex_filter(logits, "小冬|瓜.", ["小"], "小冬瓜"), 1)
    assert torch.isinf(truncated_then_masked).all()
    assert torch.isfinite(masked_then_truncated).tolist() == [[False, True, False]]


def test_a_batch_row_is_what_the_row_decodes_alone():
    decoding = Decoding(regex=r"(ab|[a-z]c)[a-z ]{0,12}\.", top_k=10)
    model, idx = make_sharp_model(2), torch.tensor([[1, 2], [3, 4], [5, 6]])
    batch = texts_of(sampling.stream(model, idx, 20, decoding, [torch.Generator().manual_seed(i) for i in range(3)],
                                     stoi=STOI), 3)
    for row in range(3):
        alone = texts_of(sampling.stream(model, idx[row:row + 1], 20, decoding,
                                         [torch.Generator().manual_seed(row)], stoi=STOI), 1)[0]
        assert alone == batch[row]


def test_a_pattern_that_always_goes_on_runs_to_max_new_tokens():
    steps = list(sampling.stream(make_tiny_model(), torch.zeros(2, 1, dtype=torch.long), 15, Decoding(regex="[a-z]+"),
                                 [torch.Generator().manual_seed(i) for i in range(2)], stoi=STOI))
    assert len(steps) == 15 and not steps[-1].finished.any()
    assert all(re.fullmatch("[a-z]+", row[-1]) for row in texts_of(steps, 2))


def test_without_a_pattern_no_mask_is_computed(monkeypatch):
    def refuse(*args):
        raise AssertionError("a mask was computed")

    monkeypatch.setattr(sampling, "can_follow", refuse)
    monkeypatch.setattr(sampling, "generated_texts", refuse)
    assert len(list(sampling.stream(make_tiny_model(), torch.zeros(1, 1, dtype=torch.long), 5, stoi=STOI))) == 5
    with pytest.raises(AssertionError, match="a mask was computed"):
        list(sampling.stream(make_tiny_model(), torch.zeros(1, 1, dtype=torch.long), 5, Decoding(regex="a"), stoi=STOI))


def test_the_stage_needs_the_vocabulary_and_generate_refuses_patterns():
    with pytest.raises(ValueError, match="pass the vocabulary"):
        Decoding(regex="a+").stages()
    with pytest.raises(ValueError, match="for stop strings and patterns iterate stream"):
        sampling.generate(make_tiny_model(), torch.zeros(1, 1, dtype=torch.long), 5, regex="a+", stoi=STOI)


@pytest.mark.parametrize("pattern", ["[a-", "(", "a{2,1}", ""])
def test_an_invalid_pattern_is_a_value_error_naming_the_setting(pattern):
    with pytest.raises(ValueError, match="regex must be a valid, non-empty regular expression"):
        Decoding(regex=pattern)


# ----------------------------------------------------------------------------- speculative decoding

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


def drafter_for(kind, target, continuation):
    """The target with a little noise on every weight, or an n-gram table of a few lines and of
    the target's own continuation: drafters that agree with it often, not always."""
    if kind == "ngram":
        return NgramDrafter(TEXT + continuation, STOI, order=4, min_count=1)
    return ModelDrafter(noisy_copy(target, std=0.1))


@pytest.mark.parametrize("kind", ["model", "ngram"])
@pytest.mark.parametrize("pattern, prefix", [  # a pattern, and its prefixes written out by hand
    (CODE, CODE_PREFIX.pattern), (r"[a-z]{30}", r"[a-z]{0,30}"),
    (r"[A-Z][a-z ]{4,8}\.", r"|[A-Z][a-z ]{0,8}|[A-Z][a-z ]{4,8}\."),
])
def test_speculative_greedy_is_plain_constrained_greedy(kind, pattern, prefix):
    """A 20-token prompt on a model of block_size 16, so the windows restart inside rounds: the
    tokens are plain constrained greedy decoding's, each draft keeps the text a prefix of a match,
    and the text ends in the round where plain decoding's row finishes."""
    target, idx = make_sharp_model(0), torch.randint(0, 65, (1, 20), generator=torch.Generator().manual_seed(3))
    decoding = Decoding(temperature=0, regex=pattern)
    plain = list(sampling.stream(target, idx, 40, decoding, stoi=STOI))
    drafter = drafter_for(kind, target, "".join(CHARS[step.ids[0, 0]] for step in plain))
    rounds = list(speculative_stream(target, drafter, idx, 40, decoding, 4, stoi=STOI))
    assert torch.cat([r.tokens for r in rounds]).tolist() == [step.ids[0, 0].item() for step in plain]
    assert rounds[-1].finished == bool(plain[-1].finished[0])
    text = ""
    for r in rounds:
        drafted = "".join(CHARS[x] for x in r.drafted.tolist())
        assert all(re.fullmatch(prefix, text + drafted[:i]) for i in range(1, len(drafted) + 1)), (text, drafted)
        text += "".join(CHARS[x] for x in r.tokens.tolist())
    accepted, drafted = sum(int(r.verdict.accepted) for r in rounds), sum(len(r.drafted) for r in rounds)
    assert 0 < accepted and (accepted < drafted or kind == "ngram")  # drafts stood; the noisy model's fell too


def test_speculative_ends_in_the_round_whose_last_token_completes_the_match():
    """A drafter equal to the target: 4 drafts stand and the target's own token is the 5th character
    of a 5-character pattern; the text ends in that round, not in an empty one after it."""
    target = make_sharp_model(1)
    idx = torch.zeros(1, 3, dtype=torch.long)
    rounds = list(speculative_stream(target, ModelDrafter(target), idx, 20, Decoding(temperature=0, regex="[a-z]{5}"),
                                     4, stoi=STOI))
    assert len(rounds) == 1 and len(rounds[0].tokens) == 5 and rounds[0].finished


def test_a_draft_that_breaks_the_pattern_is_rejected():
    """p masked by the pattern gives a forbidden draft p(x) = 0: min(1, p/q) = 0 rejects it for any u,
    and the token comes from the residual, which the mask keeps inside the pattern."""
    logits = regex_filter(torch.zeros(2, 65), CODE, ["ab", "abc"], CHARS)[None]  # (1, 2, V): p_1, p_2
    q = torch.full((1, 1, 65), -math.inf).index_fill(2, torch.tensor([STOI["X"]]), 0.0)  # (1, 1, V): X surely
    verdict = verify(logits, q, torch.tensor([[STOI["X"]]]), Decoding(), torch.Generator().manual_seed(0))
    assert verdict.accepted.item() == 0 and CHARS[verdict.token.item()] in "abcdefghijklmnopqrstuvwxyz"


# ----------------------------------------------------------------------------- the command line

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("regex") / "tiny.pt"
    checkpoint.save(str(path), make_sharp_model(0), META)
    return str(path)


@pytest.mark.parametrize("pattern, message", [
    ("[a-", "--regex must be a valid, non-empty regular expression, got '[a-'"),
    ("", "--regex must be a valid, non-empty regular expression, got ''"),
    ("é+", "--regex 'é+': no character of the vocabulary can begin a match"),
    ("x{0}", "--regex 'x{0}': no character of the vocabulary can begin a match"),
])
def test_a_pattern_that_cannot_be_used_exits_2_with_one_line(ckpt, capsys, pattern, message):
    status, line = failure(capsys, "--ckpt", ckpt, "--regex", pattern)
    assert status == 2 and message in line, line


def test_samples_end_at_the_match_without_a_note(ckpt, capsys):
    assert sample.main(["--ckpt", ckpt, "--regex", CODE, "--num_samples", "2", "--max_new_tokens", "50"]) == 0
    out, err = capsys.readouterr()
    samples = out.rstrip("\n").split("\n---------------\n")
    assert len(samples) == 2 and all(re.fullmatch("\n" + CODE, s) for s in samples), samples
    assert err == ""


def test_the_walkthrough_shows_the_mask_as_a_stage(ckpt, capsys):
    assert sample.main(["--ckpt", ckpt, "--walkthrough", "--regex", "[A-Z]+", "--steps", "2",
                        "--max_new_tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert out.count("after regex [A-Z]+:") == 2 and "(26 of 65 characters can be drawn)" in out
    assert re.search(r"\nAnd Nero [A-Z]{6}\n$", out), out


def test_shipped_model_with_the_draft_model_writes_plain_constrained_greedy(capsys):
    flags = ["--start", "\\n", "--temperature", "0", "--regex", r"[A-Z][a-z]+ [a-z]+ [a-z]+\.", "--max_new_tokens", "40"]
    assert sample.main(flags) == 0
    plain = capsys.readouterr().out
    assert sample.main(flags + ["--draft", os.path.join(ROOT, "checkpoints", "draft.pt"), "--walkthrough",
                                "--steps", "40"]) == 0
    out, err = capsys.readouterr()
    assert re.fullmatch(r"\n[A-Z][a-z]+ [a-z]+ [a-z]+\.\n", plain), plain
    assert out.endswith("\nthe text:\n" + plain)  # fewer rounds than --steps: the text is printed at the end
    assert "the text ends here: it matches --regex in full and no character can extend it" in out
    assert "note:" not in err
