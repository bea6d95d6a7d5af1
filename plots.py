"""
The pictures of the notebooks: next-token distributions as bar charts, readable on a projector.

    fig, ax = plt.subplots(figsize=(15, 5))
    plots.bar_distribution(ax, probs, itos, highlight=next_id)   # probs (V,)
    plots.save(fig, "greedy_distribution.png")                   # -> docs/figures/

Importing this module sets large fonts for every figure, with the shipped Chinese font as the
fallback for characters the default font lacks. A notebook shows its figures; save()
writes one to a file only when the environment variable NANODECODE_FIGURES names a folder, so
that running a notebook changes no file of the repository.

    python plots.py          # execute the notebooks and write the README's figures to docs/figures/
"""
import glob
import os
import sys

import matplotlib.pyplot as plt
import torch

import cjk
from files import write_atomically
from show import visible

ROOT = os.path.dirname(os.path.abspath(__file__))
DOCS_FIGURES = os.path.join(ROOT, "docs", "figures")

KEPT = "tab:blue"  # a token that can be drawn
CHOSEN = "tab:orange"  # the token picked, or the one the text is about
REMOVED = "lightgrey"  # a token a filter took out of the draw

# The words this module writes on the axes itself, in each language of the notebooks.
WORDS = {
    "en": {"next": "next character", "probability": "probability", "chosen": "the character chosen at each step",
           "kept": "characters kept", "step": "step (characters generated)", "prompt": "prompt", "beam": "beam {}"},
    "zh": {"next": "下一个字符", "probability": "概率", "chosen": "每一步选中的字符", "kept": "保留的字符数",
           "step": "步（已生成的字符数）", "prompt": "提示词", "beam": "第 {} 束"},
}
words = WORDS["en"]

cjk.use_chinese_font()  # 小 冬 瓜 and Chinese labels draw as characters, from fonts/, on any machine
plt.rcParams.update({
    "figure.dpi": 80,  # inline output: small files, still sharp
    "font.size": 14,
    "axes.titlesize": 17,
    "axes.labelsize": 15,
    "xtick.labelsize": 13,
    "ytick.labelsize": 13,
    "legend.fontsize": 13,
    "axes.spines.top": False,
    "axes.spines.right": False,
})


def use_language(language):
    """Write the axis labels of this module's figures in `language`: "en" or "zh" (notebooks/zh)."""
    global words
    if language not in WORDS:
        raise ValueError(f"language must be one of {', '.join(WORDS)}, got {language!r}")
    words = WORDS[language]


def save(fig, name, dpi=100):
    """Write fig as $NANODECODE_FIGURES/name and return the path; None (nothing written) when the
    variable is not set."""
    folder = os.environ.get("NANODECODE_FIGURES")
    if not folder:
        return None
    path = os.path.join(folder, name)
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"))
    return path


def labels(ids, itos):
    """The characters of ids, whitespace made visible: [0, 1, 13] -> ['⏎', '·', 'A']."""
    return [visible(itos[int(i)]) for i in ids]


def bar_distribution(ax, probs, itos, highlight=None, removed=None, ids=None, title=None):
    """Bars of a distribution probs (V,) over characters.

    highlight: an id or a list of ids drawn in orange (the chosen token).
    removed: a bool mask (V,) of tokens a filter removed, drawn in grey.
    ids: the tokens to show, in that order (default: the whole vocabulary in id order)."""
    ids = torch.arange(len(probs)) if ids is None else torch.as_tensor(ids)
    highlight = set(torch.as_tensor(highlight if highlight is not None else []).flatten().tolist())
    colors = [CHOSEN if i in highlight else REMOVED if removed is not None and removed[i] else KEPT
              for i in ids.tolist()]
    ax.bar(range(len(ids)), probs[ids].tolist(), color=colors, edgecolor="black", linewidth=0.3)
    ax.set_xticks(range(len(ids)), labels(ids, itos))
    ax.set_xlim(-0.7, len(ids) - 0.3)
    ax.set(xlabel=words["next"], ylabel=words["probability"], title=title)
    return ax


