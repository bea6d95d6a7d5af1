"""
Which decoding strategy writes most like Shakespeare? A small replication of Holtzman et al. 2019,
"The Curious Case of Neural Text Degeneration" (https://arxiv.org/abs/1904.09751), on our model.

    python study.py             # 40 prompts x 200 characters, every strategy: 80 s on 2 CPU cores (AMD EPYC)
    python study.py --quick     # 2 prompts x 40 characters: a few seconds, to try it out
    python study.py --readme    # only rewrite the README's study section from docs/study.csv

The prompts are cut from the validation text, the last 10% of input.txt that the model never
trained on: num_prompts pieces of prompt_length characters, evenly spaced, each starting at a
line. Every strategy continues every prompt by `length` characters (sampling strategies with
the seeds seed, seed + 1, ... one per prompt, so all of them draw from the same random numbers),
and the text that really follows each prompt is the "human" row. For each row:

    perplexity        how likely the model finds the continuations (all their characters pooled)
    distinct-1/2/3    unique word n-grams / all word n-grams: low means the text repeats itself
    repetition        share of words that complete a 4-word sequence seen earlier in the text
    real words        share of words that occur in the training text (the first 90%)
    line length       characters per non-empty line

The text measures are computed on each continuation and averaged over the prompts, leaving out
the words cut where a continuation begins or ends; metrics.py has the formulas. Each value comes
with a 95% bootstrap interval over the prompts: with 40 prompts, two rows whose intervals
overlap are not told apart by this study. Mirostat's target, 1.3 bits per character, is below
the 1.7 bits of the model's own samples (mirostat can only lower the surprise, by cutting). The table goes
to stdout (Markdown) and to a CSV, the picture to a PNG. To read such continuations yourself:
python sample.py --compare.
"""
import argparse
import csv
import os
import sys
import time
import io
from dataclasses import dataclass

import matplotlib
import matplotlib.pyplot as plt
import torch
from matplotlib.text import Text
from matplotlib.ticker import FormatStrFormatter
from matplotlib.transforms import Bbox

import checkpoint
import metrics
import sampling
from cli import Parser
from data.shakespeare_char import prepare
from files import write_atomically
from sampling import Decoding

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CSV = os.path.join(HERE, "docs", "study.csv")
DEFAULT_PLOT = os.path.join(HERE, "docs", "figures", "study.png")
README = os.path.join(HERE, "README.md")
SIZES = {"num_prompts": 40, "prompt_length": 64, "length": 200}
QUICK_SIZES = {"num_prompts": 2, "prompt_length": 32, "length": 40}
BOOTSTRAP = 1000  # resamples of the prompts for each 95% interval


@dataclass(frozen=True)
class BeamSearch:
    """Beam search (sampling.beam_search), the one strategy that is no Decoding: it keeps the best beam."""
    num_beams: int


STRATEGIES = [
    ("greedy", Decoding(temperature=0)),
    ("beam search, 4 beams", BeamSearch(num_beams=4)),
    ("pure sampling", Decoding()),
    ("temperature 0.7", Decoding(temperature=0.7)),
    ("top-k 10", Decoding(top_k=10)),
    ("top-k 40", Decoding(top_k=40)),
    ("top-p 0.9", Decoding(top_p=0.9)),
    ("top-p 0.95", Decoding(top_p=0.95)),
    ("min-p 0.1", Decoding(min_p=0.1)),
    ("typical 0.9", Decoding(typical_p=0.9)),
    ("greedy + repetition penalty 1.3", Decoding(temperature=0, repetition_penalty=1.3)),
    ("sampling + repetition penalty 1.3", Decoding(repetition_penalty=1.3)),
    ("greedy + DRY 0.8", Decoding(temperature=0, dry_multiplier=0.8)),
    ("sampling + DRY 0.8", Decoding(dry_multiplier=0.8)),
    ("XTC 0.1, probability 0.5", Decoding(xtc_threshold=0.1, xtc_probability=0.5)),
    ("top-n-sigma 1", Decoding(top_n_sigma=1.0)),
    ("mirostat 2, τ 1.3 bits", Decoding(mirostat=2, mirostat_tau=1.3)),
    ("dynamic temperature 1 ± 0.5", Decoding(dynatemp_range=0.5)),
    ("contrastive search, α 0.6, top-k 4", Decoding(penalty_alpha=0.6, top_k=4)),
]
HUMAN = "human (validation text)"
Y, Y_LABEL = "distinct_1", "distinct-1: different words / all words   →  more varied"

