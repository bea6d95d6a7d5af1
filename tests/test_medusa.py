"""Medusa heads (medusa.py, train_medusa.py) and --draft medusa: the targets, the loss and the
accuracy by hand; the heads read the hidden state that predicted the target's token; the text is
plain greedy decoding's, token for token, and the first two characters have the target's exact
distribution (a chi-square test); bad files and flags get one line."""
import os

import pytest
import torch
import torch.nn.functional as F

import checkpoint
import medusa
import sampling
import train_medusa
from conftest import META, make_sharp_model
from sampling import Decoding, window_start
from speculative import (MedusaDrafter, WindowedModel, choose_among, speculative_stream, tree_paths, tree_sees,
                         verify)
from test_sample_cli import ckpt, failure  # noqa: F401 (ckpt: a fixture, a tiny random model as a checkpoint)
from test_sampling import prompt
from test_speculative import DRAWS, PENALTIES, STOI, chi_square_p_value, cli, rounds_of, shipped  # noqa: F401

V = 65
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one thread


def noisy_heads(model, num_heads=3, std=0.3, seed=0):
    """Heads for the model with random residual blocks: guesses that are sometimes right."""
    heads = medusa.for_model(model, num_heads)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in heads.blocks:
            block.weight.copy_(torch.randn(block.weight.shape, generator=g) * std)
    return heads.eval()


# ----------------------------------------------------------------------------- the heads, by hand

def test_targets_are_the_tokens_two_and_more_places_ahead():
    ids = torch.arange(10)[None]  # (1, 10): K = 2 heads, T = 10 - 2 - 1 = 7 positions
    target = medusa.targets(ids, 2)  # (1, 7, 2)
    assert target[0, :, 0].tolist() == [2, 3, 4, 5, 6, 7, 8]  # head 1 at t: the token at t + 2
    assert target[0, :, 1].tolist() == [3, 4, 5, 6, 7, 8, 9]  # head 2 at t: t + 3


def test_the_loss_weighs_head_i_by_0_8_to_the_i():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(2, 3, 2, V, generator=g), torch.randint(0, V, (2, 3, 2), generator=g)
    by_hand = sum(0.8 ** (i + 1) * -torch.log_softmax(logits[:, :, i], -1).gather(-1, target[:, :, i, None]).mean()
                  for i in range(2))
    assert medusa.loss(logits, target).item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_accuracy_by_hand():
    logits = torch.tensor([[[0.0, 3, 2, 1]], [[5, 0, 0, 1]]])  # (2 positions, 1 head, 4 tokens)
    assert medusa.accuracy(logits, torch.tensor([[1], [3]]), 1).tolist() == [0.5]  # top-1: 1 yes, then 0 != 3
    assert medusa.accuracy(logits, torch.tensor([[1], [3]]), 2).tolist() == [1.0]  # top-2 of row 2: 0 and 3


def test_new_heads_begin_as_the_model_s_own_next_token_guess():
    model = make_sharp_model(0)
    ids = prompt(B=2, T=9)
    logits, _, hidden = model(ids, hidden=True)
    heads = medusa.for_model(model, 3)(hidden)  # (B, T, 3, V)
    for i in range(3):
        assert torch.allclose(heads[:, :, i], logits, atol=1e-6)


# ----------------------------------------------------------------------------- drafting

@pytest.mark.parametrize("width", [1, 2, 3])
def test_the_heads_read_the_hidden_state_that_predicted_the_target_s_token(width):
    """After each round of ids[:L] and the target's token at L, the drafter's guesses are the heads
    on the last hidden state of a plain forward pass over the window of index L, past restarts,
    after chains and after trees."""
    target = make_sharp_model(1)
    heads = noisy_heads(target)
    drafter, idx = MedusaDrafter(heads, width), prompt(B=1, T=20, seed=3)
    text = idx
    for r in speculative_stream(target, drafter, idx, 60, Decoding(temperature=0), 3):
        text = torch.cat((text, r.tokens[None]), dim=1)  # (1, L + 1)
        L = text.size(1) - 1
        start = window_start(L, idx.size(1), target.config.block_size)
        h = target(text[:, start:L], hidden=True)[2][0, -1]  # (C,)
        assert torch.allclose(drafter.guesses, heads(h), atol=1e-5)


