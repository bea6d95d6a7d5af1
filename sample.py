"""
Sample from a trained model, and watch how the next character is chosen.

    python sample.py                                   # the shipped model, pure sampling
    python sample.py --start "ROMEO:" --temperature 0.8 --top_k 10
    python sample.py --temperature 0                   # greedy
    python sample.py --temperature 0 --dry_multiplier 0.8   # greedy, kept out of its loops
    python sample.py --stop "\\n\\n" --num_samples 3      # three speeches, each ending at a blank line
    python sample.py --num_beams 4 --stop "\\n\\n"        # beam search over whole speeches
    python sample.py --logprobs 3 --max_new_tokens 20  # each character's log-probability
    python sample.py --walkthrough                     # the lesson: five methods, step by step
    python sample.py --walkthrough --top_p 0.9         # one strategy, step by step
    python sample.py --walkthrough --lang zh           # the lesson, explained in Chinese
    python sample.py --compare                         # every strategy on the same prompt
    python sample.py --draft checkpoints/draft.pt      # speculative decoding: same text distribution, faster
    python sample.py --draft ngram --walkthrough       # each round: drafts, p and q, accepted or not
    python sample.py --draft prompt_lookup             # drafts copied from the text itself
    python sample.py --draft medusa                    # drafts from heads on the model's own hidden state
    python sample.py --watermark 2 > out.txt           # a watermarked text (Kirchenbauer et al. 2023)
    python sample.py --detect out.txt                  # its z-score: watermarked when z > 4

In --start, --stop, --logit_bias, --dry_sequence_breakers, --negative_prompt and --regex, \\n stands for a
newline.
"""
import argparse
import os
import re
import sys
import time
from dataclasses import fields, replace

import cli

cli.require_torch_and_numpy()  # before torch is imported: one line, not pages, on a pair that cannot work

import torch
import torch.nn.functional as F

import checkpoint
import metrics
import sampling
import speculative
from sampling import Decoding
from show import candidates_table, logprobs_table, visible

ARTICLE_PROMPT = "\nAnd Nero "  # the prompt of the article the lesson follows: ids [0, 13, 52, 42, 1, 26, 43, 56, 53, 1]

# The lesson of --walkthrough: the five methods in the order the article teaches them, with
# their name and rule in English and in Chinese (--lang zh).
LESSON = [
    (("greedy", "next = argmax(logits)"), ("贪心解码", "下一个 = argmax(logits)"), Decoding(temperature=0)),
    (("multinomial sampling", "next ~ softmax(logits): one categorical draw"),
     ("多项分布采样", "下一个 ~ softmax(logits)：按概率抽一次（类别分布）"), Decoding()),
    (("temperature", "next ~ softmax(logits / τ): τ > 1 flattens, τ < 1 sharpens"),
     ("温度", "下一个 ~ softmax(logits / τ)：τ > 1 更平，τ < 1 更尖"), Decoding(temperature=2.0)),
    (("top-k", "only the k most likely characters stay in the draw"),
     ("Top-K", "只有概率最大的 k 个字符留下来参与抽样"), Decoding(temperature=2.0, top_k=5)),
    (("repetition penalty", "characters already in the context: z / θ if z > 0, else z · θ (Hugging Face's rule)"),
     ("重复性惩罚", "上下文里已出现的字符：z > 0 时 z / θ，否则 z · θ（Hugging Face 的规则）"),
     Decoding(temperature=0, repetition_penalty=1.3)),
]

# What --walkthrough prints around the numbers, in each language of --lang.
WORDS = {
    "en": {"prompt": "prompt", "ids": "ids", "shape": "shape", "step": "step {}", "model": "model",
           "cache": " + KV cache", "last": "last position", "after": "after {}:", "chose": "chose",
           "id": "id", "sequence": "sequence", "rest": "...the remaining characters, chosen the same way:",
           "empty": "nothing left to draw: the sample ends here", "drawn": "{} of {} characters can be drawn",
           "order": "the same settings in {}'s order (--order {}) end with another distribution "
                    "(total variation {:.3f}):", "hf": "Hugging Face"},
    "zh": {"prompt": "提示词", "ids": "编号", "shape": "形状", "step": "第 {} 步", "model": "模型",
           "cache": " + KV 缓存", "last": "最后一个位置", "after": "经过 {} 之后：", "chose": "选中",
           "id": "编号", "sequence": "序列", "rest": "……其余的字符，用同样的方法选出：",
           "empty": "没有可抽的字符了：这个样本到此结束", "drawn": "{1} 个字符中有 {0} 个可以被抽到",
           "order": "同样的设置按 {} 的顺序（--order {}）会得到另一个分布（总变差 {:.3f}）：",
           "hf": "Hugging Face"},
}

