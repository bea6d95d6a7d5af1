"""Shared fixtures: a tiny random model (fast, offline) and Tiny Shakespeare as committed in data/."""
import os
import signal
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model import GPT, GPTConfig  # noqa: E402

# PyTorch before 2.6 imports transformers from torch._dynamo (an optimizer step does), when it is
# installed, and transformers then warns on stderr that it needs a newer PyTorch: the scripts the
# tests run would print two lines of it. Only errors, in this process and its children.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# The 65 symbols of Tiny Shakespeare, sorted (written out here so that a test needs no data file).
CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
META = {"vocab_size": 65, "stoi": {c: i for i, c in enumerate(CHARS)}, "itos": dict(enumerate(CHARS))}
SHAKESPEARE = os.path.join(ROOT, "data", "shakespeare_char", "input.txt")  # committed: the tests run offline


@pytest.fixture
def meta():
    return {"vocab_size": META["vocab_size"], "stoi": dict(META["stoi"]), "itos": dict(META["itos"])}


def ctrl_c_reaches_it():
    """preexec_fn for a child a test interrupts: a process started from a shell's background job
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt; restore the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt in this process, as in a terminal: a test run started from a
    shell's background job inherits SIGINT ignored (see ctrl_c_reaches_it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def make_tiny_model(seed=0, block_size=16, n_layer=2, n_head=2, n_embd=32):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=block_size, vocab_size=65, n_layer=n_layer, n_head=n_head, n_embd=n_embd)).eval()


def make_sharp_model(seed=0):
    """The tiny model with larger random weights (std 0.3): peaked distributions, far from uniform,
    so that sampling settings and penalties change the tokens."""
    model = make_tiny_model(seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """python -m pytest -m notebooks executes one notebook per core (pytest-xdist's -n auto), unless
    -n says otherwise; each notebook runs on one thread (test_notebooks.py)."""
    worker = hasattr(config, "workerinput")  # a worker runs this hook too: it must not start workers of its own
    if config.option.markexpr == "notebooks" and config.pluginmanager.hasplugin("xdist") and not worker \
            and config.option.numprocesses is None:
        config.option.numprocesses = "auto"


def transformers_runs_models():
    """transformers 5 runs its models (GPT-2, generate()) on PyTorch >= 2.6 only; its logits
    processors are plain tensor code and run on every PyTorch this project allows."""
    from transformers.utils import is_torch_available

    return is_torch_available()


# The tests that load our weights into Hugging Face's GPT-2: skipped on an older PyTorch.
hugging_face_models = pytest.mark.skipif(not transformers_runs_models(),
                                         reason="transformers runs its models on PyTorch >= 2.6 only")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine the thread
    pool's hand-offs cost 10x the work itself; the previous setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_model():
    """A randomly initialised 2-layer GPT over the 65 symbols, block_size 16."""
    return make_tiny_model()


@pytest.fixture(scope="session")
def shakespeare_path():
    """The committed input.txt."""
    return SHAKESPEARE


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A data folder made by prepare.py from the committed text, in nanoGPT's layout
    (<root>/data/shakespeare_char): (folder, meta)."""
    from data.shakespeare_char import prepare

    out = tmp_path_factory.mktemp("nanogpt") / "data" / "shakespeare_char"
    return out, prepare.prepare(str(out), input_path=SHAKESPEARE)