@pytest.mark.parametrize("penalties", [{}, PENALTIES], ids=["plain", "penalties"])
def test_greedy_is_plain_greedy_past_block_size(penalties):
    target = make_sharp_model(0)
    accepted = drafted = 0
    for k in (1, 2, 3):
        idx = prompt(B=1, T=20, seed=k)
        decoding = Decoding(temperature=0, **penalties)
        ours, rounds = rounds_of(target, MedusaDrafter(noisy_heads(target, seed=k)), idx, 60, decoding, k)
        assert torch.equal(ours, sampling.generate(target, idx, 60, decoding, stoi=STOI))
        assert len(rounds[0].drafted) == 0  # the first round has no hidden state to read
        accepted += sum(int(r.verdict.accepted) for r in rounds)
        drafted += sum(len(r.drafted) for r in rounds)
    assert 0 < accepted < drafted


@torch.no_grad()
def test_the_first_two_characters_have_the_target_distribution(shipped):
    """The first round drafts nothing: c1 ~ p(. | prompt). The second drafts c2 ~ q = softmax(head
    1 on h), h the hidden state that predicted c1 (the same for every c1), and verify() keeps it or
    resamples it against p(. | prompt, c1). The counts against p(c1) p(c2 | c1), from the target alone."""
    target, _ = shipped
    heads = medusa.load(medusa.DEFAULT_HEADS, target)
    idx = torch.tensor([checkpoint.encode("\nAnd Nero ", STOI)])  # (1, 10)
    logits, _, hidden = target(idx, hidden=True)
    z1 = logits[:, -1]  # (1, V)
    both = torch.cat((idx.repeat(V, 1), torch.arange(V)[:, None]), dim=1)  # (V, 11): after every first character
    z2 = target(both)[0][:, -1]  # (V, V)
    expected = (F.softmax(z1, dim=-1)[0, :, None] * F.softmax(z2, dim=-1)).flatten().double() * DRAWS  # (V * V,)

    generator = torch.Generator().manual_seed(0)
    c1 = sampling.categorical(F.softmax(z1, dim=-1).expand(DRAWS, V), generator)[:, 0]  # (N,)
    q_logits = heads(hidden[0, -1])[0].expand(DRAWS, 1, V)  # (N, 1, V): head 1, two places after the prompt
    drafted = sampling.categorical(F.softmax(q_logits[:, 0], dim=-1), generator)  # (N, 1)
    p_logits = z2[c1][:, None].expand(DRAWS, 2, V)  # (N, 2, V): p at the draft, and a row after it (unused here)
    second = verify(p_logits, q_logits, drafted, Decoding(), generator)
    c2 = torch.where(second.accepted == 1, drafted[:, 0], second.token)  # (N,)
    observed = torch.bincount(c1 * V + c2, minlength=V * V).double()  # (V * V,)
    assert 0.05 < second.accepted.float().mean() < 0.95  # drafts stood and fell many times
    assert chi_square_p_value(observed, expected) > 1e-3


# ----------------------------------------------------------------------------- trees

def test_tree_paths_and_who_sees_whom_by_hand():
    paths = tree_paths(2, 2)
    assert paths == [(0,), (1,), (0, 0), (0, 1), (1, 0), (1, 1)]
    sees = tree_sees(paths)  # (6, 6)
    assert sees[4].tolist() == [False, True, False, False, True, False]  # (1, 0): its parent (1,) and itself
    assert sees[0].tolist() == [True, False, False, False, False, False]
    assert len(tree_paths(3, 4)) == 3 + 9 + 27 + 81


