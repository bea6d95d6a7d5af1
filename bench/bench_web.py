"""
The web page against sample.py, side by side in one run on this machine: greedy decoding of the
shipped model in headless Chromium (web/model.js and web/sampling.js) and in PyTorch
(sampling.generate with the KV cache, what sample.py --temperature 0 runs), and how long the page
takes to become usable from a local server.

    python bench/bench_web.py            # prints characters per second and the ratio
    python bench/bench_web.py --save     # also writes docs/bench/web.txt, where the README's numbers come from

It also measures how far the page's logits are from PyTorch's: on the same float16 weights
(what the page computes differently: float64 sums, another order) and from the shipped float32
weights (what rounding the weights to float16 costs), over the 20 prompts of tests/test_web.py.

Each speed is the fastest of --repeats runs of --tokens characters, the page's and PyTorch's
interleaved so that both see the same machine; PyTorch runs with one thread and with its default.
The time to a usable page (model.bin fetched and parsed, the first distribution drawn) is the
fastest of --repeats fresh loads. Needs Chromium and Playwright (web/browser.py).
"""
import argparse
import contextlib
import io
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "web"))

import browser  # noqa: E402
import checkpoint  # noqa: E402
import sampling  # noqa: E402
from bench_generate import Tee  # noqa: E402
from files import write_atomically  # noqa: E402

# In the page: the model loaded once, then greedy decoding timed; returns [milliseconds, ids].
PAGE_GREEDY = """async (n) => {
  if (!window.bench) {
    const { load_model } = await import("./model.js");
    const sampling = await import("./sampling.js");
    const loaded = load_model(await (await fetch("model.bin")).arrayBuffer());
    window.bench = { sampling, ...loaded };
  }
  const { sampling, model, stoi } = window.bench;
  const start = performance.now();
  const ids = sampling.generate(model, [stoi["\\n"]], n, new sampling.Decoding({ temperature: 0 }));
  return [performance.now() - start, ids];
}"""


# In the page: the logits after each text, uncached (the last block_size characters).
PAGE_LOGITS = """async (texts) => {
  const sampling = await import("./sampling.js");
  const { model, stoi } = window.bench;
  return texts.map((text) => Array.from(sampling.next_logits(model, [...text].map((c) => stoi[c]))));
}"""


def logit_errors(page, model):
    """(largest |page - PyTorch| on the page's float16 weights, the same against the float32 model)."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from test_web import PROMPTS, read_model_bin

    web_model, itos = read_model_bin(os.path.join(ROOT, "web", "model.bin"))
    stoi = {c: i for i, c in enumerate(itos)}
    ours = torch.tensor(page.evaluate(PAGE_LOGITS, PROMPTS), dtype=torch.float64)  # (prompts, V)
    with torch.no_grad():
        ids = [torch.tensor([checkpoint.encode(text, stoi)]) for text in PROMPTS]
        same = torch.cat([sampling.next_logits(web_model, i) for i in ids]).double()
        shipped = torch.cat([sampling.next_logits(model, i) for i in ids]).double()
    return (ours - same).abs().max().item(), (ours - shipped).abs().max().item(), len(PROMPTS)


def python_greedy(model, idx, n, threads):
    """Seconds for n greedy characters with the KV cache, and the ids."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    out = sampling.generate(model, idx, n, temperature=0)
    return time.perf_counter() - start, out[0, idx.size(1):].tolist()


def run(args):
    model, meta, _ = checkpoint.load()
    idx = torch.tensor([checkpoint.encode("\n", meta["stoi"])])
    default_threads = torch.get_num_threads()
    print(f"greedy decoding of {args.tokens} characters after '\\n', fastest of {args.repeats}, "
          f"load average {os.getloadavg()[0]:.2f}")
    with browser.serve() as url, browser.chromium() as chromium:
        ready = []
        for _ in range(args.repeats):
            page = browser.open_page(chromium, url)
            ready.append(float(page.eval_on_selector("body", "body => body.dataset.ready")))
            page.close()
        page = browser.open_page(chromium, url)
        best = {"page": None, "python, 1 thread": None, f"python, {default_threads} threads": None}
        for _ in range(args.repeats):
            runs = {"page": lambda: (lambda r: (r[0] / 1e3, r[1]))(page.evaluate(PAGE_GREEDY, args.tokens)),
                    "python, 1 thread": lambda: python_greedy(model, idx, args.tokens, 1),
                    f"python, {default_threads} threads": lambda: python_greedy(model, idx, args.tokens, default_threads)}
            for name, job in runs.items():
                seconds, ids = job()
                if best[name] is None or seconds < best[name][0]:
                    best[name] = (seconds, ids)
        torch.set_num_threads(default_threads)
        same_weights, shipped_weights, prompts = logit_errors(page, model)
    same = len({tuple(ids) for _, ids in best.values()}) == 1
    print(f"the page usable after {min(ready):.0f} ms (model.bin fetched and parsed, the first distribution drawn)")
    print(f"\n{'':<22}{'chars/s':>9}{'page / it':>11}")
    page_rate = args.tokens / best["page"][0]
    for name, (seconds, _) in best.items():
        rate = args.tokens / seconds
        print(f"{name:<22}{rate:>9.0f}{page_rate / rate:>10.2f}x")
    print(f"\nthe same text in the page and in PyTorch: {same}")
    print(f"largest |page logit - PyTorch logit| over {prompts} prompts: {same_weights:.1e} on the page's float16 "
          f"weights, {shipped_weights:.3f} against the shipped float32 weights")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=500, help="characters per run (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each; the fastest counts (default %(default)s)")
    parser.add_argument("--save", action="store_true", help="also write what is printed to docs/bench/web.txt")
    args = parser.parse_args()
    if browser.CHROMIUM is None:
        sys.exit("error: Chromium is not installed (apt-get install chromium)")
    printed = io.StringIO()
    with contextlib.redirect_stdout(Tee(sys.stdout, printed)):
        run(args)
    if args.save:
        path = os.path.join(ROOT, "docs", "bench", "web.txt")
        command = "python bench/bench_web.py " + " ".join(sys.argv[1:])
        write_atomically(path, lambda f: f.write(f"{command}\n{printed.getvalue()}".encode()))
        print(f"wrote {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
