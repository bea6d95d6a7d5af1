"""--draft prompt_lookup: drafts copied from the text itself. Where it copies from is checked by hand
and against Hugging Face's PromptLookupCandidateGenerator; the text against plain greedy decoding,
Hugging Face's generate(prompt_lookup_num_tokens=k), and the target's exact two-character
distribution (a chi-square test, as for the other drafters)."""
import pytest
import torch
import torch.nn.functional as F
from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

import checkpoint
import sampling
from conftest import hugging_face_models, make_sharp_model
from hf_gpt2 import hf_copy
from sampling import Decoding
from speculative import PromptLookupDrafter, draft, prompt_lookup, speculative_generate, verify
from test_sampling import prompt
from test_speculative import DRAWS, PENALTIES, STOI, chi_square_p_value, cli, rounds_of, shipped  # noqa: F401

V = 65
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one thread


def ids_of(text):
    return torch.tensor(checkpoint.encode(text, STOI))  # (N,)


def test_where_it_copies_from_by_hand():
    assert prompt_lookup(ids_of("abcab")) == 2  # "ab" occurred at 0: copy from the "c" after it
    assert prompt_lookup(ids_of("abxbcab")) == 2  # "ab" first: its first occurrence wins over "b" at 1
    assert prompt_lookup(ids_of("xbcab"), max_ngram=2) == 2  # no earlier "ab": "b" at 1 is followed by "c"
    assert prompt_lookup(ids_of("abab"), max_ngram=1) == 2  # "b" at 1; not the text's own last "b"
    assert prompt_lookup(ids_of("abc")) is None  # no ending of the text occurred before
    assert prompt_lookup(ids_of("a")) is None


def test_the_drafts_are_what_follows_and_q_is_certain_of_each():
    drafter = PromptLookupDrafter(V)
    ids = ids_of("the cat, the c")[None]  # (1, 14): " c" occurred at 3, followed by "at, the c"
    drafter.reset(ids)
    run = sampling.Run(ids, ids.size(1))
    drafted, q = draft(drafter, run, 4, Decoding(temperature=1.0), [])
    assert checkpoint.decode(drafted, {i: c for c, i in STOI.items()}) == "at, "
    assert torch.equal(F.softmax(q, dim=-1), F.one_hot(drafted, V).float())  # (4, V): q(x_i) = 1
    drafted, _ = draft(drafter, run, 20, Decoding(temperature=1.0), [])  # the copy ends where the text does
    assert len(drafted) == len("at, the c")
    drafter.rollback(ids.size(1))
    assert len(draft(drafter, sampling.Run(ids_of("xyz")[None], 3), 4, Decoding(), [])[0]) == 0  # nothing to copy


@pytest.mark.parametrize("seed", range(40))
def test_the_drafts_are_hugging_face_s(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 4 + seed % 5, (1, 3 + seed % 17), generator=g)  # (1, N): few symbols, many repeats
    for k in (1, 3, 10):
        for max_ngram in (1, 2, 3):
            hf = PromptLookupCandidateGenerator(num_output_tokens=k, max_matching_ngram_size=max_ngram, max_length=1000)
            candidates, _ = hf.get_candidates(ids)  # (1, N + drafts)
            drafter = PromptLookupDrafter(V, max_ngram)
            drafter.reset(ids)
            ours, _ = draft(drafter, sampling.Run(ids, ids.size(1)), k, Decoding(temperature=0), [])
            assert torch.equal(ours, candidates[0, ids.size(1):])


@pytest.mark.parametrize("penalties", [{}, PENALTIES], ids=["plain", "penalties"])
def test_greedy_is_plain_greedy_past_block_size(penalties):
    """A repetitive prompt on a model of block_size 16, past restarts of its window: the very text
    of plain greedy decoding, and drafts both stood and fell."""
    target = make_sharp_model(0)
    accepted = drafted = 0
    for k in (1, 3, 7):
        idx = prompt(B=1, T=20, seed=k).repeat(1, 2)  # (1, 40): the prompt twice, something to copy
        decoding = Decoding(temperature=0, **penalties)
        expected = sampling.generate(target, idx, 60, decoding, stoi=STOI)
        ours, rounds = rounds_of(target, PromptLookupDrafter(V), idx, 60, decoding, k)
        assert torch.equal(ours, expected)
        accepted += sum(int(r.verdict.accepted) for r in rounds)
        drafted += sum(len(r.drafted) for r in rounds)
    assert 0 < accepted < drafted


