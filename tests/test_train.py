"""train.py: the model learns, configs are checked, checkpoints survive kills and resume."""
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import checkpoint
import train
from conftest import ROOT, SHAKESPEARE
from model import GPT, GPTConfig

TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=16", "--batch_size=8", "--eval_iters=2",
        "--log_interval=5", "--warmup_iters=2", "--learning_rate=3e-3", "--device=cpu"]


def tiny_config(prepared, tmp_path, *overrides):
    return train.get_config(TINY + [f"--data_dir={prepared[0]}", f"--ckpt_path={tmp_path / 'ckpt.pt'}", *overrides])


def run_train(*args, **kwargs):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


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
    config = train.get_config([str(path), "--n_layer=5", "--bias=false", "--min_lr=2e-5"])
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


def test_checkpoint_holds_the_vocabulary_and_nanogpt_keys(prepared, tmp_path):
    train.train(tiny_config(prepared, tmp_path, "--max_iters=4", "--eval_interval=2"))
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert {"model", "model_args", "iter_num", "best_val_loss", "config", "optimizer", "meta"} <= set(ckpt)
    assert set(ckpt["model_args"]) == {"n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout"}
    assert ckpt["meta"] == prepared[1]
    assert ckpt["iter_num"] == 4


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


def test_ctrl_c_saves_and_exits_cleanly(prepared, tmp_path):
    ckpt_path = tmp_path / "ckpt.pt"
    process = run_train(*TINY, f"--data_dir={prepared[0]}", f"--ckpt_path={ckpt_path}", "--eval_interval=2",
                        "--always_save_checkpoint=true", "--max_iters=100000")
    wait_for_checkpoint(ckpt_path, process, min_iter=2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err and "interrupted at iter" in err
    interrupted_at = int(err.split("interrupted at iter ")[1].split(":")[0])
    assert checkpoint.read(str(ckpt_path))["iter_num"] == interrupted_at
