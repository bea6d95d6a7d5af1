"""
Save and load checkpoints, the one way every script and notebook gets a model.

The file is nanoGPT's format, so checkpoints move both ways between the two projects:
    {'model': state_dict, 'model_args': {...}, 'iter_num': int, 'best_val_loss': float,
     'config': {...}, 'optimizer': state_dict (optional),
     'meta': {'vocab_size', 'stoi', 'itos'}}   <- ours: the vocabulary travels with the weights
A nanoGPT checkpoint has no 'meta': pass the meta.pkl that its dataset's prepare.py wrote.
"""
import os
import pickle

import torch

from files import ctrl_c_deferred, write_atomically
from model import GPT, GPTConfig

DEFAULT_CKPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints", "shakespeare_char.pt")
MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")


class CheckpointError(Exception):
    """A checkpoint or vocabulary file that cannot be used; the message is one line for the user."""


def save(path, model, meta, iter_num=0, best_val_loss=float("inf"), config=None, optimizer=None):
    """Write the checkpoint through files.write_atomically: a killed process leaves the old file whole,
    and Ctrl-C waits until the new one is written."""
    ckpt = {
        "model": model.state_dict(),
        "model_args": {k: getattr(model.config, k) for k in MODEL_ARGS},
        "iter_num": iter_num,
        "best_val_loss": best_val_loss,
        "config": config or {},
        "meta": meta,
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    with ctrl_c_deferred():  # torch.save stopped halfway raises an error of its own, not KeyboardInterrupt
        write_atomically(path, lambda f: torch.save(ckpt, f))


def read_plain(path, device="cpu"):
    """What a PyTorch file holds, loaded without running any code in it (weights_only=True: tensors
    and plain data only); a CheckpointError with one line when it cannot be read."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:  # PyTorch's message advises weights_only=False, which would run the code
        raise CheckpointError(f"{path} is not a readable checkpoint: not a PyTorch file, or one holding "
                              "objects other than tensors and plain data, which are refused")
    except Exception as e:  # truncated zip, not a torch file at all
        reason = (str(e).splitlines() or [""])[0].split(". ")[0]
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__} {reason})".replace(" )", ")"))


def read(path, device="cpu"):
    """The checkpoint dict, read by read_plain(), with its model_args (and meta, when it has one) checked."""
    ckpt = read_plain(path, device)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise CheckpointError(f"{path} is not a GPT checkpoint: it has no 'model' and 'model_args'")
    if not isinstance(ckpt["model"], dict) or not all(isinstance(v, torch.Tensor) for v in ckpt["model"].values()):
        raise CheckpointError(f"{path}: 'model' is not a state_dict of tensors")
    check_model_args(ckpt["model_args"], path)
    if "meta" in ckpt:
        ckpt["meta"] = check_meta(ckpt["meta"], f"{path}: meta")
    return ckpt


def is_int(value):
    """An int, and not a bool (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_char(value):
    """A string of one character."""
    return isinstance(value, str) and len(value) == 1


def check_rules(rules, context):
    """rules: (name, ok, rule) in order, ok() a test that may rely on the rules before it.
    The first that fails is a CheckpointError: '<context>: <name> must be <rule>'."""
    for name, ok, rule in rules:
        if not ok():
            raise CheckpointError(f"{context}: {name} must be {rule}")


def require_keys(value, keys, what):
    """A CheckpointError unless value is a dict that holds every one of keys."""
    if not isinstance(value, dict):
        raise CheckpointError(f"{what} is a {type(value).__name__}, not a dict")
    missing = [repr(k) for k in keys if k not in value]
    if missing:
        raise CheckpointError(f"{what} has no {', '.join(missing)}")


def check_model_args(args, path):
    """Every key of MODEL_ARGS, each of the right type and range: none is taken from a default.
    Other keys (nanoGPT may add some) are ignored."""
    require_keys(args, MODEL_ARGS, f"{path}: model_args")
    sizes = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
    rules = [(k, lambda k=k: is_int(args[k]) and args[k] >= 1, "a positive int") for k in sizes] + [
        ("n_embd", lambda: args["n_embd"] % args["n_head"] == 0, f"a multiple of n_head ({args['n_head']})"),
        ("bias", lambda: isinstance(args["bias"], bool), "True or False"),
        ("dropout", lambda: type(args["dropout"]) in (int, float) and 0 <= args["dropout"] < 1, "a number in [0, 1)"),
    ]
    check_rules(rules, path)


def check_meta(meta, source):
    """The vocabulary {'vocab_size': V, 'stoi': {char: id}, 'itos': {id: char}}, checked: ids 0 .. V-1,
    one character each, stoi the inverse of itos. A fault is a CheckpointError naming it."""
    require_keys(meta, ("vocab_size", "stoi", "itos"), source)
    size, stoi, itos = meta["vocab_size"], meta["stoi"], meta["itos"]
    rules = [  # in order: each rule may rely on the ones before it
        ("vocab_size", lambda: is_int(size) and size >= 1, "a positive int"),
        ("itos", lambda: isinstance(itos, dict) and all(is_int(i) and is_char(c) for i, c in itos.items()),
         "a dict from int ids to single characters"),
        ("stoi", lambda: isinstance(stoi, dict) and all(is_char(c) and is_int(i) for c, i in stoi.items()),
         "a dict from single characters to int ids"),
        ("itos", lambda: sorted(itos) == list(range(size)), "keyed by the ids 0 to vocab_size - 1"),
        ("stoi", lambda: len(stoi) == size and stoi == {c: i for i, c in itos.items()},
         "the inverse of itos, one id per character"),
    ]
    check_rules(rules, f"{source} is not a usable vocabulary")
    return {"vocab_size": size, "stoi": stoi, "itos": itos}


class PlainUnpickler(pickle.Unpickler):
    """Reads dicts, ints, strings and other plain values, which need no import. A pickle that names
    a class or a function (os.system, builtins.exec, ...) is refused instead of being called."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it asks for {module}.{name}, refused: a vocabulary holds only "
                                     "dicts, ints and strings")


def read_meta(path):
    """nanoGPT's meta.pkl, {'vocab_size', 'stoi', 'itos'}, read without running any code it may hold."""
    try:
        with open(path, "rb") as f:
            meta = PlainUnpickler(f).load()
    except FileNotFoundError:
        raise CheckpointError(f"no vocabulary file at {path}")
    except OSError as e:
        raise CheckpointError(f"cannot read {path} ({e.strerror})")
    except Exception as e:  # refused, truncated, not a pickle at all
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path} is not a plain vocabulary ({reason})")
    return check_meta(meta, path)


def load(path=DEFAULT_CKPT, device="cpu", meta_path=None, dropout=None):
    """Build the model a checkpoint describes and fill in its weights.

    Returns (model in eval mode, meta, ckpt). The vocabulary comes from the checkpoint,
    or from meta_path (required for nanoGPT checkpoints); when both exist they must agree.
    dropout, if given, replaces the checkpoint's (to train on with another; weights do not depend on it).
    """
    ckpt = read(path, device)
    meta = ckpt.get("meta")
    if meta_path is not None:
        meta_file = read_meta(meta_path)
        if meta is not None and meta["itos"] != meta_file["itos"]:
            raise CheckpointError(f"the vocabulary in {meta_path} does not match the one inside {path}")
        meta = meta_file
    if meta is None:
        raise CheckpointError(f"{path} has no vocabulary inside: pass the dataset's meta.pkl with --meta")
    args = {k: ckpt["model_args"][k] for k in MODEL_ARGS}
    if dropout is not None:
        args["dropout"] = dropout
    if args["vocab_size"] != meta["vocab_size"]:
        raise CheckpointError(f"{path} was trained on {args['vocab_size']} symbols, "
                              f"the vocabulary has {meta['vocab_size']}")
    model = GPT(GPTConfig(**args))
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}  # torch.compile's prefix
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model ({str(e).splitlines()[0]})")
    model.to(device).eval()
    return model, meta, ckpt


def encode(text, stoi):
    """'\\nAnd' -> [0, 13, 52, 42]; a character outside the vocabulary is a one-line error."""
    unknown = sorted(set(text) - set(stoi))
    if unknown:
        vocab = "".join(sorted(stoi))
        raise ValueError(f"characters not in the vocabulary: {' '.join(repr(c) for c in unknown)}; "
                              f"the {len(stoi)} known ones are {vocab!r}")
    return [stoi[c] for c in text]


def decode(ids, itos):
    """[0, 13, 52, 42] -> '\\nAnd'"""
    return "".join(itos[int(i)] for i in ids)