# (key, table heading, format)
COLUMNS = [
    ("perplexity", "perplexity", "{:.2f}"),
    ("distinct_1", "distinct-1", "{:.3f}"),
    ("distinct_2", "distinct-2", "{:.3f}"),
    ("distinct_3", "distinct-3", "{:.3f}"),
    ("repetition", "repetition", "{:.3f}"),
    ("real_words", "real words", "{:.3f}"),
    ("line_length", "line length", "{:.1f}"),
]


def parse_args(argv=None):
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=checkpoint.DEFAULT_CKPT, help="checkpoint file (default: the shipped model)")
    p.add_argument("--data", default=prepare.TEXT, help="Tiny Shakespeare's input.txt (default: %(default)s)")
    p.add_argument("--num_prompts", type=int, help=f"prompts per strategy (default {SIZES['num_prompts']})")
    p.add_argument("--prompt_length", type=int, help=f"characters per prompt (default {SIZES['prompt_length']})")
    p.add_argument("--length", type=int, help=f"new characters per continuation (default {SIZES['length']})")
    p.add_argument("--seed", type=int, default=1337, help="prompt i is sampled with seed + i (default %(default)s)")
    p.add_argument("--out_csv", help="where to write the table as CSV (default: docs/study.csv; with --quick: nowhere)")
    p.add_argument("--out_plot", help="where to write the plot (default: docs/figures/study.png; with --quick: nowhere)")
    p.add_argument("--readme", action="store_true",
                   help="only rewrite the README's study section from docs/study.csv, without running the study")
    p.add_argument("--quick", action="store_true", help="seconds instead of minutes, to try it out: "
                   + " ".join(f"--{k} {v}" for k, v in QUICK_SIZES.items()) + ", unless given; "
                   "writes no file unless --out_csv or --out_plot says where")
    args = p.parse_args(argv)
    if not args.quick:  # the committed results are rewritten only by a full run
        args.out_csv, args.out_plot = args.out_csv or DEFAULT_CSV, args.out_plot or DEFAULT_PLOT
    sizes = QUICK_SIZES if args.quick else SIZES
    for name, default in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    return args


# ----------------------------------------------------------------------------- prompts

def prompt_starts(val, num_prompts, span):
    """num_prompts positions evenly spaced over val where `span` characters fit, each moved
    forward to the next line start when the span still fits there."""
    last = len(val) - span  # the last position where a whole span fits
    if last < 0:
        raise ValueError(f"the validation text has {len(val)} characters, a prompt and its continuation need {span}")
    starts = []
    for i in range(num_prompts):
        position = i * (last + 1) // num_prompts
        newline = val.find("\n", max(position - 1, 0))
        starts.append(newline + 1 if 0 <= newline < last else position)
    return starts