# --compare: the same prompt and seed through each strategy.
COMPARE = [
    ("greedy", Decoding(temperature=0)),
    ("pure sampling", Decoding()),
    ("temperature 0.7", Decoding(temperature=0.7)),
    ("top-k 10", Decoding(top_k=10)),
    ("top-p 0.9", Decoding(top_p=0.9)),
    ("min-p 0.1", Decoding(min_p=0.1)),
    ("greedy + repetition penalty 1.3", Decoding(temperature=0, repetition_penalty=1.3)),
    ("greedy + DRY 0.8", Decoding(temperature=0, dry_multiplier=0.8)),
]
COMPARE_BEAMS = 4
MAX_SAMPLES = 1000  # rows decoded together; each holds a KV cache of about 1 MB for the shipped model
MAX_BEAMS = 64
MAX_SEED = 2 ** 63 - 1 - MAX_SAMPLES  # torch seeds are 64-bit; sample i uses seed + i
MAX_DRAFT_TOKENS = 16
MAX_TREE_WIDTH = 3  # 3 + 9 + 27 + 81 = 120 candidates for 4 heads


# ----------------------------------------------------------------------------- flags

def parse_bias(text):
    """'e:-5,z:+2' -> (('e', -5.0), ('z', 2.0)); a character may be ',' or ':' itself, '\\n' a newline."""
    text, entries, at = cli.unescape(text), [], 0
    entry = re.compile(r"(.):([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:,|$)", re.DOTALL)
    while at < len(text):
        match = entry.match(text, at)
        if not match:
            raise argparse.ArgumentTypeError(f"write CHAR:BIAS entries separated by commas, as 'e:-5,z:+2', "
                                             f"not {text[at:]!r}")
        entries.append((match[1], float(match[2])))
        at = match.end()
    if not entries:
        raise argparse.ArgumentTypeError("give at least one CHAR:BIAS entry, as 'e:-5'")
    return tuple(entries)


FLAG_TYPES = {"bias": parse_bias, str: cli.unescape}  # Decoding's kinds that are not plain int or float


def add_decoding_flags(group):
    """One flag per field of sampling.Decoding, with its help and range, in the order of the stages."""
    for f in fields(Decoding):
        rule = f"{f.metadata['rule']}; " if f.metadata["rule"] else ""
        default = "none" if f.default in (None, ()) else repr(f.default) if isinstance(f.default, str) else f.default
        options = dict(type=FLAG_TYPES.get(f.metadata["kind"], f.metadata["kind"]), help=f"{f.metadata['help']} ({rule}default {default})")
        if f.name == "stop":
            options["action"] = "append"
        if f.name == "order":
            options["choices"] = sampling.ORDERS
        group.add_argument(f"--{f.name}", **options)