def test_each_candidate_of_a_tree_reads_its_own_path():
    """One pass over a tree under its attention mask gives each node the logits (and hidden state)
    of a plain forward pass over the text and its path."""
    target = make_sharp_model(2)
    ids = prompt(B=1, T=6, seed=4)  # (1, 6)
    paths = tree_paths(2, 3)  # 14 candidates
    tokens = torch.randint(0, V, (len(paths),), generator=torch.Generator().manual_seed(0))
    reader = WindowedModel(target, 6, room=len(paths))
    reader.logits(ids[:, :4], 4)  # a cache that holds part of the text: the pass reads the rest first
    logits, hidden = reader.tree_logits(ids, tokens, torch.tensor([len(p) for p in paths]), tree_sees(paths))
    for row, path in enumerate([()] + paths):
        nodes = [paths.index(path[:d]) for d in range(1, len(path) + 1)]
        plain_logits, _, plain_hidden = target(torch.cat((ids, tokens[nodes][None]), dim=1), hidden=True)
        assert torch.allclose(logits[row], plain_logits[0, -1], atol=1e-5)
        assert torch.allclose(hidden[row], plain_hidden[0, -1], atol=1e-5)


@pytest.mark.parametrize("penalties", [{}, PENALTIES], ids=["plain", "penalties"])
def test_greedy_with_trees_is_plain_greedy_past_block_size(penalties):
    target = make_sharp_model(0)
    accepted = 0
    for width, k in [(2, 2), (2, 3), (3, 3)]:
        idx = prompt(B=1, T=20, seed=k)
        decoding = Decoding(temperature=0, **penalties)
        ours, rounds = rounds_of(target, MedusaDrafter(noisy_heads(target, seed=k), width), idx, 60, decoding, k)
        assert torch.equal(ours, sampling.generate(target, idx, 60, decoding, stoi=STOI))
        assert any(len(r.drafted) == len(tree_paths(width, k)) for r in rounds)  # trees were checked
        accepted += sum(int(r.verdict.accepted) for r in rounds)
    assert accepted > 0


def test_choose_among_keeps_the_distribution_p():
    """20,000 choices among candidates 1 and 0 of p = (0.5, 0.3, 0.15, 0.05): the tokens follow p."""
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    g = torch.Generator().manual_seed(0)
    chosen = [choose_among(p, torch.tensor([1, 0]), g) for _ in range(DRAWS)]
    tokens = torch.tensor([token for _, token in chosen])
    assert chi_square_p_value(torch.bincount(tokens, minlength=4).double(), p.double() * DRAWS) > 1e-3
    assert {j for j, token in chosen if token == 1} == {0} and {j for j, token in chosen if token == 0} == {1}
    assert {j for j, token in chosen if token >= 2} == {-1}  # not a candidate: drawn after both fell
    assert choose_among(torch.tensor([0.0, 1.0]), torch.tensor([1]), g) == (0, 1)  # a certain candidate stands


def test_sampling_with_a_tree_keeps_the_target_distribution():
    """2,000 texts of three characters through speculative_stream with a tree of width 3 and depth 1
    on the sharp tiny model: the first character from a plain round, the second from the tree's
    walk (choose_among among head 1's top 3). The pairs against p(c1) p(c2 | c1), computed from the
    model alone, with a chi-square test."""
    target, draws = make_sharp_model(3), 2000
    heads = noisy_heads(target, num_heads=2, seed=3)
    idx = prompt(B=1, T=5, seed=7)  # (1, 5)
    p1 = F.softmax(target(idx)[0][0, -1], dim=-1)  # (V,)
    both = torch.cat((idx.repeat(V, 1), torch.arange(V)[:, None]), dim=1)  # (V, 6): after every first character
    p2 = F.softmax(target(both)[0][:, -1], dim=-1)  # (V, V)
    expected = (p1[:, None] * p2).flatten().double() * draws  # (V * V,)
    g, pairs, trees, stood = torch.Generator().manual_seed(0), [], 0, 0
    for _ in range(draws):
        rounds = list(speculative_stream(target, MedusaDrafter(heads, 3), idx, 3, Decoding(), 1, g))
        text = torch.cat([r.tokens for r in rounds])
        pairs.append(int(text[0]) * V + int(text[1]))
        trees += len(rounds[1].drafted) == 3  # the second round was a tree of 3 candidates
        stood += int(rounds[1].verdict.accepted)
    observed = torch.bincount(torch.tensor(pairs), minlength=V * V).double()
    assert trees == draws and 0.05 < stood / draws < 0.95  # candidates stood and fell many times
    assert chi_square_p_value(observed, expected) > 1e-3