@hugging_face_models
@torch.no_grad()
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_matches_hugging_face_prompt_lookup(seed, monkeypatch):
    """GPT2LMHeadModel.generate(prompt_lookup_num_tokens=k) on the same weights: the same text.
    GPT-2 stops at n_positions = block_size = 16, and Hugging Face's drafts may run past the
    tokens asked for: 6 + 6 tokens and k <= 4 stay within it."""
    target = make_sharp_model(seed)
    hf_target = hf_copy(target)
    drafts, get_candidates = [], PromptLookupCandidateGenerator.get_candidates

    def counted(self, ids, **kwargs):  # Hugging Face's own, counting the drafts it makes
        candidates = get_candidates(self, ids, **kwargs)
        drafts.append(candidates[0].size(1) - ids.size(1))
        return candidates
    monkeypatch.setattr(PromptLookupCandidateGenerator, "get_candidates", counted)
    idx = prompt(B=1, T=3, seed=30 + seed).repeat(1, 2)  # (1, 6)
    for k in (1, 2, 4):
        out = hf_target.generate(idx, attention_mask=torch.ones_like(idx), prompt_lookup_num_tokens=k,
                                 do_sample=False, max_new_tokens=6, eos_token_id=None, pad_token_id=0)
        assert torch.equal(speculative_generate(target, PromptLookupDrafter(V), idx, 6, Decoding(temperature=0), k),
                           out)
    assert sum(drafts) > 0  # Hugging Face drafted by prompt lookup


@torch.no_grad()
def test_the_first_two_characters_have_the_target_distribution(shipped):
    """As test_speculative's test of the same name: DRAWS texts of two characters, the first
    drafted by copying (after "\\nthe king, the k" the drafter copies "i"), kept or resampled by
    verify(), the second from a round with nothing to draft; their counts against p(c1) p(c2 | c1)."""
    target, _ = shipped
    decoding = Decoding(temperature=1.3)
    idx = torch.tensor([checkpoint.encode("\nThe king, the k", STOI)])  # (1, 16)
    T = idx.size(1)
    z1 = target(idx)[0][:, -1] / 1.3  # (1, V): the first character's logits
    both = torch.cat((idx.repeat(V, 1), torch.arange(V)[:, None]), dim=1)  # (V, T + 1): after every first character
    z2 = target(both)[0][:, -1] / 1.3  # (V, V): the second's
    expected = (F.softmax(z1, dim=-1)[0, :, None] * F.softmax(z2, dim=-1)).flatten().double() * DRAWS  # (V * V,)

    drafter = PromptLookupDrafter(V)
    drafter.reset(idx)
    drafted, q_logits = draft(drafter, sampling.Run(idx, T), 1, decoding, decoding.stages(STOI))  # (1,), (1, V)
    assert drafted.tolist() == [STOI["i"]]
    generator = torch.Generator().manual_seed(0)
    drafted, q_logits = drafted.expand(DRAWS, 1), q_logits.expand(DRAWS, 1, V)  # (N, 1), (N, 1, V): the same each time
    p_logits = torch.stack((z1.expand(DRAWS, -1), z2[drafted[:, 0]]), dim=1)  # (N, 2, V)
    first = verify(p_logits, q_logits, drafted, decoding, generator)
    c1 = torch.where(first.accepted == 1, drafted[:, 0], first.token)  # (N,)
    nothing = torch.zeros(DRAWS, 0, dtype=torch.long)  # (N, 0)
    second = verify(z2[c1][:, None], torch.zeros(DRAWS, 0, V), nothing, decoding, generator)
    c2 = torch.where(first.accepted == 1, first.token, second.token)  # (N,)
    observed = torch.bincount(c1 * V + c2, minlength=V * V).double()  # (V * V,)
    assert 0.1 < first.accepted.float().mean() < 0.9  # drafts stood and fell many times: both branches of the rule
    assert chi_square_p_value(observed, expected) > 1e-3


def test_the_command_line_prints_plain_greedy_text(capsys):
    args = ("--max_new_tokens", "120", "--temperature", "0", "--seed", "1")
    status, plain, _ = cli(capsys, *args)
    status_lookup, text, err = cli(capsys, *args, "--draft", "prompt_lookup")
    assert status == status_lookup == 0 and text == plain
    assert "speculative decoding:" in err and "drafted characters accepted" in err