def grouped_bars(ax, series, names, colors=None, title=None, ylabel=None, fmt=None):
    """Several series side by side for each name: series {label: values (N,)}, names (N,) tick labels.

    ylabel: the y axis' label (default: probability). fmt: a format such as "{:.2f}" to print each
    value above its bar (for a few bars only)."""
    width = 0.8 / len(series)
    for j, (label, values) in enumerate(series.items()):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(names))]
        bars = ax.bar(xs, list(map(float, values)), width, label=label,
                      color=None if colors is None else colors[j], edgecolor="black", linewidth=0.3)
        if fmt:
            ax.bar_label(bars, [fmt.format(float(v)) for v in values], fontsize=11, padding=2)
            ax.margins(y=0.25)
    ax.set_xticks(range(len(names)), names)
    ax.set(ylabel=ylabel or words["probability"], title=title)
    ax.legend()
    return ax


def kept_count_curve(ax, counts, text, title=None):
    """How many tokens each filter keeps at each step of a text: counts {label: (N,)}, text of N
    characters, the one chosen at each step, written under its step."""
    for label, values in counts.items():
        ax.step(range(len(text)), list(map(int, values)), where="mid", label=label, lw=2.5)
    ax.set_xticks(range(len(text)), [visible(c) for c in text], fontsize=11)
    ax.set(xlabel=words["chosen"], ylabel=words["kept"], title=title)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right")
    return ax


def beam_tree(ax, steps, itos, finals, title=None):
    """The beams of a beam search after each step, as a tree.

    steps: for step t = 1..N, the beams after t steps, each a tuple of generated ids (best first).
    A node is the last character of a beam, joined to the beam it extends; the beams that lead
    to one of `finals` (tuples of generated ids) are drawn in colour, the abandoned ones in grey."""
    alive = {final[:t] for final in finals for t in range(1, len(final) + 1)}
    place = {(): (0, (len(steps[0]) - 1) / 2)}  # the prompt, at step 0
    for t, beams in enumerate(steps, 1):
        for rank, beam in enumerate(beams):
            place[beam] = (t, rank)
            (x0, y0), on = place[beam[:-1]], beam in alive
            ax.plot([x0, t], [y0, rank], color=KEPT if on else REMOVED, lw=3 if on else 1.5, zorder=1.5 if on else 1)
            ax.scatter(t, rank, s=900, color="white", edgecolor=KEPT if on else REMOVED, lw=2, zorder=2)
            ax.text(t, rank, visible(itos[beam[-1]]), ha="center", va="center", fontsize=16,
                    color="black" if on else "grey", zorder=3)
    ax.scatter(0, place[()][1], s=900, color=CHOSEN, zorder=2)
    ax.text(0, place[()][1] + 0.35, words["prompt"], ha="center", va="top", fontsize=12)
    ax.set_xticks(range(len(steps) + 1))
    ax.set_yticks(range(len(steps[0])), [words["beam"].format(r + 1) for r in range(len(steps[0]))])
    ax.set_ylim(len(steps[0]) - 0.5, -0.5)  # beam 1 on top
    ax.set(xlabel=words["step"], title=title)
    ax.spines[["left", "bottom"]].set_visible(False)
    ax.tick_params(length=0)
    return ax


def main():
    """Execute every notebook with NANODECODE_FIGURES=docs/figures: the figures they save are the README's."""
    import nbformat
    from nbclient import NotebookClient

    os.environ["NANODECODE_FIGURES"] = DOCS_FIGURES
    for path in sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb"))):
        print(f"running {os.path.relpath(path, ROOT)}", flush=True)
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, kernel_name="python3", timeout=600,
                       resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    print(f"figures written to {os.path.relpath(DOCS_FIGURES, ROOT)}/")


if __name__ == "__main__":
    sys.exit(main())
