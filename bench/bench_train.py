"""
How fast does the quick recipe learn, next to nanoGPT's documented CPU recipe? One run, side by side.

    python bench/bench_train.py            # prints the results
    python bench/bench_train.py --save     # and writes them to docs/bench/train.txt, which the README quotes

Trains both with this repository's train.py (same code, different settings), times each from the
moment its process starts, and prints the wall time at which each first reached a val loss threshold.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from files import write_atomically  # noqa: E402

RESULTS = os.path.join(ROOT, "docs", "bench", "train.txt")

# nanoGPT's README: "python train.py config/train_shakespeare_char.py --device=cpu --compile=False
# --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
# --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0", with that config's learning_rate=1e-3, min_lr=1e-4,
# warmup_iters=100, beta2=0.99, eval_interval=250.
NANOGPT_CPU = ["--n_layer=4", "--n_head=4", "--n_embd=128", "--block_size=64", "--batch_size=12", "--dropout=0.0",
               "--max_iters=2000", "--lr_decay_iters=2000", "--learning_rate=1e-3", "--min_lr=1e-4",
               "--warmup_iters=100", "--beta2=0.99", "--eval_interval=250", "--eval_iters=20", "--log_interval=250"]
QUICK = [os.path.join(ROOT, "config", "train_quick.py")]


def run(name, args, ckpt_path):
    """Train; return [(seconds since the process started, step, val loss)] for each evaluation."""
    command = [sys.executable, os.path.join(ROOT, "train.py"), *args, "--device=cpu", f"--ckpt_path={ckpt_path}"]
    print(f"{name}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    evals = []
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        for line in process.stdout:
            match = re.match(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", line)
            if match:
                evals.append((time.perf_counter() - start, int(match[1]), float(match[2])))
                print(f"  {evals[-1][0]:6.1f}s  step {evals[-1][1]:5d}  val loss {evals[-1][2]:.4f}", flush=True)
    if process.returncode:
        sys.exit(f"error: {name} failed with exit status {process.returncode}")
    return evals


def first_below(evals, threshold):
    """(seconds, step) of the first evaluation with val loss <= threshold, or None."""
    return next(((t, step) for t, step, loss in evals if loss <= threshold), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threshold", type=float, default=1.88, help="val loss to reach (default %(default)s)")
    parser.add_argument("--save", action="store_true", help="write the results to docs/bench/train.txt")
    args = parser.parse_args()
    lines = [f"python bench/bench_train.py --threshold {args.threshold}: {os.cpu_count()} cores, "
             f"{time.strftime('%Y-%m-%d')}"]

    def say(line=""):
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory() as tmp:
        quick = run("quick recipe", QUICK, os.path.join(tmp, "quick.pt"))
        baseline = run("nanoGPT CPU recipe", NANOGPT_CPU, os.path.join(tmp, "nanogpt.pt"))

    say(f"\nwall time to val loss <= {args.threshold}:")
    for name, evals in (("quick recipe", quick), ("nanoGPT CPU recipe", baseline)):
        reached = first_below(evals, args.threshold)
        final = f"final val loss {evals[-1][2]:.4f} after {evals[-1][0]:.1f}s"
        say(f"  {name:<20} " + (f"{reached[0]:6.1f}s (step {reached[1]}); " if reached else "not reached; ") + final)
    # the same target for both: the loss the baseline ends with
    target = baseline[-1][2]
    quick_time, baseline_time = first_below(quick, target), first_below(baseline, target)
    if quick_time:
        say(f"\nto nanoGPT's final val loss {target:.4f}: quick recipe {quick_time[0]:.1f}s, "
            f"nanoGPT CPU recipe {baseline_time[0]:.1f}s: {baseline_time[0] / quick_time[0]:.2f}x faster")
    else:
        say(f"\nthe quick recipe did not reach nanoGPT's final val loss {target:.4f}")
    if args.save:
        write_atomically(RESULTS, lambda f: f.write(("\n".join(lines) + "\n").encode()))
        print(f"\nwrote {os.path.relpath(RESULTS, ROOT)}")


if __name__ == "__main__":
    main()
