"""web/: the page's JavaScript against the Python it mirrors. web/model.js must give PyTorch's logits
on the same weights, every stage of web/sampling.js its Python function's output, and the decode
loop sample.py's text; web/export.py's files must be those of the shipped checkpoint. The
JavaScript runs in Node (tests/web.mjs); without Node these tests are skipped, with the reason."""
import json
import math
import os
import shutil
import struct
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import checkpoint
import sampling
from conftest import ROOT
from model import GPT, GPTConfig
from test_sampling import CASES, contexts

WEB = os.path.join(ROOT, "web")
sys.path.insert(0, WEB)
import export  # noqa: E402

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed: the page's JavaScript is not tested")


def node(calls):
    """Run tests/web.mjs on a list of calls; its list of results."""
    done = subprocess.run([NODE, os.path.join(ROOT, "tests", "web.mjs")], input=json.dumps(calls), text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def as_json(row):
    """A row of logits for JSON: -inf as None."""
    return [None if x == -math.inf else x for x in row.tolist()]


def from_json(values):
    return torch.tensor([-math.inf if x is None else x for x in values], dtype=torch.float64)


def assert_same(ours, python, atol=1e-5, ties=False):
    """The same tokens removed, the others equal to atol, or to 1e-6 of their value where float32
    (PyTorch) cannot hold atol: a logit divided by a small temperature is in the hundreds.

    ties: the filter sorts the logits, and of tied tokens at its cut PyTorch's sort (unstable, its
    order an implementation detail) and ours (stable) may keep different ones: then the kept
    logits must be the same values, not the same tokens."""
    python = python.double()
    if ties:
        kept = lambda z: sorted(z[torch.isfinite(z)].tolist())  # noqa: E731
        assert kept(ours) == pytest.approx(kept(python), abs=atol), "different logits kept"
        return
    assert torch.equal(torch.isneginf(ours), torch.isneginf(python)), "different tokens removed"
    finite = torch.isfinite(python)
    torch.testing.assert_close(ours[finite], python[finite], atol=atol, rtol=1e-6)


def read_model_bin(path):
    """web/model.bin, read by its documented layout (web/export.py) into a GPT, and the vocabulary."""
    data = open(path, "rb").read()
    (length,) = struct.unpack("<I", data[:4])
    header = json.loads(data[4:4 + length])
    halves = np.frombuffer(data[4 + length:], dtype="<f2")
    model = GPT(GPTConfig(**header["config"])).eval()
    state = {}
    for t in header["tensors"]:
        size = math.prod(t["shape"])
        state[t["name"]] = torch.from_numpy(halves[t["offset"]:t["offset"] + size].astype(np.float32)).view(t["shape"])
    state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state)
    return model, header["itos"]


@pytest.fixture(scope="module")
def web_model():
    """What the page runs: the shipped model with its weights rounded to float16, in PyTorch."""
    model, itos = read_model_bin(os.path.join(WEB, "model.bin"))
    return model, {c: i for i, c in enumerate(itos)}


# ----------------------------------------------------------------------------- the exported files

def test_the_exported_files_are_the_shipped_checkpoint_s():
    """python web/export.py rewrites them when the checkpoint or the settings change."""
    with open(os.path.join(WEB, "model.bin"), "rb") as f:
        assert f.read() == export.model_bytes(checkpoint.DEFAULT_CKPT), "web/model.bin is stale: python web/export.py"
    with open(os.path.join(WEB, "lesson.json"), "rb") as f:
        assert f.read() == export.lesson_bytes(), "web/lesson.json is stale: python web/export.py"


