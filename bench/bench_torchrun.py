"""
How fast does the quick recipe train in one process, in two (torchrun), and compiled? Side by side.

    python bench/bench_torchrun.py            # prints the results
    python bench/bench_torchrun.py --save     # and writes them to docs/bench/torchrun.txt

Each way trains config/train_quick.py for --iters iterations (the same global batch of 16 blocks
of 64 characters each time), in turns, --repeats times; a way's speed is the fastest of its runs,
in tokens per second over the iterations after the first log interval (which holds the start:
the first evaluation and torch.compile's compilation). Compilation itself is timed apart: the
seconds from the start of a run to its first logged iteration, against the same for a plain run,
on the first compiled run (Inductor's cache empty, as for a new user) and on a later one.
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

RESULTS = os.path.join(ROOT, "docs", "bench", "torchrun.txt")
TOKENS_PER_ITER = 16 * 64  # config/train_quick.py: 2 micro-batches of 8 blocks of 64 characters
LOG_INTERVAL = 50  # iterations between the speeds train.py prints
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
WAYS = {  # name: (launcher, threads per process, extra keys)
    "1 process, 2 threads": ([sys.executable], 2, []),
    "1 process, 1 thread": ([sys.executable], 1, []),
    "2 processes (torchrun), 1 thread each": (TORCHRUN, 1, []),
    "1 process, 2 threads, compile=true": ([sys.executable], 2, ["--compile=true"]),
}


def run(name, iters, folder):
    """Train one way; (tokens per second after the first log interval, seconds to the first logged iteration)."""
    launcher, threads, extra = WAYS[name]
    command = [*launcher, os.path.join(ROOT, "train.py"), os.path.join(ROOT, "config", "train_quick.py"),
               f"--max_iters={iters}", f"--eval_interval={iters}", f"--log_interval={LOG_INTERVAL}",
               "--device=cpu", f"--ckpt_path={os.path.join(folder, 'quick.pt')}", "--overwrite=true", *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    logged = []  # (iteration, seconds since start)
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env=env) as process:
        for line in process.stdout:
            match = re.match(r"iter (\d+):", line)
            if match:
                logged.append((int(match[1]), time.perf_counter() - start))
    if process.returncode or len(logged) < 2:
        sys.exit(f"error: {name} failed with exit status {process.returncode}")
    (first, t_first), (last, t_last) = logged[0], logged[-1]
    return (last - first) * TOKENS_PER_ITER / (t_last - t_first), t_first


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=300, help="iterations per run (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way, in turns (default %(default)s)")
    parser.add_argument("--save", action="store_true", help="write the results to docs/bench/torchrun.txt")
    args = parser.parse_args()
    speeds = {name: [] for name in WAYS}
    starts = {name: [] for name in WAYS}
    with tempfile.TemporaryDirectory() as folder:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(folder, "inductor")  # empty: a first compilation
        for repeat in range(args.repeats):
            for name in WAYS:
                speed, start = run(name, args.iters, folder)
                speeds[name].append(speed)
                starts[name].append(start)
                print(f"  run {repeat + 1}, {name}: {speed:,.0f} tok/s, first log after {start:.1f}s", flush=True)
    plain = max(speeds["1 process, 2 threads"])
    lines = [f"python bench/bench_torchrun.py{' --save' if args.save else ''}: config/train_quick.py, "
             f"{args.iters} iterations, {os.cpu_count()} cores, fastest of {args.repeats}, "
             f"{time.strftime('%Y-%m-%d')}", "",
             f"{'':40s} {'tok/s':>8s}  vs 1 process, 2 threads"]
    for name in WAYS:
        lines.append(f"{name:40s} {max(speeds[name]):8,.0f}  {max(speeds[name]) / plain:.2f}x")
    compiled, plain_start = starts["1 process, 2 threads, compile=true"], min(starts["1 process, 2 threads"])
    lines += ["", f"seconds to the first logged iteration: plain {plain_start:.1f}s; compile=true "
              f"{compiled[0]:.1f}s on its first run (empty cache), {min(compiled[1:] or compiled):.1f}s later"]
    text = "\n".join(lines) + "\n"
    print("\n" + text, end="")
    if args.save:
        write_atomically(RESULTS, lambda f: f.write(text.encode()))
        print(f"saved {os.path.relpath(RESULTS, ROOT)}")


if __name__ == "__main__":
    main()
