"""checkpoint.py: one loader for our checkpoints and nanoGPT's, and a clear error for anything else."""
import os
import pickle
import re

import pytest
import torch

import checkpoint
from conftest import CHARS, make_tiny_model


def nanogpt_checkpoint(model):
    """What karpathy/nanoGPT's train.py writes: its keys, a compiled model's '_orig_mod.' prefix, no vocabulary."""
    c = model.config
    return {
        "model": {"_orig_mod." + k: v for k, v in model.state_dict().items()},
        "optimizer": {},
        "model_args": dict(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=c.block_size,
                           bias=c.bias, vocab_size=c.vocab_size, dropout=c.dropout),
        "iter_num": 5000,
        "best_val_loss": torch.tensor(1.4697),
        "config": {"dataset": "shakespeare_char", "compile": True},
    }


def write_meta(path, meta):
    with open(path, "wb") as f:
        pickle.dump(meta, f)


def test_round_trip_gives_identical_logits(tiny_model, meta, tmp_path):
    path = str(tmp_path / "ckpt.pt")
    checkpoint.save(path, tiny_model, meta, iter_num=7, best_val_loss=2.5)
    model, loaded_meta, ckpt = checkpoint.load(path)
    idx = torch.randint(65, (2, 16))
    assert torch.equal(model(idx)[0], tiny_model(idx)[0])
    assert loaded_meta == meta and ckpt["iter_num"] == 7 and not model.training
    assert not os.path.exists(path + ".tmp")


def test_nanogpt_checkpoint_loads_with_its_meta(tiny_model, meta, tmp_path):
    torch.save(nanogpt_checkpoint(tiny_model), tmp_path / "ckpt.pt")
    write_meta(tmp_path / "meta.pkl", meta)
    model, loaded_meta, _ = checkpoint.load(str(tmp_path / "ckpt.pt"), meta_path=str(tmp_path / "meta.pkl"))
    idx = torch.randint(65, (1, 16))
    assert torch.equal(model(idx)[0], tiny_model(idx)[0])
    assert loaded_meta["itos"] == meta["itos"]


def test_nanogpt_checkpoint_without_meta_says_what_to_pass(tiny_model, tmp_path):
    torch.save(nanogpt_checkpoint(tiny_model), tmp_path / "ckpt.pt")
    with pytest.raises(checkpoint.CheckpointError, match="pass the dataset's meta.pkl with --meta"):
        checkpoint.load(str(tmp_path / "ckpt.pt"))


def test_vocabulary_mismatch(tiny_model, meta, tmp_path):
    checkpoint.save(str(tmp_path / "ckpt.pt"), tiny_model, meta)
    backwards = CHARS[::-1]
    other = {"vocab_size": 65, "stoi": {c: i for i, c in enumerate(backwards)}, "itos": dict(enumerate(backwards))}
    write_meta(tmp_path / "meta.pkl", other)
    with pytest.raises(checkpoint.CheckpointError, match="does not match"):
        checkpoint.load(str(tmp_path / "ckpt.pt"), meta_path=str(tmp_path / "meta.pkl"))
    write_meta(tmp_path / "small.pkl", {"vocab_size": 3, "stoi": {"a": 0, "b": 1, "c": 2},
                                        "itos": {0: "a", 1: "b", 2: "c"}})
    torch.save(nanogpt_checkpoint(tiny_model), tmp_path / "nano.pt")
    with pytest.raises(checkpoint.CheckpointError, match="trained on 65 symbols, the vocabulary has 3"):
        checkpoint.load(str(tmp_path / "nano.pt"), meta_path=str(tmp_path / "small.pkl"))


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("kind", ["missing", "truncated", "text", "random", "not_a_dict", "no_model", "code"])
def test_unusable_files_are_one_clear_error(kind, tiny_model, meta, tmp_path, capsys):
    path = tmp_path / "ckpt.pt"
    if kind == "truncated":
        checkpoint.save(str(path), tiny_model, meta)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("ROMEO: not a checkpoint")
    elif kind == "random":
        path.write_bytes(bytes(torch.randint(256, (1000,), generator=torch.Generator().manual_seed(0)).tolist()))
    elif kind == "not_a_dict":
        torch.save([1, 2, 3], path)
    elif kind == "no_model":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "code":  # a pickle that would run code: weights_only=True refuses it
        torch.save({"model": Payload(), "model_args": {}}, path)
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load(str(path))
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    assert "weights_only" not in str(e.value)  # PyTorch's advice to load it unsafely is not passed on
    assert "this must never run" not in capsys.readouterr().out


def our_checkpoint(model, meta, tmp_path):
    """The dict checkpoint.save writes, as torch.load reads it back."""
    checkpoint.save(str(tmp_path / "good.pt"), model, meta)
    return torch.load(tmp_path / "good.pt", weights_only=True)


@pytest.mark.parametrize("change, fragment", [
    (lambda c: c["meta"].pop("stoi"), "{path}: meta has no 'stoi'"),
    (lambda c: c.update(model_args="n_layer=2"), "{path}: model_args is a str, not a dict"),
    (lambda c: c["model_args"].pop("n_head"), "{path}: model_args has no 'n_head'"),
    (lambda c: c["model_args"].update(n_head=5), "{path}: n_embd must be a multiple of n_head"),
    (lambda c: c["model_args"].update(n_layer="2"), "{path}: n_layer must be a positive int"),
    (lambda c: c["model_args"].update(block_size=0), "{path}: block_size must be a positive int"),
    (lambda c: c["model_args"].update(bias="yes"), "{path}: bias must be True or False"),
    (lambda c: c["model_args"].update(dropout=None), "{path}: dropout must be a number in [0, 1)"),
    (lambda c: c.update(model=[1, 2, 3]), "{path}: 'model' is not a state_dict of tensors"),
], ids=["meta_without_stoi", "model_args_a_string", "no_n_head", "n_head_5_for_32_channels", "n_layer_a_string",
        "block_size_0", "bias_a_string", "dropout_none", "model_a_list"])
