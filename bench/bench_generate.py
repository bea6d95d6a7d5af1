"""
What the KV cache, batching and speculative decoding buy: tokens per second of several ways to
generate, in one run.

    python bench/bench_generate.py                          # everything, torch's threads
    python bench/bench_generate.py --threads 1 --only speculative
    python bench/bench_generate.py --figure                 # also save docs/figures/kv_cache.png
    python bench/bench_generate.py --threads 2 --save       # also write docs/bench/generate-2-threads.txt
    python bench/bench_generate.py --runs 3                 # the speculative section 3 times: each ratio's range

- naive:       every step feeds the whole context (cropped to block_size) through the model, as nanoGPT does
- cached:      the prompt once, then one token per step against the KV cache
- batched:     10 samples decoded together (cached), against 10 runs one after another
- speculative: one sample of 500 characters, plain cached sampling against speculative decoding with
               the draft model (checkpoints/draft.pt), the n-gram drafter, prompt lookup and the
               Medusa heads (checkpoints/medusa.pt), as a chain and as a tree of each head's top 2
               candidates, at k = 1 .. 8 drafts per round (Medusa: up to its number of heads), at
               temperature 1 and 0; then Hugging Face's generate, plain, with
               assistant_model and with prompt_lookup_num_tokens, on the same weights, 100
               characters (GPT-2 stops at n_positions)

Prints tokens/s and the ratios; --save also writes them to docs/bench/, where the README's
numbers come from (tests/test_readme.py checks them), and --figure saves a plot of the time per
token against its position for the naive and the cached loop. Each measurement is the fastest of --repeats runs
(5), interleaved so that all see the same machine. The ratios still move with the CPU and from hour
to hour on a shared machine: --runs N repeats the speculative section and prints each ratio's range.
"""
import argparse
import contextlib
import copy
import io
import math
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
import speculative  # noqa: E402
from files import write_atomically  # noqa: E402

DRAFT_CKPT = os.path.join(ROOT, "checkpoints", "draft.pt")
SPECULATIVE_TOKENS = 500  # one sample, as long as the CLI's default
KS = range(1, 9)  # drafts per round
HF_TOKENS = 100  # Hugging Face's GPT-2 cannot go past n_positions = block_size = 128


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


def kv_cache(model, prompt, args):
    """Naive against cached decoding, and a batch against one sample after another."""
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
    if args.figure:
        os.environ.setdefault("NANODECODE_FIGURES", plots.DOCS_FIGURES)  # plots.save() writes only there
        print(f"\nsaved {plot(naive, cached, model.config.block_size)}")


# ----------------------------------------------------------------------------- speculative decoding

def fastest_of(jobs, repeats):
    """{name: (seconds, result)}: each job() run `repeats` times, interleaved with the others, and
    the fastest run kept with what it returned."""
    best = {}
    for _ in range(repeats):
        for name, job in jobs.items():
            start = time.perf_counter()
            result = job()
            seconds = time.perf_counter() - start
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, result)
    return best


def plain_job(model, prompt, n, decoding, seed=0):
    """Plain cached decoding of n tokens: a job for fastest_of()."""
    return lambda: list(sampling.stream(model, prompt, n, decoding, torch.Generator().manual_seed(seed)))


def speculative_job(model, drafter, prompt, n, decoding, k, stoi, seed=0):
    """Speculative decoding of n tokens, returning its rounds: a job for fastest_of()."""
    return lambda: list(speculative.speculative_stream(model, drafter, prompt, n, decoding, k,
                                                       torch.Generator().manual_seed(seed), stoi))


def hf_job(hf, prompt, n, decoding, seed=0, **drafting):
    """Hugging Face's generate of n tokens, greedy or pure sampling at decoding's temperature (top_k=0:
    its default of 50 off), drafting as `drafting` says (assistant_model=, prompt_lookup_num_tokens=) or not."""
    settings = dict(do_sample=False) if decoding.is_greedy else dict(do_sample=True, temperature=decoding.temperature,
                                                                     top_k=0)

    def job():
        torch.manual_seed(seed)
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                           pad_token_id=0, eos_token_id=None, **settings, **drafting)
    return job