def build_parser():
    p = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=checkpoint.DEFAULT_CKPT, help="checkpoint file (ours or nanoGPT's)")
    p.add_argument("--meta", help="meta.pkl with the vocabulary, for checkpoints that do not carry one")
    p.add_argument("--start", type=cli.unescape,
                   help="the prompt (default: a newline; the article's '\\nAnd Nero ' for the lessons)")
    p.add_argument("--num_samples", type=int, default=1,
                   help=f"samples to draw, decoded together in one batch (at most {MAX_SAMPLES})")
    p.add_argument("--max_new_tokens", type=int, help="characters to generate (default 500; 100 with --walkthrough)")
    p.add_argument("--seed", type=int, default=1337, help="seed of the draws: the same seed gives the same text")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    p.add_argument("--logprobs", type=int, default=0,
                   help="after each sample, every character's log-probability and the K most likely "
                        "alternatives, from the distribution it was drawn from (after every stage; greedy: after "
                        "the penalties, at temperature 1, in order hf; in order llama.cpp its temperature 0 keeps "
                        "the argmax alone, whose log-probability is 0)")
    g = p.add_argument_group("decoding (the stages, in Hugging Face's order; a stage at its default is off)")
    add_decoding_flags(g)
    b = p.add_argument_group("beam search")
    b.add_argument("--num_beams", type=int, default=1, help=f"beam search with this many beams (1: off; at most {MAX_BEAMS})")
    b.add_argument("--length_penalty", type=float, default=1.0,
                   help="finished hypothesis score = log-probability / length^this; it matters only when "
                        "hypotheses end at different lengths, that is with --stop (in [-10, 10])")
    b.add_argument("--no_cache", action="store_true", help="recompute the whole context at every step (slow, for comparison)")
    d = p.add_argument_group("speculative decoding (one sample; the text keeps the model's distribution)")
    d.add_argument("--draft", help="who drafts: a small checkpoint of the same vocabulary (checkpoints/draft.pt), "
                                   "'ngram' for the character n-grams of the training text, 'prompt_lookup' "
                                   "to copy what followed the text's last characters in the text itself, or "
                                   "'medusa' for heads on the model's own hidden state (checkpoints/medusa.pt, "
                                   "or a file train_medusa.py wrote)")
    d.add_argument("--num_draft_tokens", type=int, default=speculative.DRAFT_TOKENS,
                   help=f"characters drafted per round, checked in one pass of the model (in [1, {MAX_DRAFT_TOKENS}]; "
                        f"default {speculative.DRAFT_TOKENS})")
    d.add_argument("--tree_width", type=int, default=1,
                   help=f"with Medusa heads: a tree of each head's top W candidates, every path checked in one pass "
                        f"under a tree attention mask (in [1, {MAX_TREE_WIDTH}]; default 1, a chain)")
    m = p.add_argument_group("lessons")
    m.add_argument("--walkthrough", action="store_true", help="print ids, shapes and the candidates after each stage, step by step")
    m.add_argument("--steps", type=int, default=3, help="steps shown in detail by --walkthrough")
    m.add_argument("--compare", action="store_true", help="decode the prompt with each strategy, one after another")
    m.add_argument("--lang", choices=list(WORDS), default="en", help="the language of --walkthrough: en or zh (中文)")
    w = p.add_argument_group("watermark detection")
    w.add_argument("--detect", metavar="FILE",
                   help="generate nothing: score the UTF-8 text in FILE for the watermark of --watermark, with "
                        "the writer's --watermark_gamma, and print one line: characters scored, green ones, "
                        f"z-score, and the verdict z > {sampling.WATERMARK_THRESHOLD:g} (Kirchenbauer et al. 2023)")
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_new_tokens is None:
        args.max_new_tokens = 100 if args.walkthrough or args.compare else 500
    ranges = [("max_new_tokens", 0, 1_000_000), ("steps", 0, 1_000_000), ("num_samples", 1, MAX_SAMPLES),
              ("num_beams", 1, MAX_BEAMS), ("seed", 0, MAX_SEED), ("logprobs", 0, 1_000_000),
              ("num_draft_tokens", 1, MAX_DRAFT_TOKENS), ("tree_width", 1, MAX_TREE_WIDTH)]
    for name, low, high in ranges:
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name} must be in [{low}, {high}], got {getattr(args, name)}")
    if not -10 <= args.length_penalty <= 10:
        parser.error(f"--length_penalty must be in [-10, 10], got {args.length_penalty}")
    if args.walkthrough and args.compare:
        parser.error("choose one of --walkthrough and --compare")
    chosen = {f.name: getattr(args, f.name) for f in fields(Decoding) if getattr(args, f.name) is not None}
    chosen["stop"] = tuple(chosen.get("stop", ()))
    try:
        args.decoding = Decoding(**chosen)
    except ValueError as e:
        named = str(e).split()[0] in chosen
        parser.error(("--" if named else "") + str(e))
    if args.detect is not None:
        others = [flag for flag, given in [("--walkthrough", args.walkthrough), ("--compare", args.compare),
                                           ("--draft", args.draft is not None), ("--num_beams", args.num_beams > 1),
                                           ("--num_samples", args.num_samples > 1), ("--start", args.start is not None)]
                  if given] + [f"--{name}" for name in args.decoding.changed() if name != "watermark_gamma"]
        if others:
            parser.error(f"--detect scores a file and generates nothing: drop {', '.join(others)}")
    if args.num_beams > 1 and args.decoding.penalty_alpha:
        parser.error("--penalty_alpha: contrastive search chooses one character at a time: drop --num_beams")
    if args.draft is not None:
        problem = speculative_conflict(args)
        if problem:
            parser.error(problem)
    elif args.tree_width > 1:
        parser.error("--tree_width: trees are made of Medusa heads' candidates: use --draft medusa")
    args.lesson = args.walkthrough and not args.decoding.changed()  # no decoding flags: the five-method lesson
    if args.start is None:
        args.start = ARTICLE_PROMPT if args.walkthrough or args.compare else "\n"
    return args


