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

from model import GPT, GPTConfig

DEFAULT_CKPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints", "shakespeare_char.pt")
MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")


class CheckpointError(Exception):
    """A checkpoint or vocabulary file that cannot be used; the message is one line for the user."""


def save(path, model, meta, iter_num=0, best_val_loss=float("inf"), config=None, optimizer=None):
    """Write the checkpoint to a temporary name, then rename it: a killed process leaves the old file whole."""
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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(ckpt, path + ".tmp")
    os.replace(path + ".tmp", path)


def read(path, device="cpu"):
    """The raw checkpoint dict, loaded without running any code in the file (weights_only=True)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated zip, pickle of arbitrary objects, not a torch file at all
        reason = (str(e).splitlines() or [""])[0]
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__} {reason})".replace(" )", ")"))
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise CheckpointError(f"{path} is not a GPT checkpoint: it has no 'model' and 'model_args'")
    return ckpt


def read_meta(path):
    """nanoGPT's meta.pkl: {'vocab_size', 'stoi', 'itos'}."""
    try:
        with open(path, "rb") as f:
            meta = pickle.load(f)
        return {"vocab_size": meta["vocab_size"], "stoi": meta["stoi"], "itos": meta["itos"]}
    except FileNotFoundError:
        raise CheckpointError(f"no vocabulary file at {path}")
    except Exception as e:
        raise CheckpointError(f"{path} is not a meta.pkl vocabulary ({type(e).__name__})")


def load(path=DEFAULT_CKPT, device="cpu", meta_path=None):
    """Build the model a checkpoint describes and fill in its weights.

    Returns (model in eval mode, meta, ckpt). The vocabulary comes from the checkpoint,
    or from meta_path (required for nanoGPT checkpoints); when both exist they must agree.
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
    args = {k: v for k, v in ckpt["model_args"].items() if k in MODEL_ARGS}
    if args.get("vocab_size") != meta["vocab_size"]:
        raise CheckpointError(f"{path} was trained on {args.get('vocab_size')} symbols, "
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