def speculative_table(model, drafters, prompt, decoding, ks, n, args, stoi):
    """Plain cached decoding against each drafter at each k of ks[drafter], n tokens: prints the
    table, returns {(drafter, k): tokens/s}, ("plain", 0) included."""
    jobs = {("plain", 0): plain_job(model, prompt, n, decoding)}
    for name, drafter in drafters.items():
        jobs.update({(name, k): speculative_job(model, drafter, prompt, n, decoding, k, stoi) for k in ks[name]})
    best = fastest_of(jobs, args.repeats)
    plain = n / best[("plain", 0)][0]
    rates = {("plain", 0): plain}
    print(f"\n{'':<14}{'k':>3}{'accepted':>10}{'chars/pass':>12}{'tok/s':>8}{'vs plain':>10}")
    print(f"{'plain cached':<14}{'-':>3}{'-':>10}{1:>12.2f}{plain:>8.0f}{1:>9.2f}x")
    for (name, k), (seconds, rounds) in best.items():
        if name != "plain":
            drafted, accepted, made, passes = speculative.tally(rounds)
            acceptance, per_pass = accepted / max(drafted, 1), made / passes
            rates[name, k] = n / seconds
            print(f"{name:<14}{k:>3}{acceptance:>10.1%}{per_pass:>12.2f}{n / seconds:>8.0f}{n / seconds / plain:>9.2f}x")
    return rates


def hugging_face_table(model, draft, drafters, prompt, decoding, ks, args, stoi):
    """Hugging Face's generate, plain, with assistant_model and with prompt_lookup_num_tokens (at
    our prompt lookup's best k), against ours on the same weights: HF_TOKENS tokens, within GPT-2's
    n_positions. Returns {name: its speed / HF generate's}."""
    from hf_gpt2 import hf_copy  # the one mapping of our weights onto GPT2LMHeadModel

    hf, hf_draft = hf_copy(model), hf_copy(draft)
    n = HF_TOKENS
    jobs = {"HF generate": hf_job(hf, prompt, n, decoding),
            "HF generate + assistant_model": hf_job(hf, prompt, n, decoding, assistant_model=hf_draft),
            f"HF generate + prompt lookup k={ks['prompt lookup']}":
                hf_job(hf, prompt, n, decoding, prompt_lookup_num_tokens=ks["prompt lookup"]),
            "ours, plain cached": plain_job(model, prompt, n, decoding)}
    jobs.update({f"ours, {name} k={ks[name]}": speculative_job(model, drafter, prompt, n, decoding, ks[name], stoi)
                 for name, drafter in drafters.items()})
    best = fastest_of(jobs, args.repeats)
    hf_rate = n / best["HF generate"][0]
    print(f"\n{n} new characters, Hugging Face's GPT2LMHeadModel on the same weights:")
    print(f"{'':<38}{'tok/s':>8}{'vs HF generate':>16}")
    for name, (seconds, _) in best.items():
        print(f"{name:<38}{n / seconds:>8.0f}{n / seconds / hf_rate:>15.2f}x")
    return {name: n / seconds / hf_rate for name, (seconds, _) in best.items()}


def costs(model, draft, ngram, heads, prompt):
    """What bounds the speedup: one pass of the target against k + 1 new tokens, one step of
    the draft model and of the n-gram drafter, the Medusa heads on one hidden state, in
    milliseconds (fastest of 50)."""
    def ms(step, setup=lambda: None):
        best = math.inf
        for _ in range(50):
            setup()
            start = time.perf_counter()
            step()
            best = min(best, time.perf_counter() - start)
        return best * 1e3

    context = prompt.repeat(1, 64)  # (1, 64): a cache half full, as on average
    with torch.inference_mode():
        for name, net in (("target", model), ("draft model", draft)):
            cache = net.new_cache(1)
            net(context, cache=cache)
            line = [f"{k + 1} new: {ms(lambda: net(context[:, :k + 1], cache=cache), lambda: cache.truncate(64)):.3f}"
                    for k in (0, 1, 3, 7)]
            print(f"  {name:<12} one pass, ms: " + ", ".join(line))
        print(f"  n-gram       one step, ms: {ms(lambda: ngram.next_logits(context)):.3f}")
        h = torch.zeros(model.config.n_embd)  # (C,)
        print(f"  Medusa heads all {heads.num_heads} on one hidden state, ms: {ms(lambda: heads(h)):.3f}")