def check_device(name):
    """A one-line error for a device PyTorch cannot use here, or None."""
    try:
        device = torch.device(name)
    except RuntimeError:
        return f"--device {name!r} is not a device PyTorch knows (cpu, cuda, cuda:1, mps)"
    if device.type == "cuda" and not torch.cuda.is_available():
        return f"--device {name}: PyTorch sees no CUDA GPU on this machine"
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        return f"--device {name}: there are {torch.cuda.device_count()} CUDA devices"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {name}: PyTorch sees no Apple GPU (MPS) on this machine"
    return None


def check_vocabulary(args, stoi):
    """A one-line error for a flag that names characters the model does not know, or None."""
    named = [("--start", args.start), ("--logit_bias", "".join(c for c, _ in args.decoding.logit_bias)),
             *(("--stop", s) for s in args.decoding.stop), ("--negative_prompt", args.decoding.negative_prompt or "")]
    for flag, text in named:
        try:
            checkpoint.encode(text, stoi)
        except ValueError as e:
            return f"{flag}: {e}"
    if not args.start:
        return "--start is empty: give at least one character"
    if args.logprobs > len(stoi):
        return f"--logprobs must be in [0, {len(stoi)}] (the vocabulary's size), got {args.logprobs}"
    pattern = args.decoding.regex
    if pattern and not any(sampling.can_follow(pattern, "", sampling.characters(stoi))):
        return f"--regex {pattern!r}: no character of the vocabulary can begin a match"
    return None


# ----------------------------------------------------------------------------- plain sampling

def cut_stop(text, stops):
    """text less the stop string it ends with, if any."""
    for stop in stops:
        if text.endswith(stop):
            return text[:len(text) - len(stop)]
    return text


