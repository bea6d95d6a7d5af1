"""
Sample from a trained model, and watch how the next character is chosen.

    python sample.py                                   # the shipped model, pure sampling
    python sample.py --start "ROMEO:" --temperature 0.8 --top_k 10
    python sample.py --temperature 0                   # greedy
    python sample.py --num_beams 4                     # beam search
    python sample.py --walkthrough                     # the lesson: five methods, step by step
    python sample.py --walkthrough --top_p 0.9         # one strategy, step by step
    python sample.py --compare                         # every strategy on the same prompt

In --start, \\n stands for a newline.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

import checkpoint
import metrics
import sampling
from sampling import Decoding

ARTICLE_PROMPT = "\nAnd Nero "  # the prompt of the article the lesson follows: ids [0, 13, 52, 42, 1, 26, 43, 56, 53, 1]

# The lesson of --walkthrough: the five methods in the order the article teaches them.
LESSON = [
    ("greedy", "next = argmax(logits)", Decoding(temperature=0)),
    ("multinomial sampling", "next ~ softmax(logits)", Decoding()),
    ("temperature", "next ~ softmax(logits / T): T > 1 flattens, T < 1 sharpens", Decoding(temperature=2.0)),
    ("top-k", "only the k most likely characters stay in the draw", Decoding(temperature=2.0, top_k=5)),
    ("repetition penalty", "characters already in the context: z / theta if z > 0, else z * theta",
     Decoding(temperature=0, repetition_penalty=1.3)),
]

# --compare: the same prompt and seed through each strategy.
COMPARE = [
    ("greedy", Decoding(temperature=0)),
    ("pure sampling", Decoding()),
    ("temperature 0.7", Decoding(temperature=0.7)),
    ("top-k 10", Decoding(top_k=10)),
    ("top-p 0.9", Decoding(top_p=0.9)),
    ("min-p 0.1", Decoding(min_p=0.1)),
    ("greedy + repetition penalty 1.3", Decoding(temperature=0, repetition_penalty=1.3)),
]
COMPARE_BEAMS = 4

DECODING_FLAGS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "repetition_penalty",
                  "frequency_penalty", "presence_penalty", "no_repeat_ngram_size")


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser():
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=checkpoint.DEFAULT_CKPT, help="checkpoint file (ours or nanoGPT's)")
    p.add_argument("--meta", help="meta.pkl with the vocabulary, for checkpoints that do not carry one")
    p.add_argument("--start", help="the prompt (default: a newline; the article's '\\nAnd Nero ' for the lessons)")
    p.add_argument("--num_samples", type=int, default=1, help="samples to draw, decoded together in one batch")
    p.add_argument("--max_new_tokens", type=int, help="characters to generate (default 500; 100 with --walkthrough)")
    p.add_argument("--seed", type=int, default=1337, help="seed of the draws: the same seed gives the same text")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    g = p.add_argument_group("decoding (applied in this order)")
    g.add_argument("--repetition_penalty", type=float, help="CTRL: divide seen characters' positive logits by this, multiply negative ones (default 1: off)")
    g.add_argument("--frequency_penalty", type=float, help="subtract this times how often a character was generated (-2..2, default 0)")
    g.add_argument("--presence_penalty", type=float, help="subtract this once from every character generated so far (-2..2, default 0)")
    g.add_argument("--no_repeat_ngram_size", type=int, help="never repeat a run of this many characters (default 0: off)")
    g.add_argument("--temperature", type=float, help="divide the logits by this; 0 is greedy (default 1)")
    g.add_argument("--top_k", type=int, help="keep only the k most likely characters")
    g.add_argument("--top_p", type=float, help="keep the most likely characters until their probability reaches p (nucleus)")
    g.add_argument("--min_p", type=float, help="keep characters at least min_p times as likely as the most likely one")
    g.add_argument("--typical_p", type=float, help="keep the characters of typical surprise until their mass reaches p")
    g.add_argument("--num_beams", type=int, default=1, help="beam search with this many beams (1: off)")
    g.add_argument("--length_penalty", type=float, default=1.0, help="beam score = log-probability / length^this")
    g.add_argument("--no_cache", action="store_true", help="recompute the whole context at every step (slow, for comparison)")
    m = p.add_argument_group("lessons")
    m.add_argument("--walkthrough", action="store_true", help="print ids, shapes and the candidates after each stage, step by step")
    m.add_argument("--steps", type=int, default=3, help="steps shown in detail by --walkthrough")
    m.add_argument("--compare", action="store_true", help="decode the prompt with each strategy, one after another")
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_new_tokens is None:
        args.max_new_tokens = 100 if args.walkthrough or args.compare else 500
    for name in ("max_new_tokens", "steps"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.num_samples < 1:
        parser.error(f"--num_samples must be >= 1, got {args.num_samples}")
    if args.num_beams < 1:
        parser.error(f"--num_beams must be >= 1, got {args.num_beams}")
    if args.walkthrough and args.compare:
        parser.error("choose one of --walkthrough and --compare")
    chosen = {k: getattr(args, k) for k in DECODING_FLAGS if getattr(args, k) is not None}
    try:
        args.decoding = Decoding(**chosen)
    except ValueError as e:
        parser.error(f"--{e}")
    args.lesson = args.walkthrough and not chosen  # no decoding flags: the five-method lesson
    if args.start is None:
        args.start = ARTICLE_PROMPT if args.walkthrough or args.compare else "\n"
    args.start = args.start.replace("\\n", "\n")
    return args


def visible(text):
    """Make whitespace visible: newline -> '⏎', space -> '·'."""
    return text.replace("\n", "⏎").replace(" ", "·")


# ----------------------------------------------------------------------------- plain sampling

def print_samples(model, idx, args, itos):
    """Decode num_samples rows in one batch; the first streams as it is generated. Sample i is
    drawn with seed + i, so it equals the single sample of a run with --seed seed+i."""
    rows = idx.repeat(args.num_samples, 1)  # (N, T)
    generators = [torch.Generator(args.device).manual_seed(args.seed + i) for i in range(args.num_samples)]
    print(checkpoint.decode(idx[0], itos), end="", flush=True)
    new = []
    for next_ids in sampling.stream(model, rows, args.max_new_tokens, args.decoding, generators,
                                    use_cache=not args.no_cache):  # (N, 1) each step
        new.append(next_ids)
        print(itos[next_ids[0, 0].item()], end="", flush=True)
    print()
    if args.num_samples > 1 and new:
        others = torch.cat(new, dim=1)[1:]  # (N - 1, max_new_tokens)
        for ids in others:
            print("---------------")
            print(checkpoint.decode(idx[0], itos) + checkpoint.decode(ids, itos))


def print_beams(model, idx, args, itos):
    ignored = [f"--{k}" for k in DECODING_FLAGS if getattr(args, k) is not None]
    if ignored:
        print(f"note: beam search keeps the most likely sequences and ignores {', '.join(ignored)}", file=sys.stderr)
    beams, scores = sampling.beam_search(model, idx, args.max_new_tokens, args.num_beams, args.length_penalty,
                                         use_cache=not args.no_cache)
    for i in range(min(args.num_samples, args.num_beams)):
        if i:
            print("---------------")
        print(f"[beam {i + 1} of {args.num_beams}, log-probability / length^{args.length_penalty:g} "
              f"= {scores[i].item():.4f}]")
        print(checkpoint.decode(beams[i], itos))


# ----------------------------------------------------------------------------- --walkthrough

def candidates_table(logits, itos, rows=6):
    """The most likely characters of logits (V,): character, logit, probability."""
    probs = F.softmax(logits, dim=-1)  # (V,)
    kept = int(torch.isfinite(logits).sum())
    lines = [f"      {'char':<6}{'logit':>8}{'prob':>8}    ({kept} of {logits.numel()} characters can be drawn)"]
    for i in torch.argsort(probs, descending=True, stable=True)[:rows].tolist():
        lines.append(f"      {visible(itos[i])!r:<6}{logits[i].item():>8.3f}{probs[i].item():>8.3f}")
    return "\n".join(lines)


def walk(model, idx, decoding, args, itos):
    """Decode with `decoding`, printing every stage of the first args.steps steps, then stream."""
    generator = torch.Generator(args.device).manual_seed(args.seed)
    prompt_length = idx.size(1)
    print(f"prompt {visible(checkpoint.decode(idx[0], itos))!r} -> ids {idx[0].tolist()[:12]}"
          f"{' ...' if prompt_length > 12 else ''}, shape {tuple(idx.shape)}")
    if args.steps == 0:
        print(checkpoint.decode(idx[0], itos), end="", flush=True)
    for step in range(args.max_new_tokens):
        context = idx[:, -model.config.block_size:]  # (1, T)
        with torch.no_grad():
            all_logits, _ = model(context)  # (1, T, V)
        logits = all_logits[:, -1, :]  # (1, V): the prediction after the last character
        detailed = step < args.steps
        if detailed:
            print(f"\nstep {step + 1}: ids {tuple(context.shape)} -> model -> logits {tuple(all_logits.shape)}"
                  f" -> last position {tuple(logits.shape)}")
            print("   softmax(logits):\n" + candidates_table(logits[0], itos))
        for name, stage in decoding.stages(prompt_length):
            new_logits = stage(logits, idx)
            if detailed and not torch.equal(new_logits, logits):
                print(f"   after {name}:\n" + candidates_table(new_logits[0], itos))
            logits = new_logits
        next_id = decoding.choose(logits, generator)  # (1, 1)
        idx = torch.cat((idx, next_id), dim=1)  # (1, T + 1)
        if detailed:
            how = "argmax" if decoding.is_greedy else "drawn"
            print(f"   {how}: {visible(itos[next_id.item()])!r} (id {next_id.item()})  "
                  f"sequence {tuple(idx.shape)}: {visible(checkpoint.decode(idx[0], itos))[-60:]!r}")
            if step + 1 == min(args.steps, args.max_new_tokens):
                print("\n...the remaining characters, chosen the same way:\n")
                print(checkpoint.decode(idx[0], itos), end="", flush=True)
        else:
            print(itos[next_id.item()], end="", flush=True)
    print()


def walkthrough(model, idx, args, itos):
    """The five-method lesson, or the one strategy the decoding flags chose."""
    if not args.lesson:
        walk(model, idx, args.decoding, args, itos)
        return
    for number, (name, formula, decoding) in enumerate(LESSON, 1):
        flags = describe(decoding) or "--temperature 1"
        print(f"\n{'=' * 78}\n{number}. {name}: {formula}\n   python sample.py --walkthrough {flags}\n{'=' * 78}")
        walk(model, idx, decoding, args, itos)


def describe(decoding):
    """The sample.py flags that select `decoding`."""
    default = Decoding()
    return " ".join(f"--{k} {getattr(decoding, k):g}" for k in DECODING_FLAGS
                    if getattr(decoding, k) != getattr(default, k))


# ----------------------------------------------------------------------------- --compare

def summary(text):
    """'87 words, 52 distinct (60%), 12% repeat a 4-gram'"""
    words = metrics.words(text)
    distinct = len(set(words))
    return (f"{len(words)} words, {distinct} distinct ({metrics.distinct_n(words, 1):.0%}), "
            f"{metrics.repetition(words):.0%} repeat an earlier 4-gram")


def compare(model, idx, args, itos):
    prompt = checkpoint.decode(idx[0], itos)
    for name, decoding in COMPARE + [(f"beam search, {COMPARE_BEAMS} beams", None)]:
        if decoding is None:
            beams, _ = sampling.beam_search(model, idx, args.max_new_tokens, COMPARE_BEAMS)
            new, flags = beams[0, idx.size(1):], f"--num_beams {COMPARE_BEAMS}"
        else:
            generator = torch.Generator(args.device).manual_seed(args.seed)
            new = torch.cat(list(sampling.stream(model, idx, args.max_new_tokens, decoding, generator)), dim=1)[0]
            flags = describe(decoding) or "the defaults"
        text = checkpoint.decode(new, itos)
        print(f"=== {name}  ({flags})")
        print(prompt + text)
        print(f"--- {summary(text)}\n")


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    try:
        model, meta, _ = checkpoint.load(args.ckpt, args.device, args.meta)
        idx = torch.tensor([checkpoint.encode(args.start, meta["stoi"])], device=args.device)  # (1, T)
    except checkpoint.CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: --start: {e}", file=sys.stderr)
        return 2
    if idx.size(1) == 0:
        print("error: --start is empty: give at least one character", file=sys.stderr)
        return 2
    itos = meta["itos"]
    if args.walkthrough:
        walkthrough(model, idx, args, itos)
    elif args.compare:
        compare(model, idx, args, itos)
    elif args.num_beams > 1:
        print_beams(model, idx, args, itos)
    else:
        print_samples(model, idx, args, itos)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader closed the pipe (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