def test_trees_at_the_command_line(capsys):
    args = ("--max_new_tokens", "150", "--temperature", "0", "--seed", "1")
    status, plain, _ = cli(capsys, *args)
    status_tree, text, err = cli(capsys, *args, "--draft", "medusa", "--tree_width", "2")
    assert status == status_tree == 0 and text == plain
    for flags, message in [(["--tree_width", "2"], "use --draft medusa"),
                           (["--draft", "ngram", "--tree_width", "2"], "use --draft medusa"),
                           (["--draft", "medusa", "--tree_width", "2", "--walkthrough"], "drop --walkthrough"),
                           (["--draft", "medusa", "--tree_width", "4"], "--tree_width must be in [1, 3], got 4")]:
        status, line = failure(capsys, "--max_new_tokens", "5", *flags)
        assert status == 2 and message in line


# ----------------------------------------------------------------------------- the files and the command line

def test_the_shipped_heads_are_small_and_measured(shipped):
    target, _ = shipped
    heads = medusa.load(medusa.DEFAULT_HEADS, target)
    assert heads.num_heads >= 2 and os.path.getsize(medusa.DEFAULT_HEADS) <= 1_000_000
    stats = checkpoint.read_plain(medusa.DEFAULT_HEADS)["stats"]
    assert len(stats["top1"]) == len(stats["top5"]) == heads.num_heads + 1
    assert all(a <= b for a, b in zip(stats["top1"], stats["top5"]))


def test_the_command_line_prints_plain_greedy_text(capsys):
    args = ("--max_new_tokens", "120", "--temperature", "0", "--seed", "1")
    status, plain, _ = cli(capsys, *args)
    status_medusa, text, err = cli(capsys, *args, "--draft", "medusa")
    assert status == status_medusa == 0 and text == plain
    assert "speculative decoding:" in err


def test_training_writes_heads_that_load_and_only_for_their_model(ckpt, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "heads.pt"
    assert train_medusa.main(["--ckpt", ckpt, "--out", str(out), "--iters", "3", "--heads", "2",
                              "--batch_size", "2", "--eval_windows", "2"]) == 0
    assert "head 2 (the token 3 ahead): top-1" in capsys.readouterr().out
    tiny = checkpoint.load(ckpt)[0]
    assert medusa.load(str(out), tiny).num_heads == 2
    status, line = failure(capsys, "--max_new_tokens", "5", "--draft", str(out))  # heads of the tiny model, shipped model
    assert status == 1 and "were trained on another model" in line


@pytest.mark.parametrize("content, message", [
    (None, "no checkpoint at"),
    (b"not a torch file", "is not a readable checkpoint"),
])
def test_a_heads_file_that_cannot_be_used_exits_1_with_one_line(tmp_path, capsys, monkeypatch, content, message):
    path = tmp_path / "medusa.pt"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setattr(medusa, "DEFAULT_HEADS", str(path))
    status, line = failure(capsys, "--max_new_tokens", "5", "--draft", "medusa")
    assert status == 1 and message in line


def test_a_file_of_other_contents_is_not_taken_for_heads(tmp_path, capsys, monkeypatch):
    path = tmp_path / "medusa.pt"
    torch.save({"heads": {}, "num_heads": "four"}, path)
    monkeypatch.setattr(medusa, "DEFAULT_HEADS", str(path))
    status, line = failure(capsys, "--max_new_tokens", "5", "--draft", "medusa")
    assert status == 1 and "is not a file of Medusa heads" in line


@pytest.mark.parametrize("flags, message", [(["--heads", "0"], "--heads must be in [1, 16], got 0"),
                                            (["--lr", "2"], "--lr must be in (0, 1), got 2.0"),
                                            (["--iters", "0"], "--iters must be in")])
def test_training_refuses_bad_flags(capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        train_medusa.main(flags)
    assert e.value.code == 2 and message in capsys.readouterr().err.splitlines()[-1]


def test_an_interrupted_training_writes_nothing(ckpt, tmp_path, capsys, monkeypatch):  # noqa: F811
    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(train_medusa, "train", interrupted)
    out = tmp_path / "heads.pt"
    assert train_medusa.main(["--ckpt", ckpt, "--out", str(out)]) == 130
    assert not out.exists() and "interrupted: nothing written" in capsys.readouterr().err
