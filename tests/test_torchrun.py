"""train.py under torchrun: two CPU processes (gloo) train as one process does, and stop together."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import checkpoint
import train
from conftest import ROOT, ctrl_c_reaches_it
from test_train import TINY, run_main, wait_for_checkpoint

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
QUIET = dict(os.environ, OMP_NUM_THREADS="1")  # two processes on two cores: one thread each


def torchrun(*args):
    """train.py in two processes, started as a terminal would (Ctrl-C reaches its whole group)."""
    return subprocess.Popen([*TORCHRUN, os.path.join(ROOT, "train.py"), *args], cwd=ROOT, env=QUIET, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=ctrl_c_reaches_it)


def finished(process, timeout=120):
    """(exit status, stdout, stderr) of a torchrun; the test fails rather than hang."""
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def ours(err):
    """The lines train.py printed to stderr, without torchrun's own report of the processes it stopped."""
    return [line for line in err.splitlines() if line.startswith(("error: ", "interrupted "))]


def run(prepared, path, *flags):
    return [*TINY, f"--data_dir={prepared[0]}", f"--ckpt_path={path}", *flags]


def test_two_processes_reach_the_weights_of_one_with_twice_the_micro_steps_and_sample_py_reads_them(
        prepared, tmp_path, capsys):
    """Every process draws the whole global batch from the same generator and takes its share of the
    micro-batches (rank r the r-th half), so both runs see the same batches: 4 micro-batches of 8
    per iteration, two in each process (DDP's no_sync on the first), or four in one. The weights
    differ by float32 rounding only (measured: below 1e-7, 3e-4 of the value): the gradients are
    summed in another order. The attention's key biases are the exception: softmax ignores a shift
    that is the same for every key, so their true gradient is zero and Adam, which divides a
    gradient by its own size, turns the rounding noise into steps of up to the learning rate:
    they are checked against that bound only."""
    flags = ["--gradient_accumulation_steps=4", "--max_iters=6", "--eval_interval=6"]
    status, out, err = finished(torchrun(*run(prepared, tmp_path / "two.pt", *flags)))
    assert status == 0, err
    assert "2 processes" in out and out.count("saved ") == 1  # rank 0 alone prints and saves
    assert run_main(capsys, *run(prepared, tmp_path / "one.pt", *flags))[0] == 0
    two, one = checkpoint.read(str(tmp_path / "two.pt")), checkpoint.read(str(tmp_path / "one.pt"))
    assert two["iter_num"] == one["iter_num"] == 6
    assert two["model"].keys() == one["model"].keys()  # no "module." prefix
    n_embd = one["model_args"]["n_embd"]
    for name, weight in one["model"].items():
        if name.endswith("attn.c_attn.bias"):  # (3C,): query, key, value
            key_bias, weight = weight[n_embd:2 * n_embd], torch.cat((weight[:n_embd], weight[2 * n_embd:]))
            other = two["model"][name]
            assert (other[n_embd:2 * n_embd] - key_bias).abs().max() < 6 * 3e-3  # 6 steps of Adam at lr 3e-3
            two["model"][name] = torch.cat((other[:n_embd], other[2 * n_embd:]))
        torch.testing.assert_close(two["model"][name], weight, rtol=1e-4, atol=1e-6, msg=name)

    import sample

    status = sample.main(["--ckpt", str(tmp_path / "two.pt"), "--max_new_tokens", "20", "--seed", "1"])
    out, err = capsys.readouterr()
    assert status == 0 and len(out) > 20, err


def test_accumulation_steps_that_the_processes_cannot_share_are_refused(prepared, tmp_path):
    status, out, err = finished(torchrun(*run(prepared, tmp_path / "ckpt.pt", "--gradient_accumulation_steps=3")))
    assert status != 0 and "step 0" not in out
    assert ours(err) == ["error: gradient_accumulation_steps must be a positive multiple of the 2 processes, not 3"]
    assert not os.path.exists(tmp_path / "ckpt.pt")


def test_a_diverging_run_stops_every_process_with_one_line(prepared, tmp_path):
    status, _, err = finished(torchrun(*run(prepared, tmp_path / "ckpt.pt", "--gradient_accumulation_steps=2",
                                            "--learning_rate=1e6", "--max_iters=1000", "--eval_interval=500")))
    assert status != 0
    (line,) = ours(err)
    assert line.startswith("error: loss nan at iter ")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the workers through /proc")
def test_a_process_that_dies_ends_the_run_on_every_rank(prepared, tmp_path):
    """SIGKILL on rank 1 (as the kernel's out-of-memory killer does): rank 0 says why, torchrun stops
    it, and the checkpoint written before is whole."""
    ckpt_path = tmp_path / "ckpt.pt"
    process = torchrun(*run(prepared, ckpt_path, "--gradient_accumulation_steps=2", "--max_iters=100000",
                            "--eval_interval=2", "--always_save_checkpoint=true"))
    wait_for_checkpoint(ckpt_path, process, min_iter=2)
    started = time.time()
    os.kill(rank_pid(process, 1), signal.SIGKILL)
    status, _, err = finished(process, timeout=60)
    assert status != 0 and time.time() - started < 30, err
    assert set(ours(err)) <= {"error: rank 0 lost contact with the other processes: one of them has stopped"}, err
    assert checkpoint.read(str(ckpt_path))["iter_num"] >= 2


def rank_pid(process, rank):
    """The process id of torchrun's worker of the given rank (its environment says RANK)."""
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    for pid in children:
        with open(f"/proc/{pid}/environ", "rb") as f:
            if f"RANK={rank}".encode() in f.read().split(b"\0"):
                return int(pid)
    raise AssertionError(f"no worker of rank {rank} among {children}")


def test_ctrl_c_saves_once_and_resume_continues_under_torchrun(prepared, tmp_path):
    ckpt_path = tmp_path / "ckpt.pt"
    flags = ["--gradient_accumulation_steps=2", "--eval_interval=2", "--always_save_checkpoint=true"]
    process = torchrun(*run(prepared, ckpt_path, *flags, "--max_iters=100000"))
    wait_for_checkpoint(ckpt_path, process, min_iter=2)
    os.killpg(process.pid, signal.SIGINT)  # the whole foreground group, as Ctrl-C in a terminal
    status, _, err = finished(process, timeout=60)
    assert status != 0
    (line,) = ours(err)  # rank 0 saved it and said so; the other process said nothing
    interrupted_at = int(line.split("interrupted at iter ")[1].split(":")[0])
    assert checkpoint.read(str(tmp_path / "ckpt-interrupted.pt"))["iter_num"] == interrupted_at

    status, out, err = finished(torchrun(*run(prepared, ckpt_path, *flags, "--init_from=resume",
                                              f"--max_iters={interrupted_at + 2}")))
    assert status == 0, err
    assert f"resuming from {tmp_path / 'ckpt-interrupted.pt'} at iter {interrupted_at}" in out
    assert not (tmp_path / "ckpt-interrupted.pt").exists()
    assert checkpoint.read(str(ckpt_path))["iter_num"] == interrupted_at + 2


@pytest.mark.parametrize("environ, fragment", [({"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}, "does not fit"),
                                               ({"RANK": "x", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}, "integers")])
def test_a_broken_torchrun_environment_is_refused(environ, fragment):
    with pytest.raises(train.ConfigError, match=fragment):
        train.processes(environ)