def pending(text, stops):
    """How many characters at the end of text may still turn out to begin a stop string."""
    return max((k for stop in stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)


def pattern_matched(decoding, text, stoi):
    """True when text matches --regex in full and no character can extend it: where it ends."""
    return bool(decoding.regex) and sampling.matched(decoding.regex, text, sampling.characters(stoi))


def row_ids(steps, row):
    """The ids a row was given, step by step, up to where it finished: (n,)."""
    return torch.tensor([i for step in steps if (i := step.ids[row, 0].item()) >= 0], dtype=torch.long)


class Streamed:
    """A row's text as it grows, printed as soon as it is certain: all but the stop string it ends
    with once the row has finished, else all but the end that may still begin a stop string."""

    def __init__(self, stops):
        self.stops, self.text, self.shown = stops, "", 0

    def flush(self, finished):
        ready = len(cut_stop(self.text, self.stops)) if finished else len(self.text) - pending(self.text, self.stops)
        print(self.text[self.shown:ready], end="", flush=True)
        self.shown = max(self.shown, ready)


def print_samples(model, idx, args, itos, stoi):
    """Decode num_samples rows in one batch; the first streams as it is generated. Sample i is
    drawn with seed + i, so it equals the single sample of a run with --seed seed+i."""
    rows = idx.repeat(args.num_samples, 1)  # (N, T)
    generators = [torch.Generator(args.device).manual_seed(args.seed + i) for i in range(args.num_samples)]
    prompt, stops = checkpoint.decode(idx[0], itos), args.decoding.stop
    print(prompt, end="", flush=True)
    steps, first = [], Streamed(stops)
    for step in sampling.stream(model, rows, args.max_new_tokens, args.decoding, generators,
                                use_cache=not args.no_cache, stoi=stoi):
        steps.append(step)
        first.text += itos[step.ids[0, 0].item()] if step.ids[0, 0] >= 0 else ""
        first.flush(step.finished[0])
    print()
    for i in range(args.num_samples):
        ids = row_ids(steps, i)
        text = cut_stop(checkpoint.decode(ids, itos), stops)
        if i:
            print("---------------")
            print(prompt + text)
        if steps and steps[-1].finished[i] and len(text) == len(ids) and not pattern_matched(args.decoding, text, stoi):
            print(f"note: sample {i + 1} ended after {len(ids)} characters: the settings left no character "
                  f"to draw", file=sys.stderr)
        if args.logprobs:
            drawn = [step.logits[i] for step in steps if step.ids[i, 0] >= 0][:len(text)]
            print(f"log-probabilities of sample {i + 1}, from the distribution each character was drawn from:")
            print(logprobs_table(ids[:len(text)], torch.stack(drawn) if drawn else torch.zeros(0, len(itos)),
                                 itos, args.logprobs))


def print_beams(model, idx, args, itos, stoi):
    ignored = [f"--{name}" for name in args.decoding.changed() if name != "stop"]
    if ignored:
        print(f"note: beam search keeps the most likely continuations and ignores {', '.join(ignored)}",
              file=sys.stderr)
    stops = [checkpoint.encode(s, stoi) for s in args.decoding.stop]
    hypotheses = sampling.beam_search(model, idx, args.max_new_tokens, args.num_beams, args.length_penalty,
                                      stops, use_cache=not args.no_cache)
    for i, (ids, score) in enumerate(hypotheses[:args.num_samples]):
        if i:
            print("---------------")
        generated = ids.size(0) - idx.size(1)
        print(f"[beam {i + 1} of {args.num_beams}: log-probability / {generated}^{args.length_penalty:g} = {score:.4f}]")
        print(cut_stop(checkpoint.decode(ids, itos), args.decoding.stop))


# ----------------------------------------------------------------------------- --walkthrough

def print_step(number, events, step, context, itos, cached, words):
    """One step in detail, from the events stream() reported: the ids fed to the model, its
    logits, every stage that changed them, and the character chosen."""
    fed, logits = dict(events)["ids"], dict(events)["logits"]
    table = lambda z: candidates_table(z[0], itos, drawn=words["drawn"])  # noqa: E731
    print(f"\n{words['step'].format(number)}: {words['ids']} {tuple(fed.shape)} -> {words['model']}"
          f"{words['cache'] if cached else ''} -> logits {tuple(fed.shape) + (logits.size(-1),)} -> "
          f"{words['last']} {tuple(logits.shape)}")
    print("   softmax(logits):\n" + table(logits))
    before = logits
    for name, after in events[2:]:
        if not torch.equal(after, before):
            print("   " + words["after"].format(name) + "\n" + table(after))
        before = after
    chosen = step.ids[0, 0].item()
    if chosen < 0:
        print("   " + words["empty"])
        return
    print(f"   {words['chose']}: {visible(itos[chosen])!r} ({words['id']} {chosen})  {words['sequence']} "
          f"{tuple(context.shape)}: {visible(checkpoint.decode(context[0], itos))[-60:]!r}")


def other_order(decoding, events, context, prompt_length, itos, stoi, words):
    """What the same settings give in the other order, on the first step's logits, when it differs
    (not for greedy decoding: Hugging Face's order then applies no warper, see Decoding.ignored)."""
    if decoding.is_random or decoding.is_greedy or decoding.reads_model:  # a Run of their own: not on one step's logits
        return
    other = replace(decoding, order="hf" if decoding.order == "llama.cpp" else "llama.cpp")
    raw = dict(events)["logits"]
    run = sampling.Run(context[:, :-1], prompt_length)
    ours, theirs = events[-1][1], sampling.process(raw, run, other.stages(stoi))
    difference = 0.5 * (F.softmax(ours, -1) - F.softmax(theirs, -1)).abs().sum().item()  # total variation
    if difference > 1e-6:
        name = "llama.cpp" if other.order == "llama.cpp" else words["hf"]
        print("   " + words["order"].format(name, other.order, difference) + "\n"
              + candidates_table(theirs[0], itos, drawn=words["drawn"]))


def walk(model, idx, decoding, args, itos, stoi):
    """Decode with `decoding`, printing every stage of the first args.steps steps, then the rest."""
    generator = torch.Generator(args.device).manual_seed(args.seed)
    prompt, stops, words = checkpoint.decode(idx[0], itos), decoding.stop, WORDS[args.lang]
    print(f"{words['prompt']} {visible(prompt)!r} -> {words['ids']} {idx[0].tolist()[:12]}"
          f"{' ...' if idx.size(1) > 12 else ''}, {words['shape']} {tuple(idx.shape)}")
    events, context, out = [], idx, Streamed(stops)
    if args.steps == 0 or args.max_new_tokens == 0:
        print(prompt, end="")
    for number, step in enumerate(sampling.stream(model, idx, args.max_new_tokens, decoding, generator,
                                                  not args.no_cache, stoi, lambda *event: events.append(event)), 1):
        if step.ids[0, 0] >= 0:
            context = torch.cat((context, step.ids), dim=1)  # (1, T + 1)
            out.text += itos[step.ids[0, 0].item()]
        if number <= args.steps:
            print_step(number, events, step, context, itos, number > 1 and not args.no_cache, words)
            if number == 1:
                other_order(decoding, events, context, idx.size(1), itos, stoi, words)
        if number == min(args.steps, args.max_new_tokens) > 0:
            print(f"\n{words['rest']}\n")
            print(prompt, end="")
        if number >= args.steps:
            out.flush(step.finished[0])
        events.clear()
    print()


def walkthrough(model, idx, args, itos, stoi):
    """The five-method lesson, or the one strategy the decoding flags chose."""
    if not args.lesson:
        walk(model, idx, args.decoding, args, itos, stoi)
        return
    for number, (english, chinese, decoding) in enumerate(LESSON, 1):
        name, formula = chinese if args.lang == "zh" else english
        flags = describe(decoding) or "--temperature 1"
        print(f"\n{'=' * 78}\n{number}. {name}: {formula}\n   python sample.py --walkthrough {flags}\n{'=' * 78}")
        walk(model, idx, decoding, args, itos, stoi)


def describe(decoding):
    """The sample.py flags that select `decoding`: '--temperature 2 --top_k 5'."""
    parts = []
    for name, value in decoding.changed().items():
        values = value if name == "stop" else [sampling.format_bias(value) if name == "logit_bias" else value]
        for v in values:
            shown = repr(v).replace("\\\\", "\\") if isinstance(v, str) else f"{v:g}"
            parts.append(f"--{name} {shown}")
    return " ".join(parts)


# ----------------------------------------------------------------------------- --compare

def summary(text):
    """'87 words, 52 distinct (60%), 12% repeat a 4-gram'"""
    words = metrics.words(text)
    distinct = len(set(words))
    return (f"{len(words)} words, {distinct} distinct ({metrics.distinct_n(words, 1):.0%}), "
            f"{metrics.repetition(words):.0%} repeat an earlier 4-gram")


def compare(model, idx, args, itos, stoi):
    prompt = checkpoint.decode(idx[0], itos)
    for name, decoding in COMPARE + [(f"beam search, {COMPARE_BEAMS} beams", None)]:
        if decoding is None:
            new, flags = sampling.beam_search(model, idx, args.max_new_tokens, COMPARE_BEAMS)[0].ids[idx.size(1):], \
                f"--num_beams {COMPARE_BEAMS}"
        else:
            generator = torch.Generator(args.device).manual_seed(args.seed)
            new = sampling.generate(model, idx, args.max_new_tokens, decoding, generator=generator, stoi=stoi)[0, idx.size(1):]
            flags = describe(decoding) or "the defaults"
        text = checkpoint.decode(new, itos)
        print(f"=== {name}  ({flags})")
        print(prompt + text)
        print(f"--- {summary(text)}\n")


# ----------------------------------------------------------------------------- --draft: speculative decoding

def speculative_conflict(args):
    """A one-line error for a flag --draft cannot honour, or None."""
    others = [("--num_samples", args.num_samples > 1), ("--num_beams", args.num_beams > 1),
              ("--compare", args.compare), ("--logprobs", args.logprobs > 0), ("--no_cache", args.no_cache)]
    named = [flag for flag, given in others if given]
    if named:
        return f"--draft decodes one sample with the KV caches: drop {', '.join(named)}"
    if args.lang != "en":
        return f"--draft explains its rounds in English only: drop --lang {args.lang}"
    if args.tree_width > 1 and args.walkthrough:
        return "--tree_width: the walkthrough explains chains of drafts only: drop --walkthrough"
    try:
        speculative.check_decoding(args.decoding)
    except ValueError as e:
        return f"--draft: {e}"
    return None


def statistics(rounds, seconds):
    """'412 of 530 drafted characters accepted (77.7%), 2.86 characters per pass of the model, 312 characters/s'"""
    drafted, accepted, made, passes = speculative.tally(rounds)
    return (f"speculative decoding: {accepted} of {drafted} drafted characters accepted "
            f"({accepted / max(drafted, 1):.1%}), {made / max(passes, 1):.2f} characters per pass of the model "
            f"({passes} passes), {made / max(seconds, 1e-9):.0f} characters/s")


def print_round(number, r, text, itos, greedy, ending=None):
    """One round in detail: the drafts with q(x) and p(x), which stood, and the model's character;
    `ending` says why the text ends in this round, if it does."""
    drafts, accepted = checkpoint.decode(r.drafted, itos), int(r.verdict.accepted)
    passes = "one pass" if r.passes == 1 else f"{r.passes} passes (its window restarts in this round)"
    print(f"\nround {number}: the drafter proposes {visible(drafts)!r}, the model checks "
          f"{len(drafts)} + 1 positions in {passes}")
    print(f"      {'char':<6}{'q(x)':>8}{'p(x)':>8}" + ("" if greedy else f"{'min(1, p/q)':>13}{'u':>8}"))
    for i, x in enumerate(r.drafted.tolist()):
        q, p = r.verdict.q[i, x].item(), r.verdict.p[i, x].item()
        line = f"   {i + 1:<3}{visible(itos[x])!r:<6}{q:>8.3f}{p:>8.3f}"
        if not greedy:
            line += f"{min(1.0, p / q):>13.3f}{r.verdict.u[i].item():>8.3f}"
        if i < accepted:
            print(line + "   accepted" + (": the model's argmax too" if greedy else ": u < min(1, p/q)"))
        else:
            print(line + "   rejected" + (": not the model's argmax" if greedy else ": u >= min(1, p/q)"))
            break
    if len(r.tokens) > accepted:
        chosen = visible(itos[r.tokens[accepted].item()])
        source = ("the model's argmax" if greedy else
                  f"drawn from the residual norm(max(0, p - q)) at position {accepted + 1}"
                  if accepted < len(drafts) else f"drawn from p at position {len(drafts) + 1}")
        print(f"   {f'all {len(drafts)} accepted; ' if drafts and accepted == len(drafts) else ''}"
              f"then {chosen!r}, {source}")
    if ending:
        print(f"   the text ends here: {ending}")
    print(f"   text: ...{visible(text)[-60:]!r}")


def speculate(model, meta, idx, args):
    """--draft: decode with speculative decoding, every round in detail for --walkthrough's first
    --steps rounds; the statistics go to stderr."""
    try:
        drafter = speculative.load_drafter(args.draft, model, meta, args.device)
    except checkpoint.CheckpointError as e:
        return fail(str(e), 1)
    if args.tree_width > 1:
        if not isinstance(drafter, speculative.MedusaDrafter):
            return fail("--tree_width: trees are made of Medusa heads' candidates: use --draft medusa", 2)
        drafter = speculative.MedusaDrafter(drafter.heads, args.tree_width)
    itos, stops = meta["itos"], args.decoding.stop
    generator = torch.Generator(args.device).manual_seed(args.seed)
    prompt = checkpoint.decode(idx[0], itos)
    steps = args.steps if args.walkthrough else 0
    if steps:
        print(f"prompt {visible(prompt)!r} -> ids {idx[0].tolist()[:12]}{' ...' if idx.size(1) > 12 else ''}; "
              f"drafter {args.draft}, {args.num_draft_tokens} characters per round")
    else:
        print(prompt, end="", flush=True)
    rounds, out = [], Streamed(stops)
    start = time.perf_counter()
    for number, r in enumerate(speculative.speculative_stream(model, drafter, idx, args.max_new_tokens, args.decoding,
                                                              args.num_draft_tokens, generator, meta["stoi"]), 1):
        rounds.append(r)
        out.text += checkpoint.decode(r.tokens, itos)
        if number <= steps:
            ending = r.finished and ("a stop string completed" if cut_stop(out.text, stops) != out.text else
                                     "it matches --regex in full and no character can extend it"
                                     if pattern_matched(args.decoding, out.text, meta["stoi"]) else
                                     "the settings left no character to draw")
            print_round(number, r, prompt + out.text, itos, args.decoding.is_greedy, ending)
            if number == steps:
                print("\n...the remaining rounds, the same way:\n")
                print(prompt, end="")
        if number >= steps:
            out.flush(r.finished)
    seconds = time.perf_counter() - start
    text = out.text
    if len(rounds) < steps:  # fewer rounds than --steps: the text is printed once, at the end
        print("\nthe text:\n" + prompt + cut_stop(text, stops), end="")
    print()
    if rounds and rounds[-1].finished and cut_stop(text, stops) == text \
            and not pattern_matched(args.decoding, text, meta["stoi"]):
        print(f"note: the text ended after {len(text)} characters: the settings left no character to draw",
              file=sys.stderr)
    print(statistics(rounds, seconds), file=sys.stderr)
    return 0


def detect(args):
    """--detect: one line on the watermark in the file, from the checkpoint's vocabulary alone (the
    model is not run); exit status 2 for a file that cannot be scored."""
    try:
        with open(args.detect, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return fail(f"--detect: no file at {args.detect}", 2)
    except UnicodeDecodeError:
        return fail(f"--detect: {args.detect} is not UTF-8 text", 2)
    except OSError as e:
        return fail(f"--detect: cannot read {args.detect} ({e.strerror})", 2)
    try:
        _, meta, _ = checkpoint.load(args.ckpt, "cpu", args.meta)
    except checkpoint.CheckpointError as e:
        return fail(str(e), 1)
    try:
        ids = torch.tensor(checkpoint.encode(text, meta["stoi"]), dtype=torch.long)  # (N,)
    except ValueError as e:
        return fail(f"--detect: {args.detect}: {e}", 2)
    if len(ids) < 2:
        return fail(f"--detect: {args.detect} holds {len(ids)} character{'s' * (len(ids) != 1)}: too short to "
                    f"score (each character is scored by the one before it)", 2)
    gamma = args.decoding.watermark_gamma
    found = sampling.detect_watermark(ids, meta["vocab_size"], gamma)
    verdict = "watermarked" if found.watermarked else "not watermarked"
    print(f"{args.detect}: {found.scored} characters scored, {found.green} green ({found.green / found.scored:.1%}, "
          f"{gamma:.0%} expected without the watermark), z = {found.z:.2f}: {verdict} "
          f"(z {'>' if found.watermarked else '<='} {sampling.WATERMARK_THRESHOLD:g})")
    return 0


def fail(message, status):
    """Print the one-line error and return the exit status."""
    print(f"error: {message}", file=sys.stderr)
    return status


def main(argv=None):
    args = parse_args(argv)
    if args.detect is not None:
        return detect(args)
    problem = check_device(args.device)
    if problem:
        return fail(problem, 2)
    torch.manual_seed(args.seed)
    try:
        model, meta, _ = checkpoint.load(args.ckpt, args.device, args.meta)
    except checkpoint.CheckpointError as e:
        return fail(str(e), 1)
    stoi, itos = meta["stoi"], meta["itos"]
    problem = check_vocabulary(args, stoi)
    if problem:
        return fail(problem, 2)
    idx = torch.tensor([checkpoint.encode(args.start, stoi)], device=args.device)  # (1, T)
    ignored = args.decoding.ignored()
    if ignored and args.num_beams == 1 and not args.compare:
        who, why = (("contrastive search", "it applies no warper, as Hugging Face's: --top_k only counts its candidates")
                    if args.decoding.penalty_alpha else
                    ("greedy decoding in Hugging Face's order", "--order llama.cpp applies them before taking the argmax"))
        print(f"note: {who} ignores {', '.join('--' + n for n in ignored)} ({why})", file=sys.stderr)
    if args.draft is not None:
        return speculate(model, meta, idx, args)
    if args.walkthrough:
        walkthrough(model, idx, args, itos, stoi)
    elif args.compare:
        compare(model, idx, args, itos, stoi)
    elif args.num_beams > 1:
        print_beams(model, idx, args, itos, stoi)
    else:
        print_samples(model, idx, args, itos, stoi)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C: stop quietly, as a shell expects
        print(file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # the reader closed the pipe (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
