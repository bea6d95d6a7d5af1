"""
Train Medusa heads (medusa.py) for a model, on a laptop CPU.

    python train_medusa.py                                   # 4 heads for the shipped model: out/medusa.pt
    python train_medusa.py --iters 50 --out /tmp/medusa.pt   # a quick try

The model is frozen (Medusa-1): each batch of windows of the training text (the first 90% of Tiny
Shakespeare) goes through it once, without gradients, for its last hidden states, and only the
heads learn. The learning rate follows a cosine from --lr to 0. At the end every head's top-1 and
top-5 accuracy on windows of the validation text is printed and saved with the heads. The shipped
checkpoints/medusa.pt is this file, made with the defaults. Ctrl-C or a killed run writes nothing.
"""
import argparse
import math
import sys
import time

import torch

import checkpoint
import medusa
from data.shakespeare_char import prepare


def windows(ids, starts, length):
    """The windows ids[s : s + length] for each start s (B,): (B, length)."""
    return torch.stack([ids[s:s + length] for s in starts.tolist()])  # (B, length)


@torch.no_grad()
def hidden_states(model, x):
    """The model's last hidden states (B, T, C) and its own logits (B, T, V) on x (B, T)."""
    logits, _, hidden = model(x, hidden=True)
    return hidden, logits


@torch.no_grad()
def evaluate(model, heads, ids, count, generator):
    """Top-1 and top-5 accuracy of the model's own next-token guess (head 0) and of each head on
    `count` windows of ids: two lists of K + 1 shares."""
    K, T = heads.num_heads, model.config.block_size
    x = windows(ids, torch.randint(len(ids) - T - K - 1, (count,), generator=generator), T + K + 1)  # (N, T + K + 1)
    hidden, own = hidden_states(model, x[:, :T])  # (N, T, C), (N, T, V)
    logits = torch.cat((own[:, :, None], heads(hidden)), dim=2)  # (N, T, K + 1, V)
    target = torch.cat((x[:, 1:T + 1, None], medusa.targets(x, K)), dim=2)  # (N, T, K + 1)
    return [medusa.accuracy(logits, target, k).tolist() for k in (1, 5)]


def train(model, heads, ids, args):
    """AdamW on the heads alone, batches of random windows of ids; prints the loss as it goes."""
    K, T = heads.num_heads, model.config.block_size
    optimizer = torch.optim.AdamW(heads.parameters(), lr=args.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for it in range(args.iters):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * it / args.iters))
        x = windows(ids, torch.randint(len(ids) - T - K - 1, (args.batch_size,), generator=generator), T + K + 1)
        hidden, _ = hidden_states(model, x[:, :T])  # (B, T, C): no gradient reaches the model
        loss = medusa.loss(heads(hidden), medusa.targets(x, K))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if it % 100 == 0 or it == args.iters - 1:
            print(f"iter {it}: loss {loss.item():.4f}, {time.time() - start:.0f} s", flush=True)
    return time.time() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=checkpoint.DEFAULT_CKPT, help="the model the heads are for")
    parser.add_argument("--out", default="out/medusa.pt", help="where the heads are written")
    parser.add_argument("--heads", type=int, default=4, help="K, in [1, 16]")
    parser.add_argument("--iters", type=int, default=2500)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval_windows", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args(argv)
    for name, low, high in [("heads", 1, 16), ("iters", 1, 10**7), ("batch_size", 1, 4096), ("eval_windows", 1, 10**5)]:
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name} must be in [{low}, {high}], got {getattr(args, name)}")
    if not 0 < args.lr < 1:
        parser.error(f"--lr must be in (0, 1), got {args.lr}")
    try:
        model, meta, _ = checkpoint.load(args.ckpt)
        with open(prepare.TEXT, encoding="utf-8") as f:
            train_text, val_text = prepare.split(f.read())
        train_ids, val_ids = (torch.tensor(checkpoint.encode(text, meta["stoi"])) for text in (train_text, val_text))
    except (checkpoint.CheckpointError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    model.requires_grad_(False)
    heads = medusa.for_model(model, args.heads)
    print(f"{args.heads} heads, {sum(p.numel() for p in heads.parameters()):,} parameters, on {args.ckpt}")
    try:
        seconds = train(model, heads, train_ids, args)
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    heads.eval()
    top1, top5 = evaluate(model, heads, val_ids, args.eval_windows, torch.Generator().manual_seed(0))
    print(f"validation text, {args.eval_windows} windows of {model.config.block_size} positions:")
    for i, (a, b) in enumerate(zip(top1, top5)):
        print(f"  {'the model itself' if i == 0 else f'head {i}'} (the token {i + 1} ahead): "
              f"top-1 {a:.1%}, top-5 {b:.1%}")
    stats = {"top1": top1, "top5": top5, "iters": args.iters, "seconds": round(seconds)}
    medusa.save(args.out, heads, model, stats)
    print(f"wrote {args.out} after {seconds / 60:.1f} minutes of training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