def load_text(path):
    """The text of the data file; a missing or unreadable file is a ValueError with one line."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise ValueError(f"no data file at {path} (python data/shakespeare_char/prepare.py writes it)")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path} ({type(e).__name__})")


def make_prompts(text, stoi, num_prompts, prompt_length, length):
    """Prompts (N, P) and the human continuations (N, L) from the validation text, as token ids,
    and the vocabulary of the training text (a set of words)."""
    train, val = prepare.split(text)
    starts = prompt_starts(val, num_prompts, prompt_length + length)
    pieces = [checkpoint.encode(val[s:s + prompt_length + length], stoi) for s in starts]
    ids = torch.tensor(pieces)  # (N, P + L)
    return ids[:, :prompt_length], ids[:, prompt_length:], set(metrics.words(train))


# ----------------------------------------------------------------------------- decoding and measuring

def continue_prompts(model, prompts, length, strategy, seed, stoi):
    """The `length` new token ids (N, L) that `strategy` writes after each prompt of prompts (N, P)."""
    P = prompts.size(1)
    if isinstance(strategy, BeamSearch):  # one prompt at a time; the best beam
        return torch.stack([sampling.beam_search(model, prompt[None], length, strategy.num_beams)[0].ids[P:]
                            for prompt in prompts])  # N x (L,) -> (N, L)
    generators = [torch.Generator().manual_seed(seed + i) for i in range(prompts.size(0))]
    return sampling.generate(model, prompts, length, strategy, generator=generators, stoi=stoi)[:, P:]  # (N, L)


def whole_words(prompt, continuation):
    """The words of the continuation, less the one it may share with the prompt ("Rom" + "eo")
    and the one it may cut off at its end: those are no words of their own."""
    text = (prompt + continuation).lower()
    return [m.group() for m in metrics.WORD.finditer(text) if m.start() >= len(prompt) and m.end() < len(text)]


def text_measures(prompt, continuation, vocabulary):
    """The measures of one continuation, as a dict of COLUMNS keys (all but perplexity)."""
    w = whole_words(prompt, continuation)
    return {
        "distinct_1": metrics.distinct_n(w, 1),
        "distinct_2": metrics.distinct_n(w, 2),
        "distinct_3": metrics.distinct_n(w, 3),
        "repetition": metrics.repetition(w, 4),
        "real_words": metrics.real_word_share(w, vocabulary),
        "line_length": metrics.mean_line_length(continuation),
    }


def measure(model, prompts, continuations, itos, vocabulary):
    """One row of the table: the perplexity of all continuations (N, L) after their prompts (N, P),
    pooled, and the text measures averaged over the continuations; each with its 95% bootstrap
    interval over the prompts: {key: value, key_low: ..., key_high: ...}."""
    per_text = [text_measures(checkpoint.decode(p, itos), checkpoint.decode(c, itos), vocabulary)
                for p, c in zip(prompts, continuations)]
    nll = metrics.negative_log_likelihood(model, prompts, continuations)  # (N,): nats per continuation
    per_prompt = {key: torch.tensor([m[key] for m in per_text], dtype=torch.float64) for key in per_text[0]}  # (N,)
    statistics = {"perplexity": lambda rows: (nll[rows].sum(-1) / (rows.size(-1) * continuations.size(1))).exp(),
                  **{key: lambda rows, v=values: v[rows].mean(-1) for key, values in per_prompt.items()}}
    row = {}
    for key, statistic in statistics.items():
        row[key] = statistic(torch.arange(len(nll))).item()
        row[f"{key}_low"], row[f"{key}_high"] = bootstrap_interval(statistic, len(nll))
    return row


def bootstrap_interval(statistic, n, resamples=BOOTSTRAP, seed=0):
    """The 95% percentile bootstrap interval of statistic(rows) over n prompts (Efron 1979):
    the 2.5% and 97.5% quantiles of the statistic on `resamples` sets of n prompts drawn with
    replacement. The same seed draws the same sets for every row of the table, so two rows are
    compared on the same resampled prompts."""
    rows = torch.randint(n, (resamples, n), generator=torch.Generator().manual_seed(seed))  # (R, n)
    values = statistic(rows)  # (R,)
    low, high = torch.quantile(values, torch.tensor([0.025, 0.975], dtype=values.dtype))
    return low.item(), high.item()


def run_study(model, meta, prompts, humans, vocabulary, length, seed):
    """{name: row} for every strategy and the human continuations, timing each on stderr."""
    rows = {}
    for name, strategy in STRATEGIES:
        started = time.time()
        continuations = continue_prompts(model, prompts, length, strategy, seed, meta["stoi"])
        rows[name] = measure(model, prompts, continuations, meta["itos"], vocabulary)
        print(f"{name}: {time.time() - started:.1f} s", file=sys.stderr)
    rows[HUMAN] = measure(model, prompts, humans, meta["itos"], vocabulary)
    return rows


# ----------------------------------------------------------------------------- reporting

def markdown_table(rows):
    """The rows as a Markdown table, each value with its 95% interval, the human row in bold."""
    lines = ["| strategy | " + " | ".join(heading for _, heading, _ in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for name, row in rows.items():
        cells = [f"{fmt.format(row[key])} <sub>{fmt.format(row[key + '_low'])}–{fmt.format(row[key + '_high'])}</sub>"
                 for key, _, fmt in COLUMNS]
        lines.append(f"| {'**' + name + '**' if name == HUMAN else name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows, path):
    """One line per row: the strategy and its measures with their intervals, to 4 decimals."""
    text = io.StringIO(newline="")
    out = csv.writer(text)
    keys = [k for key, _, _ in COLUMNS for k in (key, f"{key}_low", f"{key}_high")]
    out.writerow(["strategy"] + keys)
    for name, row in rows.items():
        out.writerow([name] + [f"{row[key]:.4f}" for key in keys])
    write_atomically(path, lambda f: f.write(text.getvalue().encode()))


def read_csv(path):
    """{strategy: {measure: value}}: the table write_csv() wrote."""
    with open(path, newline="") as f:
        return {row.pop("strategy"): {key: float(value) for key, value in row.items()} for row in csv.DictReader(f)}


README_BEGIN = "<!-- study: generated by python study.py from docs/study.csv; do not edit by hand -->"
README_END = "<!-- /study -->"
MAXIMISING = ["greedy", "beam search, 4 beams"]
TRUNCATED = ["temperature 0.7", "top-k 10", "top-p 0.9", "top-p 0.95", "min-p 0.1", "typical 0.9"]


def interval(row, key):
    return row[f"{key}_low"], row[f"{key}_high"]


def below(a, b, key):
    """a's whole 95% interval lies below b's: the study tells them apart."""
    return a[f"{key}_high"] < b[f"{key}_low"]


def overlap(a, b, key):
    (a_low, a_high), (b_low, b_high) = interval(a, key), interval(b, key)
    return a_low <= b_high and b_low <= a_high


def require(condition, claim):
    """Stop when a claim of the README's text no longer holds for the numbers: rewrite it."""
    if not condition:
        raise ValueError(f"the README's study section claims '{claim}', which docs/study.csv no longer supports")


