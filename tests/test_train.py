"""train.py: the model learns, configs are checked, checkpoints survive kills and resume."""
import itertools
import math
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import checkpoint
import train
from conftest import META, ROOT, SHAKESPEARE, ctrl_c_reaches_it
from model import GPT, GPTConfig
from test_checkpoint import MakesAFile, nanogpt_checkpoint

TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=16", "--batch_size=8", "--eval_iters=2",
        "--log_interval=5", "--warmup_iters=2", "--learning_rate=3e-3", "--device=cpu"]


def tiny_run(prepared, tmp_path, *flags):
    """The argv of a few iterations of the tiny model on the prepared data, saved to tmp_path/ckpt.pt."""
    return [*TINY, f"--data_dir={prepared[0]}", f"--ckpt_path={tmp_path / 'ckpt.pt'}", "--max_iters=2",
            "--eval_interval=1", *flags]


def tiny_config(prepared, tmp_path, *flags):
    return train.get_config(tiny_run(prepared, tmp_path, *flags))[0]


def run_train(*args, **kwargs):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=ctrl_c_reaches_it, **kwargs)


def test_loss_at_initialisation_is_log_vocab_size():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=65, n_layer=4, n_head=4, n_embd=128))
    idx, targets = torch.randint(65, (8, 64)), torch.randint(65, (8, 64))
    _, loss = model(idx, targets)
    assert loss.item() == pytest.approx(math.log(65), abs=0.05)  # ln 65 = 4.174: a uniform guess


def test_a_few_steps_lower_the_loss(prepared, tmp_path):
    config = tiny_config(prepared, tmp_path, "--max_iters=0", "--eval_interval=1")
    before = train.train(config)
    config = tiny_config(prepared, tmp_path, "--max_iters=30", "--eval_interval=30")
    after = train.train(config)
    assert after < before - 0.5  # from ~4.17 at initialisation


def test_learning_rate_schedule():
    config = train.TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, max_iters=110)
    assert train.learning_rate(0, config) == pytest.approx(1 / 11)  # linear warm-up: (it + 1) / (warmup + 1)
    assert train.learning_rate(10, config) == pytest.approx(1.0)  # the peak, cosine progress 0
    assert train.learning_rate(60, config) == pytest.approx(0.55)  # half way: 0.1 + 0.5 * (1 + cos(pi/2)) * 0.9
    assert train.learning_rate(110, config) == pytest.approx(0.1)


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "recipe.py"
    path.write_text("n_layer = 3\nlearning_rate = 1  # an int where a float is expected is fine\n")
    config, given = train.get_config([str(path), "--n_layer=5", "--bias=false", "--min_lr=2e-5"])
    assert given == {"n_layer", "learning_rate", "bias", "min_lr"}
    assert (config.n_layer, config.learning_rate, config.bias, config.min_lr) == (5, 1.0, False, 2e-5)


@pytest.mark.parametrize("argv, fragment", [
    (["--lerning_rate=1e-3"], "unknown config key 'lerning_rate' (did you mean 'learning_rate'?)"),
    (["--max_iters=abc"], "--max_iters takes int, not 'abc'"),
    (["--max_iters=1.5"], "--max_iters takes int"),
    (["--learning_rate=fast"], "--learning_rate takes float"),
    (["--bias=maybe"], "--bias takes true or false"),
    (["--init_from=nowhere"], "init_from must be 'scratch' or 'resume'"),
    (["--max_iters"], "write --max_iters=VALUE"),
    (["no_such_config.py"], "no config file no_such_config.py"),
])
def test_bad_config_is_one_clear_error(argv, fragment):
    with pytest.raises(train.ConfigError) as e:
        train.get_config(argv)
    assert fragment in str(e.value)


def test_wrongly_typed_config_file(tmp_path):
    path = tmp_path / "recipe.py"
    path.write_text("n_layer = '4'\n")
    with pytest.raises(train.ConfigError, match="n_layer must be int, not str"):
        train.get_config([str(path)])