def matmul_bound(model, repeats=200):
    """Milliseconds of one token's matrix products alone: every nn.Linear of the model (lm_head
    included) applied to one position, one after another, nothing else; the fastest of `repeats`.
    No decode step in eager PyTorch at batch 1 can take less (attention, LayerNorm, the cache and
    the draw come on top)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(1, 1, m.in_features) for m in linears]  # (1, 1, in) each
    best = math.inf
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            for m, x in zip(linears, inputs):
                m(x)
            best = min(best, time.perf_counter() - start)
    return best * 1e3


class Timed:
    """A model, or any function, that adds up in `seconds` the time spent in its calls; its other
    attributes (config, new_cache) are those of what it wraps."""

    def __init__(self, wrapped):
        self.wrapped, self.seconds = wrapped, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        result = self.wrapped(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return result

    def __getattr__(self, name):
        return getattr(self.wrapped, name)


def where_the_time_goes(model, drafters, prompt, decoding, k, args, stoi):
    """Milliseconds per round in the target's passes, in the drafter (its next_logits and rollback)
    and in the rest (the pipeline, the rule, the bookkeeping in Python), against plain cached
    decoding per token; the fastest of --repeats runs of SPECULATIVE_TOKENS tokens."""
    print(f"\nwhere the time goes, k = {k}, ms per round (plain: per token), fastest of {args.repeats}:")
    print(f"{'':<14}{'target':>8}{'drafter':>9}{'the rest':>10}{'total':>8}{'chars':>7}")
    for name, drafter in [("plain cached", None), *drafters.items()]:
        best = None
        for _ in range(args.repeats):
            target, clocks, spy = Timed(model), [], None
            if drafter is not None:  # a copy of the drafter whose own next_logits and rollback are timed
                spy = copy.copy(drafter)
                clocks = [Timed(spy.next_logits), Timed(spy.rollback)]
                spy.next_logits, spy.rollback = clocks
            job = (plain_job(target, prompt, SPECULATIVE_TOKENS, decoding) if spy is None else
                   speculative_job(target, spy, prompt, SPECULATIVE_TOKENS, decoding, k, stoi))
            start = time.perf_counter()
            steps = len(job())  # tokens for plain decoding, rounds for speculative decoding
            total = time.perf_counter() - start
            if best is None or total < best[0]:
                best = (total, target.seconds, sum(clock.seconds for clock in clocks), steps)
        total, in_target, in_drafter, steps = best
        print(f"{name:<14}{in_target / steps * 1e3:>8.2f}{in_drafter / steps * 1e3:>9.2f}"
              f"{(total - in_target - in_drafter) / steps * 1e3:>10.2f}{total / steps * 1e3:>8.2f}"
              f"{SPECULATIVE_TOKENS / steps:>7.2f}")
    print(f"the model's matrix products alone, one token: {matmul_bound(model):.2f} ms (the bound of a plain step)")


def speculative_section(model, meta, prompt, args):
    """Plain cached against speculative decoding with every drafter, at temperature 1 and 0;
    Hugging Face's generate, plain and drafting; what each step costs. Returns the headline ratios
    {(temperature, what): ratio}."""
    stoi = meta["stoi"]
    try:
        drafters = {name: speculative.load_drafter(source, model, meta) for name, source in
                    [("draft model", args.draft), ("n-gram", "ngram"), ("prompt lookup", "prompt_lookup"),
                     ("medusa", "medusa")]}
    except checkpoint.CheckpointError as e:
        sys.exit(f"error: {e}")
    draft, heads = drafters["draft model"].model, drafters["medusa"].heads
    drafters["medusa tree 2"] = speculative.MedusaDrafter(heads, width=2)  # each head's top 2, every path
    ks = {name: KS for name in drafters}
    ks["medusa"] = ks["medusa tree 2"] = range(1, heads.num_heads + 1)  # a draft (a place of the tree) per head
    print(f"\nspeculative decoding: batch 1, {SPECULATIVE_TOKENS} new characters after {prompt.size(1)} "
          f"character(s), draft model {draft.num_params() / 1e6:.2f}M parameters ({draft.config.n_layer} layer), "
          f"{heads.num_heads} Medusa heads")
    print("costs, what bounds the speedup:")
    costs(model, draft, drafters["n-gram"], heads, prompt)
    ratios = {}
    for temperature in (1.0, 0.0):
        decoding = sampling.Decoding(temperature=temperature)
        print(f"\n=== temperature {temperature:g}{' (greedy)' if temperature == 0 else ''}")
        rates = speculative_table(model, drafters, prompt, decoding, ks, SPECULATIVE_TOKENS, args, stoi)
        best_k = {name: max(ks[name], key=lambda k: rates[name, k]) for name in drafters}
        where_the_time_goes(model, drafters, prompt, decoding, speculative.DRAFT_TOKENS, args, stoi)
        against_hf = hugging_face_table(model, draft, drafters, prompt, decoding, best_k, args, stoi)
        for name in drafters:
            ratios[temperature, f"{name}, best k, against plain cached"] = rates[name, best_k[name]] / rates["plain", 0]
            ratios[temperature, f"{name}, best k, against HF generate"] = against_hf[f"ours, {name} k={best_k[name]}"]
        ratios[temperature, "plain cached against HF generate"] = against_hf["ours, plain cached"]
        ratios[temperature, "HF prompt lookup against HF generate"] = \
            against_hf[f"HF generate + prompt lookup k={best_k['prompt lookup']}"]
    return ratios


def ranges(runs):
    """The lowest and highest of each headline ratio over several runs of speculative_section()."""
    print(f"\nover {len(runs)} runs of the speculative section, the lowest and highest of each ratio:")
    for key in runs[0]:
        values = [run[key] for run in runs]
        print(f"  temperature {key[0]:g}, {key[1]:<45} {min(values):.2f}–{max(values):.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=checkpoint.DEFAULT_CKPT)
    parser.add_argument("--draft", default=DRAFT_CKPT, help="the draft model's checkpoint")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each measurement; the fastest counts")
    parser.add_argument("--runs", type=int, default=1,
                        help="runs of the speculative section, and the range of each ratio over them (default 1)")
    parser.add_argument("--batch", type=int, default=10, help="samples decoded together")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    parser.add_argument("--only", choices=("kv_cache", "speculative"), help="run one part of the benchmark")
    parser.add_argument("--figure", action="store_true", help="save the plot of the time per token (docs/figures/)")
    parser.add_argument("--save", action="store_true",
                        help="also write what is printed to docs/bench/generate-<threads>-threads.txt")
    args = parser.parse_args()
    printed = io.StringIO()
    with contextlib.redirect_stdout(Tee(sys.stdout, printed)):
        run(args)
    if args.save:
        path = os.path.join(ROOT, "docs", "bench", f"generate-{torch.get_num_threads()}-threads.txt")
        command = "python bench/bench_generate.py " + " ".join(sys.argv[1:])
        write_atomically(path, lambda f: f.write(f"{command}\n{printed.getvalue()}".encode()))
        print(f"wrote {os.path.relpath(path, ROOT)}")


class Tee(io.TextIOBase):
    """A stream that writes to several others: the terminal and the record of a run."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)


def run(args):
    """The whole benchmark, printing as it goes."""
    try:
        model, meta, _ = checkpoint.load(args.ckpt)
    except checkpoint.CheckpointError as e:
        sys.exit(f"error: {e}")
    if args.threads:
        torch.set_num_threads(args.threads)
    prompt = torch.tensor([checkpoint.encode("\n", meta["stoi"])])  # (1, 1)
    print(f"{model.num_params() / 1e6:.2f}M parameters, block_size {model.config.block_size}, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}, load average {os.getloadavg()[0]:.2f}")
    if args.only != "speculative":
        kv_cache(model, prompt, args)
    if args.only != "kv_cache":
        runs = [speculative_section(model, meta, prompt, args) for _ in range(args.runs)]
        if args.runs > 1:
            ranges(runs)


if __name__ == "__main__":
    main()