def readme_section(rows):
    """The README's study section: the table and what it shows, each claim checked against the 95%
    intervals (a claim the numbers no longer support raises ValueError instead of being printed)."""
    h, g, b, pure = rows[HUMAN], rows["greedy"], rows["beam search, 4 beams"], rows["pure sampling"]
    for name in MAXIMISING:
        for key in ("perplexity", "distinct_1"):
            require(below(rows[name], h, key), f"{name} has a lower {key} than the real text")
        require(below(h, rows[name], "repetition"), f"{name} repeats more than the real text")
    pen = rows["greedy + repetition penalty 1.3"]
    require(below(pen, g, "repetition") and below(h, pen, "repetition"), "the penalty helps greedy, not enough")
    diverse = [n for n in TRUNCATED if overlap(rows[n], h, "distinct_1")]
    spell = [n for n in TRUNCATED if below(pure, rows[n], "real_words")]
    require(all(below(rows[n], h, "perplexity") for n in TRUNCATED), "none of the samplers that shrink the tail reaches human perplexity")
    require(below(pure, h, "perplexity"), "pure sampling scores below the real text's perplexity")
    require(below(g, b, "repetition"), "beam search repeats more than greedy")
    p9, p95 = rows["top-p 0.9"], rows["top-p 0.95"]
    same_p = [key for key, _, _ in COLUMNS if overlap(p9, p95, key)]
    dry = rows["greedy + DRY 0.8"]
    require(dry["repetition_high"] <= h["repetition_high"] and below(pen, dry, "distinct_1")
            and below(dry, h, "perplexity"), "DRY ends greedy's repeats, varies its words more than the penalty")
    xtc, sp = rows["XTC 0.1, probability 0.5"], rows["sampling + repetition penalty 1.3"]
    for name, row in (("XTC", xtc), ("sampling + repetition penalty", sp)):
        require(overlap(row, h, "perplexity") and below(row, h, "real_words"),
                f"{name} reaches human perplexity but misspells")
    within = {name: sum(overlap(row, h, key) for key, _, _ in COLUMNS) for name, row in rows.items() if name != HUMAN}
    best = max(within.values())
    closest = [name for name, n in within.items() if n == best]
    pct = lambda x: f"{100 * x:.0f}%"  # noqa: E731
    return f"""{README_BEGIN}
{markdown_table(rows)}

Each value is followed by its 95% bootstrap interval over the 40 prompts (`python study.py`
resamples them 1,000 times): two rows whose intervals overlap are not told apart by this study.
Perplexity: of the continuation under the model; distinct-n: unique word n-grams / all word
n-grams; repetition: share of words that complete a 4-word sequence already written; real words:
share of words that occur in the training text (`metrics.py` has the formulas).

**What reproduces.** Maximisation degenerates: greedy and beam search write the text the model
finds most likely (perplexity {g['perplexity']:.2f} and {b['perplexity']:.2f}, against {h['perplexity']:.2f} for the real text), the least
varied (distinct-1 {g['distinct_1']:.2f} and {b['distinct_1']:.2f} against {h['distinct_1']:.2f}), and {pct(g['repetition'])} and {pct(b['repetition'])} of their words
complete a 4-word sequence they already wrote (real text: {100 * h['repetition']:.1f}%); every one of these
differences lies outside the intervals. A repetition penalty of 1.3 on greedy helps
({100 * pen['repetition']:.1f}% repeats) but does not close the gap. The distinct-1 interval of {len(diverse)} of the
{len(TRUNCATED)} samplers that shrink the tail ({', '.join(diverse)}; temperature lowers it, the others cut it) overlaps the real text's, with no
repeats, and {len(spell)} of them ({', '.join(spell)}) spell better than pure sampling
({pct(pure['real_words'])} real words; their intervals lie above it).

**What does not.** On 65 symbols pure sampling does not wander off in perplexity: its samples
score {pure['perplexity']:.2f}, *below* the real text's {h['perplexity']:.2f} (in the paper's Table 1, GPT-2 Large's pure
samples scored 22.73 against 12.38 for human text); the unlikely tail shows up only as misspelt words. None of the samplers
that shrink the tail reaches human perplexity, so nucleus sampling is not clearly the closest to human text here. Beam
search repeats more than greedy, where the paper found the opposite. Top-p 0.9 and 0.95 differ by
less than their noise in {len(same_p)} of the {len(COLUMNS)} measures; typical 0.9 behaves like top-p 0.9
(notebook 6 shows why).

**Today's samplers.** DRY on greedy ends its loops ({pct(dry['repetition'])} repeats) and varies its words
more than the repetition penalty does (distinct-1 {dry['distinct_1']:.3f} against {pen['distinct_1']:.3f}), at a perplexity
of {dry['perplexity']:.2f}, still far from the real text's. XTC and sampling with a
repetition penalty reach the real text's perplexity ({xtc['perplexity']:.2f} and {sp['perplexity']:.2f}) but misspell
({pct(1 - xtc['real_words'])} and {pct(1 - sp['real_words'])} of their words are not in the training text, against
{pct(1 - h['real_words'])} for the real text): matching one statistic is not enough. Counting the measures whose
interval overlaps the real text's, the closest rows are {', '.join(closest)} ({best} of {len(COLUMNS)}).
{README_END}"""


