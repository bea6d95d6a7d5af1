"""
What the KV cache and batching buy: tokens per second of three ways to generate, in one run.

    python bench/bench_generate.py

- naive:   every step feeds the whole context (cropped to block_size) through the model, as nanoGPT does
- cached:  the prompt once, then one token per step against the KV cache
- batched: 10 samples decoded together (cached), against 10 runs one after another

Prints tokens/s at 100, 500 and 1000 new tokens and the ratios, and saves a plot of the time per
token against its position for the naive and the cached loop (docs/figures/kv_cache.png).
"""
import argparse
import os
import sys
import time

import matplotlib.pyplot as plt
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import checkpoint  # noqa: E402
import plots  # noqa: E402  (large fonts, and save())
import sampling  # noqa: E402


def timed_steps(model, idx, new_tokens, use_cache, seed=0):
    """Seconds taken by each generation step, the prompt's prefill included in the first: (new_tokens,)."""
    generators = [torch.Generator().manual_seed(seed + i) for i in range(idx.size(0))]
    times = []
    start = time.perf_counter()
    for _ in sampling.stream(model, idx, new_tokens, sampling.Decoding(), generators, use_cache=use_cache):
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return torch.tensor(times)


def fastest(runs):
    """Elementwise minimum of several runs' per-step times: the run least disturbed by the machine."""
    return torch.stack(runs).min(dim=0).values


def smooth(x, width=25):
    """Moving median of x (N,), to see the trend of per-step times through the noise."""
    padded = torch.cat([x[:1].repeat(width // 2), x, x[-1:].repeat(width // 2)])
    return padded.unfold(0, width, 1).median(dim=1).values


def plot(naive, cached, block_size):
    """Time per token against its position, naive and cached, saved as docs/figures/kv_cache.png."""
    fig, ax = plt.subplots(figsize=(11, 5.5))
    positions = range(1, len(naive) + 1)
    ax.plot(positions, smooth(naive) * 1e3, label="naive: the whole context every step", color="tab:red", lw=2.5)
    ax.plot(positions, smooth(cached) * 1e3, label="KV cache: one new token per step", color="tab:blue", lw=2.5)
    ax.axvline(block_size, color="grey", ls="--", lw=1)
    ax.annotate(f"block_size = {block_size}: the naive context stops growing", (block_size, 0.5),
                xytext=(12, 0), textcoords="offset points", color="dimgrey", fontsize=12)
    ax.set(title="Time to generate each character", xlabel="position of the new character",
           ylabel="milliseconds (moving median)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="center right")
    return plots.save(fig, "kv_cache.png")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=checkpoint.DEFAULT_CKPT)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the fastest counts")
    parser.add_argument("--batch", type=int, default=10, help="samples decoded together")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    args = parser.parse_args()
    try:
        model, meta, _ = checkpoint.load(args.ckpt)
    except checkpoint.CheckpointError as e:
        sys.exit(f"error: {e}")
    if args.threads:
        torch.set_num_threads(args.threads)
    prompt = torch.tensor([checkpoint.encode("\n", meta["stoi"])])  # (1, 1)
    print(f"{model.num_params() / 1e6:.2f}M parameters, block_size {model.config.block_size}, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")

    runs = {"naive": [], "cached": []}
    for _ in range(args.repeats):  # interleaved, so that both see the same machine
        runs["naive"].append(timed_steps(model, prompt, 1000, use_cache=False))  # (1000,)
        runs["cached"].append(timed_steps(model, prompt, 1000, use_cache=True))  # (1000,)
    naive, cached = fastest(runs["naive"]), fastest(runs["cached"])
    print(f"\n{'new tokens':>10} {'naive tok/s':>12} {'cached tok/s':>13} {'cached/naive':>13}")
    for n in (100, 500, 1000):
        naive_rate, cached_rate = n / naive[:n].sum().item(), n / cached[:n].sum().item()
        print(f"{n:>10} {naive_rate:>12.0f} {cached_rate:>13.0f} {cached_rate / naive_rate:>12.1f}x")

    print("\ntime per token, median of the 50 steps up to the position:")
    for name, times in (("naive", naive), ("cached", cached)):
        at_100, at_1000 = times[50:100].median().item(), times[950:1000].median().item()
        print(f"  {name:<7} {at_100 * 1e3:.3f} ms at position 100, {at_1000 * 1e3:.3f} ms at position 1000: "
              f"ratio {at_1000 / at_100:.2f}")

    n, one_by_one, together = 500, [], []
    for _ in range(args.repeats):
        one_by_one.append(sum(timed_steps(model, prompt, n, use_cache=True, seed=i).sum().item()
                              for i in range(args.batch)))
        together.append(timed_steps(model, prompt.repeat(args.batch, 1), n, use_cache=True).sum().item())
    one_by_one, together = min(one_by_one), min(together)
    print(f"\n{args.batch} samples of {n} tokens: one after another {args.batch * n / one_by_one:.0f} tok/s, "
          f"in one batch {args.batch * n / together:.0f} tok/s: {one_by_one / together:.1f}x")

    print(f"\nsaved {plot(naive, cached, model.config.block_size)}")


if __name__ == "__main__":
    main()