def run_main(capsys, *argv):
    """train.py's main in this process: (exit status, stdout, stderr)."""
    status = train.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_help_lists_every_key_with_its_default(capsys):
    status, out, _ = run_main(capsys, "--help")
    assert status == 0
    for f in train.dataclasses.fields(train.TrainConfig):
        assert f"--{f.name}={f.default!r}" in out


def test_command_line_errors_are_one_line(tmp_path, capsys):
    status, _, err = run_main(capsys, "--n_layers=2")
    assert status == 2
    assert err.strip().splitlines() == [
        "error: unknown config key 'n_layers' (did you mean 'n_layer'?); see python train.py --help"]
    status, _, err = run_main(capsys, f"--data_dir={tmp_path}")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "is not prepared" in err


def test_the_default_data_folder_is_prepared_on_first_use(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "data" / "shakespeare_char"
    folder.mkdir(parents=True)
    shutil.copy(SHAKESPEARE, folder / "input.txt")
    monkeypatch.setattr(train.prepare, "HERE", str(folder))  # stands in for data/shakespeare_char
    status, out, err = run_main(capsys, *TINY, f"--data_dir={folder}", f"--ckpt_path={tmp_path / 'ckpt.pt'}",
                                "--max_iters=0")
    assert status == 0, err
    assert out.startswith(f"{folder} has no train.bin, val.bin, meta.pkl: preparing it")
    assert sorted(os.listdir(folder)) == ["input.txt", "meta.pkl", "train.bin", "val.bin"]


def refused_up_front(capsys, *argv):
    """main(argv) stops before the first evaluation, with exit status 2 and one line: that line."""
    status, out, err = run_main(capsys, *argv)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "step 0" not in out  # no training began
    return lines[0]


@pytest.mark.parametrize("flags, fragment", [
    (["--eval_interval=0"], "eval_interval must be >= 1, not 0"),
    (["--log_interval=0"], "log_interval must be >= 1"),
    (["--eval_iters=0"], "eval_iters must be >= 1"),
    (["--batch_size=0"], "batch_size must be >= 1"),
    (["--block_size=0"], "block_size must be >= 1"),
    (["--n_embd=192", "--n_head=5"], "n_embd must be a positive multiple of n_head (5), not 192"),
    (["--n_head=0"], "n_head must be >= 1, not 0"),
    (["--dropout=2"], "dropout must be in [0, 1)"),
    (["--beta1=1.5"], "beta1 must be in [0, 1)"),
    (["--beta2=1.5"], "beta2 must be in [0, 1)"),
    (["--learning_rate=-1e-3"], "learning_rate must be > 0"),
    (["--learning_rate=nan"], "learning_rate must be > 0, not nan"),
    (["--min_lr=-1e-4"], "min_lr must be >= 0"),
    (["--max_iters=-1"], "max_iters must be >= 0"),
    (["--warmup_iters=-1"], "warmup_iters must be >= 0"),
    (["--lr_decay_iters=-1"], "lr_decay_iters must be >= 0"),
    (["--weight_decay=-0.1"], "weight_decay must be >= 0"),
    (["--grad_clip=-1"], "grad_clip must be >= 0"),
    (["--device=bogus"], "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', not 'bogus'"),
    (["--device=cpu:1"], "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', not 'cpu:1'"),
])
def test_bad_settings_are_refused_up_front(prepared, tmp_path, capsys, flags, fragment):
    assert fragment in refused_up_front(capsys, *tiny_run(prepared, tmp_path, *flags))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("device, present", [("cuda", torch.cuda.is_available()),
                                             ("mps", torch.backends.mps.is_available())])
def test_an_absent_device_is_refused_up_front(prepared, tmp_path, capsys, device, present):
    if present:
        pytest.skip(f"this machine has {device}")
    line = refused_up_front(capsys, *tiny_run(prepared, tmp_path, f"--device={device}"))
    assert f"device '{device}' is not available on this machine" in line


@pytest.mark.parametrize("text, fragments", [
    ("n_layer = = 2\n", ["recipe.py: SyntaxError: invalid syntax", "line 1"]),
    ("n_layer = layers\n", ["recipe.py: NameError: name 'layers' is not defined"]),
])
def test_a_config_file_that_fails_is_one_line(prepared, tmp_path, capsys, text, fragments):
    (tmp_path / "recipe.py").write_text(text)
    line = refused_up_front(capsys, str(tmp_path / "recipe.py"), *tiny_run(prepared, tmp_path))
    assert all(fragment in line for fragment in fragments)


def data_folder(prepared, tmp_path, **files):
    """A copy of the prepared data folder with some of its files replaced: name=bytes."""
    folder = tmp_path / "data"
    shutil.copytree(prepared[0], folder)
    for name, content in files.items():
        (folder / name.replace("_", ".")).write_bytes(content)
    return folder


@pytest.mark.parametrize("files, fragment", [
    ({"train_bin": b""}, "train.bin has 0 bytes: not a stream of uint16 token ids"),
    ({"train_bin": b"\x01\x00\x02"}, "train.bin has 3 bytes: not a stream of uint16 token ids"),
    ({"val_bin": np.arange(16, dtype=np.uint16).tobytes()}, "val.bin holds 16 tokens: block_size=16 needs at least 17"),
    ({"meta_pkl": pickle.dumps({"vocab_size": 3, "stoi": {"a": 0, "b": 1, "c": 2}, "itos": {0: "a", 1: "b", 2: "c"}})},
     "train.bin holds token id 64, but the vocabulary (meta.pkl) has only 3 symbols"),
])
def test_unusable_data_files_are_refused_up_front(prepared, tmp_path, capsys, files, fragment):
    folder = data_folder(prepared, tmp_path, **files)
    assert fragment in refused_up_front(capsys, *tiny_run(prepared, tmp_path, f"--data_dir={folder}"))


def test_a_meta_pkl_in_the_data_folder_runs_no_code(prepared, tmp_path, capsys):
    created = tmp_path / "created"
    folder = data_folder(prepared, tmp_path, meta_pkl=pickle.dumps(dict(META, note=MakesAFile(created, "exec"))))
    line = refused_up_front(capsys, *tiny_run(prepared, tmp_path, f"--data_dir={folder}"))
    assert "is not a plain vocabulary" in line and not created.exists()


def test_a_block_size_longer_than_the_data(prepared, tmp_path, capsys):
    folder = data_folder(prepared, tmp_path, val_bin=np.arange(100, dtype=np.uint16).tobytes())
    line = refused_up_front(capsys, *tiny_run(prepared, tmp_path, f"--data_dir={folder}", "--block_size=200"))
    assert "val.bin holds 100 tokens: block_size=200 needs at least 201" in line


@pytest.mark.parametrize("where", ["a_folder", "below_a_file"])
def test_a_ckpt_path_that_cannot_be_written_is_refused_up_front(prepared, tmp_path, capsys, where):
    (tmp_path / "file").write_text("not a folder")
    ckpt_path = tmp_path if where == "a_folder" else tmp_path / "file" / "out" / "ckpt.pt"
    line = refused_up_front(capsys, *tiny_run(prepared, tmp_path, f"--ckpt_path={ckpt_path}"))
    assert str(ckpt_path) in line
    assert os.listdir(tmp_path) == ["file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_ckpt_folder_is_refused_up_front(prepared, tmp_path, capsys):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    line = refused_up_front(capsys, *tiny_run(prepared, tmp_path, f"--ckpt_path={folder / 'ckpt.pt'}"))
    assert "Permission denied" in line


def test_a_diverging_run_stops_with_one_line_and_saves_no_nan(prepared, tmp_path, capsys):
    assert run_main(capsys, *tiny_run(prepared, tmp_path))[0] == 0  # a good checkpoint at iter 2
    status, _, err = run_main(capsys, *tiny_run(prepared, tmp_path, "--init_from=resume", "--learning_rate=1e9",
                                                "--warmup_iters=0", "--log_interval=1", "--max_iters=20",
                                                "--always_save_checkpoint=true"))
    lines = err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and "training diverged" in lines[0], err
    assert "nan" in lines[0] or "inf" in lines[0]
    ckpt = checkpoint.read(str(tmp_path / "ckpt.pt"))
    assert ckpt["iter_num"] == 2 and all(torch.isfinite(w).all() for w in ckpt["model"].values())


def test_checkpoint_holds_the_vocabulary_and_nanogpt_keys(prepared, tmp_path):
    train.train(tiny_config(prepared, tmp_path, "--max_iters=4", "--eval_interval=2"))
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert {"model", "model_args", "iter_num", "best_val_loss", "config", "optimizer", "meta"} <= set(ckpt)
    assert set(ckpt["model_args"]) == {"n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout"}
    assert ckpt["meta"] == prepared[1]
    assert ckpt["iter_num"] == 4


def test_a_fresh_run_does_not_overwrite_a_checkpoint(prepared, tmp_path, capsys):
    assert run_main(capsys, *tiny_run(prepared, tmp_path))[0] == 0
    before = (tmp_path / "ckpt.pt").read_bytes()
    line = refused_up_front(capsys, *tiny_run(prepared, tmp_path, "--max_iters=4"))
    assert line == (f"error: {tmp_path / 'ckpt.pt'} exists: continue it with --init_from=resume, "
                    f"or replace it with --overwrite=true")
    assert (tmp_path / "ckpt.pt").read_bytes() == before
    status, out, _ = run_main(capsys, *tiny_run(prepared, tmp_path, "--max_iters=4", "--overwrite=true"))
    assert status == 0 and checkpoint.read(str(tmp_path / "ckpt.pt"))["iter_num"] == 4


@pytest.mark.parametrize("recipe", sorted(os.listdir(os.path.join(ROOT, "config"))))
def test_every_recipe_writes_under_out(recipe):
    """checkpoints/ holds the shipped model: reproducing a recipe must not write over it."""
    config, _ = train.get_config([os.path.join(ROOT, "config", recipe)])
    assert config.ckpt_path.startswith("out/")


@pytest.mark.parametrize("flag", ["--n_layer=2", "--n_head=4", "--n_embd=64", "--block_size=32", "--bias=False"])
def test_resume_refuses_to_change_the_shape_of_the_model(prepared, tmp_path, capsys, flag):
    assert run_main(capsys, *tiny_run(prepared, tmp_path))[0] == 0
    before = (tmp_path / "ckpt.pt").read_bytes()
    line = refused_up_front(capsys, *tiny_run(prepared, tmp_path, "--init_from=resume", "--max_iters=4", flag))
    name, value = flag[2:].split("=")
    assert f"{tmp_path / 'ckpt.pt'} has {name}=" in line and f"cannot change it to {value}" in line
    assert (tmp_path / "ckpt.pt").read_bytes() == before


def test_resume_takes_the_shape_from_the_checkpoint_and_dropout_as_given(prepared, tmp_path, capsys):
    assert run_main(capsys, *tiny_run(prepared, tmp_path))[0] == 0
    ckpt_path = tmp_path / "ckpt.pt"
    status, out, err = run_main(capsys, f"--data_dir={prepared[0]}", f"--ckpt_path={ckpt_path}", "--device=cpu",
                                "--init_from=resume", "--max_iters=3", "--eval_interval=1", "--eval_iters=2",
                                "--always_save_checkpoint=true", "--dropout=0.5")
    assert status == 0, err
    assert f"from {ckpt_path}: n_layer=1, n_head=2, n_embd=32, block_size=16, bias=True\n" in out  # not dropout
    assert checkpoint.read(str(ckpt_path))["model_args"]["dropout"] == 0.5


def test_a_nanogpt_checkpoint_resumes_with_the_vocabulary_of_the_data_folder(prepared, tmp_path, capsys):
    model = GPT(GPTConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=32))
    torch.save(nanogpt_checkpoint(model), tmp_path / "ckpt.pt")  # no 'meta' inside: data_dir has meta.pkl
    status, out, err = run_main(capsys, *tiny_run(prepared, tmp_path, "--init_from=resume", "--max_iters=5002"))
    assert status == 0, err
    assert "resuming from" in out and "at iter 5000 (best val loss 1.4697), with a fresh optimizer state" in out


def nanogpt_meta_path(ckpt, nanogpt_root):
    """Where nanoGPT's sample.py finds the vocabulary of a checkpoint (init_from='resume'): if its config
    names a dataset, data/<dataset>/meta.pkl under nanoGPT's root, when that file exists. Otherwise
    (None here) it decodes with GPT-2's tokenizer, and a character-level model's ids crash it."""
    if "config" in ckpt and "dataset" in ckpt["config"]:
        path = os.path.join(nanogpt_root, "data", ckpt["config"]["dataset"], "meta.pkl")
        if os.path.exists(path):
            return path
    return None


def test_nanogpt_finds_the_vocabulary_of_a_fresh_checkpoint(prepared, tmp_path, capsys):
    assert run_main(capsys, *tiny_run(prepared, tmp_path))[0] == 0
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    nanogpt_root = prepared[0].parent.parent  # the data folder is <root>/data/shakespeare_char
    assert ckpt["config"]["dataset"] == "shakespeare_char"
    path = nanogpt_meta_path(ckpt, nanogpt_root)
    assert path is not None and checkpoint.read_meta(path) == prepared[1]


def wait_for_checkpoint(path, process, min_iter, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()
        if os.path.exists(path):
            try:
                if checkpoint.read(str(path))["iter_num"] >= min_iter:
                    return
            except checkpoint.CheckpointError:
                pass  # caught between torch.save and os.replace: the old file is whole, try again
        time.sleep(0.05)
    raise AssertionError("no checkpoint written in time")


def test_sigkill_halfway_leaves_a_loadable_checkpoint_and_resume_continues(prepared, tmp_path):
    ckpt_path = tmp_path / "ckpt.pt"
    args = TINY + [f"--data_dir={prepared[0]}", f"--ckpt_path={ckpt_path}", "--eval_interval=2",
                   "--always_save_checkpoint=true", "--max_iters=100000"]
    process = run_train(*args)
    wait_for_checkpoint(ckpt_path, process, min_iter=6)
    process.kill()  # SIGKILL: no chance to clean up
    process.wait()
    model, meta, ckpt = checkpoint.load(str(ckpt_path))
    killed_at = ckpt["iter_num"]
    assert killed_at >= 6 and meta == prepared[1]

    resumed = run_train(*args[:-1], f"--max_iters={killed_at + 4}", "--init_from=resume")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert f"resuming from {ckpt_path} at iter {killed_at}" in out
    assert checkpoint.read(str(ckpt_path))["iter_num"] == killed_at + 4


def interrupt(monkeypatch, name, at_call):
    """Make train.<name> raise KeyboardInterrupt, as Ctrl-C would, at its at_call-th call."""
    original, calls = getattr(train, name), itertools.count(1)

    def interrupted(*args, **kwargs):
        if next(calls) == at_call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train, name, interrupted)


def test_ctrl_c_during_the_first_evaluation_keeps_the_checkpoint(prepared, tmp_path, monkeypatch, capsys):
    """A fresh run that is to replace a checkpoint, stopped while it evaluates its random weights."""
    assert run_main(capsys, *tiny_run(prepared, tmp_path))[0] == 0
    before = (tmp_path / "ckpt.pt").read_bytes()
    interrupt(monkeypatch, "estimate_loss", at_call=1)
    status, _, err = run_main(capsys, *tiny_run(prepared, tmp_path, "--overwrite=true"))
    assert status == 130
    assert err.strip().splitlines() == [f"interrupted at iter 0: saved {tmp_path / 'ckpt-interrupted.pt'} beside "
                                        f"{tmp_path / 'ckpt.pt'} (not over it); continue with --init_from=resume"]
    assert (tmp_path / "ckpt.pt").read_bytes() == before
    assert checkpoint.read(str(tmp_path / "ckpt-interrupted.pt"))["iter_num"] == 0


def test_a_fresh_run_does_not_drop_an_interrupted_state(prepared, tmp_path, monkeypatch, capsys):
    interrupt(monkeypatch, "estimate_loss", at_call=1)
    assert run_main(capsys, *tiny_run(prepared, tmp_path))[0] == 130
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt-interrupted.pt"]
    assert "ckpt-interrupted.pt exists" in refused_up_front(capsys, *tiny_run(prepared, tmp_path))


def test_ctrl_c_after_a_resume_keeps_the_best_and_resume_continues_from_the_interruption(
        prepared, tmp_path, monkeypatch, capsys):
    assert run_main(capsys, *tiny_run(prepared, tmp_path))[0] == 0  # the best so far, at iter 2
    best = (tmp_path / "ckpt.pt").read_bytes()
    interrupt(monkeypatch, "get_batch", at_call=3)  # in the third training step: weights not evaluated since iter 2
    status, _, _ = run_main(capsys, *tiny_run(prepared, tmp_path, "--init_from=resume", "--max_iters=100",
                                              "--eval_interval=50", "--learning_rate=1.0"))
    assert status == 130 and (tmp_path / "ckpt.pt").read_bytes() == best
    monkeypatch.undo()
    status, out, _ = run_main(capsys, *tiny_run(prepared, tmp_path, "--init_from=resume", "--max_iters=6"))
    assert status == 0
    assert f"resuming from {tmp_path / 'ckpt-interrupted.pt'} at iter 4" in out
    assert not (tmp_path / "ckpt-interrupted.pt").exists()  # the run went past it: resume uses ckpt.pt again


def test_ctrl_c_while_a_checkpoint_is_written_is_one_line(prepared, tmp_path, monkeypatch, capsys, ctrl_c_raises):
    """Ctrl-C inside torch.save, which would otherwise raise an error of its own from its zip
    writer: the checkpoint is finished first, then the run stops as on any Ctrl-C."""
    original, calls = torch.save, []

    def interrupted_save(obj, f):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint, halfway: after its first record
            signal.raise_signal(signal.SIGINT)
        return original(obj, f)

    monkeypatch.setattr(torch, "save", interrupted_save)
    status, _, err = run_main(capsys, *tiny_run(prepared, tmp_path, "--always_save_checkpoint=true", "--max_iters=20"))
    assert status == 130 and err.strip().splitlines()[0].startswith("interrupted at iter 2"), err
    assert checkpoint.read(str(tmp_path / "ckpt.pt"))["iter_num"] == 2  # whole


def test_ctrl_c_saves_beside_the_checkpoint_and_exits_cleanly(prepared, tmp_path):
    """The real signal, in a process of its own."""
    ckpt_path = tmp_path / "ckpt.pt"
    process = run_train(*TINY, f"--data_dir={prepared[0]}", f"--ckpt_path={ckpt_path}", "--eval_interval=2",
                        "--always_save_checkpoint=true", "--max_iters=100000")
    wait_for_checkpoint(ckpt_path, process, min_iter=2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted at iter "), err
    interrupted_at = int(lines[0].split("interrupted at iter ")[1].split(":")[0])
    assert checkpoint.read(str(tmp_path / "ckpt-interrupted.pt"))["iter_num"] == interrupted_at
    assert checkpoint.read(str(ckpt_path))["iter_num"] <= interrupted_at


def test_the_quick_recipe_trains_as_it_did_in_one_process(prepared, tmp_path, capsys):
    """Without torchrun, config/train_quick.py prints the losses it printed before gradient
    accumulation came: 2 micro-batches of 8 are the 16 windows of one batch (drawn in order from the
    same generator), and 8 evaluation batches of 8 the 4 of 16. Pinned from the earlier train.py on
    one CPU; 2e-4 allows for another CPU's rounding at the fourth decimal, while other batches or
    another update move these losses by 1e-2 or more."""
    status, out, _ = run_main(capsys, "config/train_quick.py", "--max_iters=20", "--eval_interval=10",
                              "--eval_iters=8", "--log_interval=5",
                              f"--data_dir={prepared[0]}", f"--ckpt_path={tmp_path / 'quick.pt'}")
    assert status == 0
    printed = [float(x) for x in re.findall(r"(?<!best val )loss (\d+\.\d{4})", out)]
    before = [4.2000, 4.1927, 3.4154, 3.1176, 3.0293, 3.1199, 2.8085, 2.7700, 2.7004, 2.7504]
    assert printed == pytest.approx(before, abs=2e-4), out
