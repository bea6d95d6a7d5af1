"""
How quickly the watermark shows, and how often text written without it is taken for watermarked.

    python bench/bench_watermark.py               # 20 seeds, delta 2, gamma 0.25, the shipped model
    python bench/bench_watermark.py --seeds 50 --delta 1

- length:          the shipped model writes 600 characters at temperature 1 with --watermark delta, one text
                   per seed (seed i is sample.py --seed i); after how many characters z first exceeds 4
                   (the median over the seeds)
- false positives: every window of that many characters (and of 200) of the validation text (the last
                   10% of input.txt, written without the watermark) scored by the detector: the share with
                   z > 4, beside the share the z-test assumes (a binomial green count)
- settings:        z after 200 characters with the watermark and temperature 0.7, top-k 5 or DRY 0.8 added
                   (median and range over the seeds)

Counts, not times: the machine's speed and load do not change them.
"""
import argparse
import math
import os
import statistics
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import checkpoint  # noqa: E402
import sampling  # noqa: E402
from data.shakespeare_char import prepare  # noqa: E402

LENGTH = 600  # characters each text is given to cross z = 4
AT = 200  # characters of the texts the settings are compared on


def running_z(ids, vocab_size, gamma):
    """sampling.watermark_z_score after each scored token of ids (B, N): (B, N - 1), column n - 1 for n scored."""
    green = sampling.green_tokens(ids, vocab_size, gamma).cumsum(dim=1)  # (B, N - 1)
    scored = torch.arange(1, ids.size(1), dtype=torch.float64)  # (N - 1,)
    return sampling.watermark_z_score(green, scored, gamma)  # (B, N - 1)


def binomial_tail(n, gamma, threshold):
    """P(z > threshold) when the green count of n scored tokens is binomial, Bin(n, gamma): the false-positive
    rate the z-test assumes for text written without the watermark."""
    return sum(math.comb(n, g) * gamma ** g * (1 - gamma) ** (n - g) for g in range(n + 1)
               if sampling.watermark_z_score(g, n, gamma) > threshold)


def write(model, stoi, seeds, length, **settings):
    """One text of `length` characters after a newline per seed, decoded together: (seeds, 1 + length)."""
    idx = torch.zeros(seeds, 1, dtype=torch.long)  # (B, 1): '\n' is id 0
    generators = [torch.Generator().manual_seed(seed) for seed in range(seeds)]
    return sampling.generate(model, idx, length, sampling.Decoding(**settings), generator=generators, stoi=stoi)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--delta", type=float, default=2.0)
    parser.add_argument("--gamma", type=float, default=0.25)
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    try:
        sampling.Decoding(watermark=args.delta, watermark_gamma=args.gamma)
    except ValueError as e:
        parser.error(str(e))
    model, meta, _ = checkpoint.load()
    V = meta["vocab_size"]
    threshold = sampling.WATERMARK_THRESHOLD

    marked = write(model, meta["stoi"], args.seeds, LENGTH, watermark=args.delta, watermark_gamma=args.gamma)
    z = running_z(marked, V, args.gamma)  # (seeds, LENGTH)
    crossed = [int((row > threshold).nonzero()[0]) + 1 if (row > threshold).any() else None for row in z]
    needed = statistics.median(n if n is not None else LENGTH + 1 for n in crossed)
    print(f"delta {args.delta:g}, gamma {args.gamma:g}, temperature 1: z > {threshold:g} after a median of "
          f"{needed:g} characters (each seed: {crossed}; None: not within {LENGTH})")

    with open(prepare.TEXT, encoding="utf-8") as f:
        validation = torch.tensor(checkpoint.encode(prepare.split(f.read())[1], meta["stoi"]))  # (N,)
    flags = sampling.green_tokens(validation, V, args.gamma)  # (N - 1,)
    counts = torch.cat((torch.zeros(1, dtype=torch.long), flags.cumsum(0)))  # (N,)
    print(f"validation text: {flags.float().mean():.1%} of its characters are green ({args.gamma:.0%} by chance)")
    for n in (math.ceil(needed), AT):
        human = sampling.watermark_z_score(counts[n:] - counts[:-n], n, args.gamma)  # (N - n,): each window of n
        flagged = human > threshold  # (N - n,)
        print(f"  {len(human)} windows of {n} scored characters: {int(flagged.sum())} with z > {threshold:g} "
              f"({flagged.float().mean():.3%}; {binomial_tail(n, args.gamma, threshold):.3%} for a binomial count); "
              f"z mean {human.mean():.2f}, sd {human.std():.2f}, max {human.max():.2f}")

    for name, settings in [("temperature 1", {}), ("temperature 0.7", dict(temperature=0.7)),
                           ("top-k 5", dict(top_k=5)), ("DRY 0.8", dict(dry_multiplier=0.8)),
                           ("no watermark", dict(watermark=0.0))]:
        settings = dict(dict(watermark=args.delta, watermark_gamma=args.gamma), **settings)
        z = running_z(write(model, meta["stoi"], args.seeds, AT, **settings), V, args.gamma)[:, -1]  # (seeds,)
        print(f"{name:>16}: z after {AT} characters, median {z.quantile(0.5):.2f} "
              f"(range {z.min():.2f} to {z.max():.2f})")


if __name__ == "__main__":
    main()