def test_the_weights_are_at_most_8_mb_and_float16_moves_the_logits_by_less_than_0_02(web_model):
    """What the page and the README say; measured 0.014 on these sequences."""
    assert os.path.getsize(os.path.join(WEB, "model.bin")) <= 8e6
    model, _, _ = checkpoint.load()
    idx = torch.randint(0, 65, (4, 128), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        error = (model(idx)[0] - web_model[0](idx)[0]).abs().max().item()
    assert error < 0.02, error


@pytest.mark.parametrize("name", sorted(export.SLIDERS))
def test_every_slider_stays_within_what_decoding_allows(name):
    low, high, step = export.SLIDERS[name]
    default = {f.name: f.default for f in sampling.fields(sampling.Decoding)}[name]
    off = export.OFF.get(name, low) if default is None else None
    for value in (low, high, low + step):
        if value != off:
            sampling.Decoding(**{name: value, **({"mirostat_tau": 5.0} if name == "mirostat" else {})})


# ----------------------------------------------------------------------------- the model

PROMPTS = ["\n", "\nAnd Nero ", "ROMEO:\nBut soft, what light through yonder window breaks?\n",
           "First Citizen:\nBefore we proceed any further, hear me speak.",
           *(open(os.path.join(ROOT, "data", "shakespeare_char", "input.txt"), encoding="utf-8").read()[i:i + n]
             for i, n in [(1000, 5), (5000, 64), (20000, 127), (30000, 128), (40000, 129), (50000, 200),
                          (60000, 300), (70000, 17), (80000, 90), (90000, 1), (100000, 256), (110000, 400),
                          (120000, 33), (130000, 150), (140000, 77), (150000, 500)])]


def test_javascript_logits_equal_pytorch_s_on_the_same_weights(web_model):
    """20 prompts, 8 longer than block_size (the last 128 characters are read)."""
    model, stoi = web_model
    results = node([{"call": "logits", "text": text} for text in PROMPTS])
    assert len(PROMPTS) >= 20 and sum(len(p) > 128 for p in PROMPTS) >= 5
    for text, ours in zip(PROMPTS, results):
        with torch.no_grad():
            python = sampling.next_logits(model, torch.tensor([checkpoint.encode(text, stoi)]))[0]
        torch.testing.assert_close(from_json(ours), python.double(), atol=1e-4, rtol=0)


def test_without_webassembly_simd_the_javascript_loop_gives_the_same_logits(web_model):
    model, stoi = web_model
    texts = PROMPTS[:6]
    for text, ours in zip(texts, node([{"call": "logits", "text": text, "simd": False} for text in texts])):
        with torch.no_grad():
            python = sampling.next_logits(model, torch.tensor([checkpoint.encode(text, stoi)]))[0]
        torch.testing.assert_close(from_json(ours), python.double(), atol=1e-4, rtol=0)


def test_the_cached_decode_loop_reads_what_python_s_reads(web_model):
    """400 greedy steps: past block_size the cache restarts where sampling.model_input restarts it,
    and every step's logits equal Python's."""
    model, stoi = web_model
    (ours,) = node([{"call": "stream", "text": "\n", "n": 400, "settings": {"temperature": 0}}])
    raw = []
    steps = list(sampling.stream(model, torch.tensor([[stoi["\n"]]]), 400, sampling.Decoding(temperature=0),
                                 observe=lambda name, z: raw.append(z[0]) if name == "logits" else None))
    assert ours["ids"] == [s.ids[0, 0].item() for s in steps]
    for a, b in zip(ours["logits"], raw):
        torch.testing.assert_close(from_json(a), b.double(), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- the stages

def flat():
    return torch.zeros(2, 65)


def toy():
    return torch.tensor([[0.7, 0.2, 0.1] + [0.0] * 62]).log()  # 小 冬 瓜 and 62 removed tokens


ROWS = [row for case in CASES.values() for row in case()] + list(flat()) + list(toy())
CONTEXT = contexts(3, B=1)["few-ids"][0].tolist()  # repeated n-grams, for the penalties

# (the JavaScript function, its arguments after the logits, the Python call on a (1, V) row). A
# threshold that falls exactly on a probability of the toy row (top-p 0.9 = 0.7 + 0.2, epsilon 0.1)
# is decided by float32 rounding, which PyTorch's exp and ours do not share: those are left out.
STAGES = [
    ("apply_temperature", [0.7], lambda z: sampling.apply_temperature(z, 0.7)),
    ("apply_temperature", [2.0], lambda z: sampling.apply_temperature(z, 2.0)),
    ("dynamic_temperature", [1.0, 0.5, 1.0], lambda z: sampling.dynamic_temperature(z, 1.0, 0.5, 1.0)),
    ("dynamic_temperature", [0.3, 0.5, 2.0], lambda z: sampling.dynamic_temperature(z, 0.3, 0.5, 2.0)),
    *[("top_k_filter", [k], lambda z, k=k: sampling.top_k_filter(z, k)) for k in (1, 2, 5, 64, 100)],
    *[("top_p_filter", [p], lambda z, p=p: sampling.top_p_filter(z, p)) for p in (1e-9, 0.25, 0.5, 0.85, 0.95, 1.0)],
    *[("min_p_filter", [m], lambda z, m=m: sampling.min_p_filter(z, m)) for m in (0.0, 0.1, 0.5, 1.0)],
    *[("typical_filter", [m], lambda z, m=m: sampling.typical_filter(z, m)) for m in (0.1, 0.5, 0.85, 1.0)],
    *[("epsilon_filter", [e], lambda z, e=e: sampling.epsilon_filter(z, e)) for e in (0.01, 0.15, 0.5)],
    *[("eta_filter", [e], lambda z, e=e: sampling.eta_filter(z, e)) for e in (0.001, 0.05, 0.3)],
    *[("top_n_sigma_filter", [n], lambda z, n=n: sampling.top_n_sigma_filter(z, n)) for n in (0.5, 1.0, 3.0)],
    ("mirostat_filter", [4.0], lambda z: sampling.mirostat_filter(z, torch.tensor([4.0]))),
    ("logit_bias", [[(i % 7) - 3.0 for i in range(65)]],
     lambda z: sampling.logit_bias(z, torch.tensor([(i % 7) - 3.0 for i in range(65)]))),
    *[("repetition_penalty", [CONTEXT, t], lambda z, t=t: sampling.repetition_penalty(z, torch.tensor([CONTEXT]), t))
      for t in (0.8, 1.3)],
    ("frequency_presence_penalty", [[float(i % 3) for i in range(65)], 0.4, 0.7],
     lambda z: sampling.frequency_presence_penalty(z, torch.tensor([[i % 3 for i in range(65)]]), 0.4, 0.7)),
    *[("no_repeat_ngram", [CONTEXT, n], lambda z, n=n: sampling.no_repeat_ngram(z, torch.tensor([CONTEXT]), n))
      for n in (1, 2, 3)],
    ("dry_penalty", [CONTEXT, 0.8, 1.75, 2, [], None],
     lambda z: sampling.dry_penalty(z, torch.tensor([CONTEXT]), 0.8, 1.75, 2, set(), None)),
    ("dry_penalty", [CONTEXT, 1.5, 2.0, 1, [0], 12],
     lambda z: sampling.dry_penalty(z, torch.tensor([CONTEXT]), 1.5, 2.0, 1, {0}, 12)),
]


@pytest.fixture(scope="module")
def stage_results():
    """Every stage on every row, in one run of Node: [stage][row]."""
    results = node([{"call": "stage", "fn": fn, "logits": as_json(row), "args": args}
                    for fn, args, _ in STAGES for row in ROWS])
    return [results[i * len(ROWS):(i + 1) * len(ROWS)] for i in range(len(STAGES))]


@pytest.mark.parametrize("number", range(len(STAGES)), ids=[f"{s[0]}{s[1][-1] if s[1] else ''}" for s in STAGES])
def test_each_stage_equals_its_python_function(number, stage_results):
    """On random, peaked, tied, partly removed, flat and toy logits (tests/test_sampling.py's cases)."""
    fn, _, python = STAGES[number]
    for row, ours in zip(ROWS, stage_results[number]):
        assert_same(from_json(ours), python(row[None].float())[0], ties=fn == "top_p_filter")


@pytest.mark.parametrize("seed", range(6))
def test_xtc_draws_its_uniform_number_as_torch_does(seed):
    rows = ROWS[:8]
    results = node([{"call": "stage", "fn": "xtc_filter", "logits": as_json(row), "args": [0.05, 0.5], "seed": seed}
                    for row in rows])
    for row, ours in zip(rows, results):
        python = sampling.xtc_filter(row[None], 0.05, 0.5, torch.Generator().manual_seed(seed))[0]
        assert_same(from_json(ours), python)


@pytest.mark.parametrize("settings", [
    dict(temperature=0.7, top_k=30, top_p=0.9, min_p=0.05, typical_p=0.95, repetition_penalty=1.3, no_repeat_ngram_size=2),
    dict(temperature=1.5, top_k=50, top_p=0.5, repetition_penalty=0.8, frequency_penalty=0.5, presence_penalty=0.3,
         order="llama.cpp"),
    dict(temperature=0, repetition_penalty=2.0, dry_multiplier=0.8, top_k=3),
    dict(temperature=0, top_p=0.5, order="llama.cpp"),
    dict(mirostat=2, mirostat_tau=3.0),
    dict(dynatemp_range=0.5, epsilon_cutoff=0.02, eta_cutoff=0.01, top_n_sigma=1.5, penalty_last_n=8,
         logit_bias=(("e", -5.0), ("z", 2.0))),
])
def test_the_whole_pipeline_in_both_orders(settings):
    """Every stage at once, in the order Decoding.stages() gives, on the same context."""
    decoding = sampling.Decoding(**settings)
    js = {k: [list(p) for p in v] if k == "logit_bias" else v for k, v in settings.items()}
    rows, context = ROWS[:10], CONTEXT
    results = node([{"call": "pipeline", "logits": as_json(row), "context": context, "prompt_length": 5,
                     "settings": js} for row in rows])
    stoi = {c: i for i, c in enumerate("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")}
    for row, ours in zip(rows, results):
        run = decoding.start(torch.tensor([context[:5]]))
        run.ids = torch.tensor([context])
        assert_same(from_json(ours), sampling.process(row[None].float(), run, decoding.stages(stoi))[0])


@pytest.mark.parametrize("settings", [dict(mirostat=2, top_k=5), dict(mirostat=2, temperature=0),
                                      dict(dynatemp_range=1.0, temperature=0),
                                      dict(mirostat=2, repetition_penalty=1.3, order="llama.cpp")])
def test_combinations_without_a_meaning_are_refused_with_python_s_message(settings):
    (message,) = node([{"call": "conflicts", "settings": settings}])
    with pytest.raises(ValueError) as python:
        sampling.Decoding(**settings)
    assert message == str(python.value)


# ----------------------------------------------------------------------------- the draws and the text

@pytest.mark.parametrize("seed", [0, 1, 42, 1337, 2 ** 40 + 7])
def test_the_generator_gives_torch_rand_s_numbers(seed):
    (ours,) = node([{"call": "rand", "seed": seed, "n": 1000}])
    assert ours == torch.rand(1000, generator=torch.Generator().manual_seed(seed)).tolist()


def test_draws_follow_the_softmax():
    """20,000 draws from 小 冬 瓜 (0.7, 0.2, 0.1): chi-square with 2 degrees of freedom below 13.8,
    which chance exceeds once in a thousand."""
    n, p = 20_000, [0.7, 0.2, 0.1]
    (draws,) = node([{"call": "draws", "probs": p, "seed": 5, "n": n}])
    counts = np.bincount(draws, minlength=3)
    chi2 = sum((c - n * q) ** 2 / (n * q) for c, q in zip(counts, p))
    assert chi2 < 13.8, counts


@pytest.mark.parametrize("flags", [[], ["--repetition_penalty", "1.3"]])
def test_greedy_text_is_sample_py_s(flags, capsys):
    """300 characters of greedy decoding on the page equal python sample.py --temperature 0's, which
    runs the unrounded weights: float16 weights do not change these argmaxes."""
    import sample

    assert sample.main(["--temperature", "0", "--max_new_tokens", "300", *flags]) == 0
    printed = capsys.readouterr().out
    settings = {"temperature": 0, **({"repetition_penalty": 1.3} if flags else {})}
    (ours,) = node([{"call": "stream", "text": "\n", "n": 300, "settings": settings}])
    itos = checkpoint.load()[1]["itos"]
    assert "\n" + checkpoint.decode(ours["ids"], itos) == printed.rstrip("\n").split("\n---------------\n")[0]


class Replay:
    """A stand-in for the model that answers each call with the next row of logits the page computed."""

    def __init__(self, rows, block_size):
        self.rows = iter(rows)
        self.config = SimpleNamespace(block_size=block_size)

    def __call__(self, ids, cache=None):
        return from_json(next(self.rows)).float()[None, None], None  # (1, 1, V)


@pytest.mark.parametrize("settings", [{}, {"temperature": 0.8, "top_k": 10}, {"top_p": 0.9}, {"temperature": 2.0},
                                      {"xtc_probability": 0.5}, {"mirostat": 2, "mirostat_tau": 4.0}])
def test_seeded_text_is_python_s_on_the_same_logits(settings, web_model):
    """The same seed draws the same 300 characters as sampling.generate with torch's generator, fed
    the logits the page computed at each step (float32 numbers, exact in both). Fed PyTorch's own
    logits instead, the texts part where a draw or an XTC threshold sits within rounding of a
    boundary, and where that happens depends on the CPU (one such CPU parted them after 104 XTC
    steps): the logits themselves are compared above."""
    model, stoi = web_model
    (ours,) = node([{"call": "stream", "text": "\nAnd Nero ", "n": 300, "settings": settings, "seed": 1337}])
    idx = torch.tensor([checkpoint.encode("\nAnd Nero ", stoi)])
    python = sampling.generate(Replay(ours["logits"], model.config.block_size), idx, 300,
                               sampling.Decoding(**settings), generator=torch.Generator().manual_seed(1337),
                               use_cache=False, stoi=stoi)
    assert ours["ids"] == python[0, idx.size(1):].tolist()