def write_readme(rows, path):
    """Replace the README's study section (between its markers) with readme_section(rows)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    new = text[:start] + readme_section(rows) + text[end:]
    write_atomically(path, lambda f: f.write(new.encode("utf-8")))


def label_points(ax, points, names, colors, marker_sizes):
    """Write each name to the right of its point (x, y), inside the axes; a label that would
    cover a point or a label already written moves up or down to the nearest free place, with
    a thin line back to its point."""
    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    taken = [Bbox.from_bounds(*ax.transData.transform(point) - size / 2, size, size)  # the markers, in pixels
             for point, size in zip(points, marker_sizes)]

    def text_box(label, shift):
        """Where the text alone (without its line) lands, shift points above the point."""
        label.xyann = (9, shift)
        label.update_positions(renderer)
        return Text.get_window_extent(label, renderer)

    for (x, y), name, color in sorted(zip(points, names, colors), key=lambda p: p[0]):
        label = ax.annotate(name, (x, y), xytext=(9, 0), textcoords="offset points", va="center",
                            fontsize=12, color=color, arrowprops=dict(arrowstyle="-", color="dimgrey", lw=0.8))
        label.set_in_layout(False)
        for shift in [0] + [sign * 4 * step for step in range(1, 100) for sign in (1, -1)]:  # 0, 4, -4, 8 ... points
            box = text_box(label, shift)
            if inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1) and \
                    not any(box.overlaps(other) for other in taken):
                break
        else:  # no free place: beside the point after all
            box = text_box(label, 0)
        taken.append(box)


def plot(rows, path, title):
    """Perplexity against distinct-1 (distinct-2 and -3 are near 1 for every sampling strategy):
    one labelled point per strategy with its 95% intervals, the human text as a red star with
    dashed lines through it."""
    fig, ax = plt.subplots(figsize=(13, 8))
    for name, row in rows.items():
        color = "crimson" if name == HUMAN else "tab:blue"
        ax.errorbar(row["perplexity"], row[Y], color=color, alpha=0.45, lw=1.5, zorder=2,  # the 95% intervals
                    xerr=[[row["perplexity"] - row["perplexity_low"]], [row["perplexity_high"] - row["perplexity"]]],
                    yerr=[[row[Y] - row[f"{Y}_low"]], [row[f"{Y}_high"] - row[Y]]])
        if name == HUMAN:
            ax.scatter(row["perplexity"], row[Y], marker="*", s=600, color="crimson", zorder=3)
            ax.axvline(row["perplexity"], color="crimson", linestyle="--", alpha=0.5)
            ax.axhline(row[Y], color="crimson", linestyle="--", alpha=0.5)
        else:
            ax.scatter(row["perplexity"], row[Y], s=90, color="tab:blue", zorder=3)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))  # 2, 3, 4 rather than 2x10^0
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlim(right=ax.get_xlim()[1] * 2)  # room for the labels of the rightmost points
    ax.margins(y=0.15)
    ax.set_xlabel("perplexity under the model (log scale)   →  text the model finds less likely", fontsize=14)
    ax.set_ylabel(Y_LABEL, fontsize=14)
    ax.set_title(title, fontsize=16)
    ax.tick_params(which="both", labelsize=12)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    label_points(ax, [(row["perplexity"], row[Y]) for row in rows.values()], list(rows),
                 ["crimson" if name == HUMAN else "black" for name in rows],
                 [28 if name == HUMAN else 12 for name in rows])
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.readme:
        write_readme(read_csv(DEFAULT_CSV), README)
        print(f"rewrote the study section of {README}")
        return 0
    matplotlib.use("Agg")  # draw to files, no window
    started = time.time()
    try:
        model, meta, _ = checkpoint.load(args.ckpt)
        text = load_text(args.data)
        prompts, humans, vocabulary = make_prompts(text, meta["stoi"], args.num_prompts, args.prompt_length,
                                                   args.length)
    except checkpoint.CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: --data: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    rows = run_study(model, meta, prompts, humans, vocabulary, args.length, args.seed)
    print(markdown_table(rows))
    title = (f"Which decoding writes most like Shakespeare? "
             f"{args.num_prompts} prompts x {args.length} characters")
    for path, write in ((args.out_csv, lambda path: write_csv(rows, path)),
                        (args.out_plot, lambda path: plot(rows, path, title))):
        try:
            if path:
                write(path)
        except OSError as e:
            print(f"error: cannot write {path}: {e.strerror}", file=sys.stderr)
            return 1
    if args.out_csv == DEFAULT_CSV:  # the committed results: the README quotes them as the file holds them
        write_readme(read_csv(DEFAULT_CSV), README)
    written = " and ".join(path for path in (args.out_csv, args.out_plot) if path) or "no file"
    print(f"\nwrote {written}; took {time.time() - started:.0f} s "
          f"({args.num_prompts} prompts x {args.length} new characters, {len(STRATEGIES)} strategies)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