def test_malformed_checkpoint_is_one_clear_error(change, fragment, tiny_model, meta, tmp_path):
    ckpt = our_checkpoint(tiny_model, meta, tmp_path)
    change(ckpt)
    path = tmp_path / "ckpt.pt"
    torch.save(ckpt, path)
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load(str(path))
    assert fragment.format(path=path) in str(e.value) and "\n" not in str(e.value)


def test_no_model_setting_is_taken_from_a_default(meta, tmp_path):
    """A 4-head model whose n_head went missing must not load as GPTConfig's default of 6 heads
    (48 channels divide by both, and the weights have the same shapes)."""
    ckpt = our_checkpoint(make_tiny_model(n_head=4, n_embd=48), meta, tmp_path)
    del ckpt["model_args"]["n_head"]
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(checkpoint.CheckpointError, match="model_args has no 'n_head'"):
        checkpoint.load(str(tmp_path / "ckpt.pt"))


def test_the_shipped_checkpoint_loads():
    model, meta, ckpt = checkpoint.load()
    assert (model.config.n_layer, model.config.n_embd, meta["vocab_size"]) == (6, 192, 65)


def test_save_does_not_follow_a_link_planted_at_the_temporary_name(tiny_model, meta, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    path = tmp_path / "ckpt.pt"
    os.symlink(victim, str(path) + ".tmp")  # the fixed temporary name checkpoint.save once used
    checkpoint.save(str(path), tiny_model, meta)
    assert victim.read_bytes() == b"precious"
    assert checkpoint.load(str(path))[2]["iter_num"] == 0


class MakesAFile:
    """A pickled object whose loading would create `path`, through os.system or builtins.exec."""

    def __init__(self, path, how):
        self.path, self.how = str(path), how

    def __reduce__(self):
        if self.how == "os.system":
            return os.system, (f"touch {self.path}",)
        return exec, (f"open({self.path!r}, 'w').close()",)


@pytest.mark.parametrize("how", ["os.system", "exec"])
@pytest.mark.parametrize("hidden", [False, True], ids=["alone", "inside_a_valid_meta"])
def test_a_meta_pkl_runs_no_code(meta, tmp_path, how, hidden):
    created = tmp_path / "created"
    payload = MakesAFile(created, how)
    write_meta(tmp_path / "meta.pkl", dict(meta, note=payload) if hidden else payload)
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.read_meta(str(tmp_path / "meta.pkl"))
    assert not created.exists()
    assert "\n" not in str(e.value) and "is not a plain vocabulary" in str(e.value)


@pytest.mark.parametrize("change, fragment", [
    ({"stoi": None}, "stoi must be a dict from single characters to int ids"),
    ({"vocab_size": "65"}, "vocab_size must be a positive int"),
    ({"vocab_size": 66}, "itos must be keyed by the ids 0 to vocab_size - 1"),
    ({"itos": {**{i: c for i, c in enumerate(CHARS)}, 5: "ab"}}, "itos must be a dict from int ids to single"),
    ({"stoi": {**{c: i for i, c in enumerate(CHARS)}, "a": 0}}, "stoi must be the inverse of itos"),
    ({"stoi": {c: float(i) for i, c in enumerate(CHARS)}}, "stoi must be a dict from single characters to int"),
])
def test_a_malformed_vocabulary_is_one_clear_error(meta, tmp_path, change, fragment):
    write_meta(tmp_path / "meta.pkl", {**meta, **change})
    with pytest.raises(checkpoint.CheckpointError, match=re.escape(fragment)):
        checkpoint.read_meta(str(tmp_path / "meta.pkl"))


def test_a_vocabulary_without_stoi(meta, tmp_path):
    del meta["stoi"]
    write_meta(tmp_path / "meta.pkl", meta)
    with pytest.raises(checkpoint.CheckpointError, match="meta.pkl has no 'stoi'"):
        checkpoint.read_meta(str(tmp_path / "meta.pkl"))


def test_weights_that_do_not_fit(tiny_model, meta, tmp_path):
    ckpt = nanogpt_checkpoint(tiny_model)
    ckpt["model_args"]["n_embd"] = 64
    torch.save(ckpt, tmp_path / "ckpt.pt")
    write_meta(tmp_path / "meta.pkl", meta)
    with pytest.raises(checkpoint.CheckpointError, match="weights do not fit"):
        checkpoint.load(str(tmp_path / "ckpt.pt"), meta_path=str(tmp_path / "meta.pkl"))


def test_encode_decode(meta):
    ids = checkpoint.encode("\nAnd Nero ", meta["stoi"])
    assert ids == [0, 13, 52, 42, 1, 26, 43, 56, 53, 1]
    assert checkpoint.decode(torch.tensor(ids), meta["itos"]) == "\nAnd Nero "
    with pytest.raises(ValueError, match="'é' '€'"):
        checkpoint.encode("Café €", meta["stoi"])


@pytest.mark.parametrize("name", ["shakespeare_char.pt", "draft.pt"])
def test_the_shipped_checkpoints_name_their_dataset_for_nanogpt(name):
    """nanoGPT's sample.py loads data/<config['dataset']>/meta.pkl; without the key it falls back to
    GPT-2's tokenizer and fails on our 65 ids."""
    ckpt = checkpoint.read(os.path.join(os.path.dirname(checkpoint.DEFAULT_CKPT), name))
    assert ckpt["config"]["dataset"] == "shakespeare_char"
