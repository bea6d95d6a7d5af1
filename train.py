"""
Train the character-level GPT, on a laptop CPU first.

    python train.py config/train_quick.py                    # a small model in about a minute
    python train.py config/train_shakespeare_char.py         # the shipped model's recipe (out/)
    python train.py config/train_quick.py --max_iters=100    # any key can be overridden
    python train.py config/train_quick.py --init_from=resume # continue from the checkpoint
    python train.py --help                                   # every key, its type and default
    torchrun --standalone --nproc_per_node=2 train.py config/train_quick.py   # two processes (see below)

The default data folder, data/shakespeare_char, is prepared on first use (prepare.py).

ckpt_path only ever receives weights that evaluated better than the ones it holds (or every
evaluation, with always_save_checkpoint). Ctrl-C saves the state of the run beside it, never over
it: out/ckpt.pt -> out/ckpt-interrupted.pt. --init_from=resume continues from that interrupted
state when there is one (and removes it once the run has gone past it), else from ckpt_path; the
checkpoint decides the model's shape, and a setting that would change it is refused.

A config file is plain Python that assigns some of the keys below; --key=value follows it.
It is executed as it is, with your permissions: run only config files you trust.
Paths are relative to the current directory.

Under torchrun (which sets RANK, LOCAL_RANK and WORLD_SIZE) each process trains a replica of the
model wrapped in DistributedDataParallel (gloo on CPU, nccl on CUDA, one device per local rank),
and DDP averages the gradients over the processes during backward. An iteration is one global
batch of batch_size x gradient_accumulation_steps blocks, split between the processes: the same
batches, the same update, however many processes share it. Rank 0 alone prints and saves.
"""
import dataclasses
import difflib
import math
import os
import runpy
import sys
import tempfile
import time
from contextlib import nullcontext, redirect_stdout
from dataclasses import dataclass, field
from typing import NamedTuple

import cli

cli.require_torch_and_numpy()  # before torch is imported: one line, not pages, on a pair that cannot work

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import checkpoint
from data.shakespeare_char import prepare
from model import GPT, GPTConfig


def key(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # where things go
    data_dir: str = key("data/shakespeare_char", "folder holding train.bin, val.bin and meta.pkl (from prepare.py)")
    ckpt_path: str = key("out/ckpt.pt", "checkpoint file written during training and read by resume")
    init_from: str = key("scratch", "'scratch' for a new model, 'resume' to continue (see above)")
    overwrite: bool = key(False, "let a fresh run (init_from=scratch) replace an existing ckpt_path")
    save_optimizer: bool = key(True, "store the optimizer state too (exact resume; the file is 3x larger)")
    always_save_checkpoint: bool = key(False, "save at every evaluation, not only when val loss improves")
    # logging and evaluation
    eval_interval: int = key(250, "evaluate train/val loss every this many iterations")
    eval_iters: int = key(50, "batches averaged for each loss estimate")
    log_interval: int = key(50, "print the training loss every this many iterations")
    eval_only: bool = key(False, "evaluate the model once and exit (with init_from=resume)")
    # model
    n_layer: int = key(4, "transformer blocks")
    n_head: int = key(4, "attention heads per block")
    n_embd: int = key(128, "embedding width C")
    block_size: int = key(64, "context length in characters")
    dropout: float = key(0.0, "dropout probability while training (on resume: the checkpoint's unless given)")
    bias: bool = key(True, "biases in Linear and LayerNorm layers")
    # optimisation: AdamW, linear warm-up then cosine decay to min_lr
    batch_size: int = key(32, "sequences per micro-batch")
    gradient_accumulation_steps: int = key(1, "micro-batches per iteration, over all processes together: "
                                              "a multiple of their number")
    max_iters: int = key(2000, "iterations to train for")
    learning_rate: float = key(1e-3, "peak learning rate")
    min_lr: float = key(1e-4, "learning rate at the end of the cosine decay")
    warmup_iters: int = key(100, "iterations of linear warm-up")
    lr_decay_iters: int = key(0, "iterations of cosine decay (0: max_iters)")
    weight_decay: float = key(0.1, "AdamW weight decay on matrices (not on biases, LayerNorms)")
    beta1: float = key(0.9, "AdamW beta1")
    beta2: float = key(0.99, "AdamW beta2")
    grad_clip: float = key(1.0, "clip the gradient norm to this (0: no clipping)")
    # system
    device: str = key("auto", "'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:1', 'mps'")
    dtype: str = key("float32", "'float32' or 'bfloat16' (autocast, for GPUs that support it)")
    seed: int = key(1337, "seed for initialisation and batches")
    # bench/bench_torchrun.py, the quick recipe on 2 CPU cores: 1.11x the tokens per second compiled, but its first
    # run reaches its first iteration after 27.4 s instead of 5.7 s, more than 1.11x wins back in a 50 s recipe
    compile: bool = key(False, "torch.compile the model (nanoGPT's key)")


SHAPE = ("n_layer", "n_head", "n_embd", "block_size", "bias")  # what a resumed run takes from its checkpoint


class ConfigError(Exception):
    """A config file or --key=value the trainer cannot use; the message is one line for the user."""


class TrainingError(Exception):
    """A run that cannot go on (its loss became nan); the message is one line for the user."""


class Interrupted(Exception):
    """Ctrl-C during training, once its state is saved; the message says where."""


def parse_value(name, value, kind):
    """'3e-4' -> 3e-4 for a float key, 'false' -> False for a bool key, ... or ConfigError."""
    if kind is bool:
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"--{name} takes true or false, not {value!r}")
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"--{name} takes {kind.__name__}, not {value!r}")


def check_type(name, value, kind):
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{name} must be {kind.__name__}, not {type(value).__name__} ({value!r})")
    return value


def unknown_key(name, fields):
    close = difflib.get_close_matches(name, fields, n=1)
    return ConfigError(f"unknown config key {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                       + "; see python train.py --help")


class Processes(NamedTuple):
    """This process among those that torchrun started: rank 0 of 1 without torchrun."""
    rank: int = 0  # 0 to world_size - 1, over every node
    local_rank: int = 0  # on this node: which GPU it takes
    world_size: int = 1


def processes(environ=os.environ):
    """RANK, LOCAL_RANK and WORLD_SIZE as torchrun sets them; a ConfigError when they make no sense."""
    if "RANK" not in environ:
        return Processes()
    try:
        ranks = Processes(int(environ["RANK"]), int(environ["LOCAL_RANK"]), int(environ["WORLD_SIZE"]))
    except (KeyError, ValueError):
        raise ConfigError("RANK, LOCAL_RANK and WORLD_SIZE must all be integers (torchrun sets them)")
    if not 0 <= ranks.rank < ranks.world_size or ranks.local_rank < 0:
        raise ConfigError(f"RANK {ranks.rank} does not fit WORLD_SIZE {ranks.world_size}")
    return ranks


def get_config(argv, world_size=1):
    """Defaults <- config files (in order) <- --key=value overrides, each checked against TrainConfig
    (and gradient_accumulation_steps against the number of processes).
    Returns the config and the names of the keys that the files and flags set."""
    kinds = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    values = {}
    for arg in argv:
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if name not in kinds:
                raise unknown_key(name, kinds)
            if not eq:
                raise ConfigError(f"write --{name}=VALUE")
            values[name] = parse_value(name, value, kinds[name])
        else:
            if not os.path.isfile(arg):
                raise ConfigError(f"no config file {arg}")
            try:
                assigned = runpy.run_path(arg)
            except Exception as e:  # the file is Python and runs as it is: a syntax error, an unknown name, ...
                raise ConfigError(f"{arg}: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}")
            for name, value in assigned.items():
                if name.startswith("_") or type(value).__name__ == "module":
                    continue
                if name not in kinds:
                    raise unknown_key(name, kinds)
                values[name] = check_type(f"{arg}: {name}", value, kinds[name])
    config = TrainConfig(**values)
    check_config(config, world_size)
    return config, set(values)


def check_config(c, world_size=1):
    """Out-of-range values are a ConfigError naming the key, before anything is built. Each rule
    says what is allowed, so that nan, which fails every comparison, is refused too."""
    rules = [
        ("init_from", c.init_from in ("scratch", "resume"), "'scratch' or 'resume'"),
        ("dtype", c.dtype in ("float32", "bfloat16"), "'float32' or 'bfloat16'"),
        ("eval_interval", c.eval_interval >= 1, ">= 1"),
        ("eval_iters", c.eval_iters >= 1, ">= 1"),
        ("log_interval", c.log_interval >= 1, ">= 1"),
        ("n_layer", c.n_layer >= 1, ">= 1"),
        ("n_head", c.n_head >= 1, ">= 1"),
        ("n_embd", c.n_head >= 1 and c.n_embd >= 1 and c.n_embd % c.n_head == 0,
         f"a positive multiple of n_head ({c.n_head})"),
        ("block_size", c.block_size >= 1, ">= 1"),
        ("dropout", 0 <= c.dropout < 1, "in [0, 1)"),
        ("batch_size", c.batch_size >= 1, ">= 1"),
        ("gradient_accumulation_steps", c.gradient_accumulation_steps >= 1
         and c.gradient_accumulation_steps % world_size == 0,
         f"a positive multiple of the {world_size} processes" if world_size > 1 else ">= 1"),
        ("max_iters", c.max_iters >= 0, ">= 0"),
        ("learning_rate", 0 < c.learning_rate < math.inf, "> 0"),
        ("min_lr", 0 <= c.min_lr < math.inf, ">= 0"),
        ("warmup_iters", c.warmup_iters >= 0, ">= 0"),
        ("lr_decay_iters", c.lr_decay_iters >= 0, ">= 0"),
        ("weight_decay", 0 <= c.weight_decay < math.inf, ">= 0"),
        ("beta1", 0 <= c.beta1 < 1, "in [0, 1)"),
        ("beta2", 0 <= c.beta2 < 1, "in [0, 1)"),
        ("grad_clip", 0 <= c.grad_clip < math.inf, ">= 0 (0: no clipping)"),
    ]
    for name, ok, rule in rules:
        if not ok:
            raise ConfigError(f"{name} must be {rule}, not {getattr(c, name)!r}")


def usage():
    lines = [__doc__.strip(), "", "keys (default):"]
    for f in dataclasses.fields(TrainConfig):
        lines.append(f"  {f'--{f.name}={f.default!r}':<36} {f.type.__name__:<5} {f.metadata['help']}")
    return "\n".join(lines)


def pick_device(name):
    """'auto' -> cuda, then mps, then cpu. Any other name is checked: a ConfigError when it names
    no device, or one this machine does not have."""
    present = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name == "auto":
        return next(kind for kind, here in present.items() if here)
    kind, colon, index = name.partition(":")
    if kind not in present or (colon and not (kind == "cuda" and index.isdigit())):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', not {name!r}")
    if not present[kind] or (index and int(index) >= torch.cuda.device_count()):
        raise ConfigError(f"device {name!r} is not available on this machine (--device=cpu is)")
    return name


def process_device(device, ranks, environ=os.environ):
    """Under torchrun on CUDA, the GPU of this process's local rank: cuda:LOCAL_RANK. A ConfigError,
    the same on every rank, when the node runs more processes than it has GPUs."""
    if ranks.world_size == 1 or not device.startswith("cuda"):
        return device
    here, count = int(environ.get("LOCAL_WORLD_SIZE", ranks.local_rank + 1)), torch.cuda.device_count()
    if here > count:
        raise ConfigError(f"{here} processes on this node need {here} GPUs; it has {count} "
                          f"(--nproc_per_node={count} fits)")
    return f"cuda:{ranks.local_rank}"


def learning_rate(it, config):
    """Linear warm-up to learning_rate, then cosine decay to min_lr over lr_decay_iters:
    lr(it) = min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2."""
    decay_iters = config.lr_decay_iters or config.max_iters
    if it < config.warmup_iters:
        return config.learning_rate * (it + 1) / (config.warmup_iters + 1)
    if it >= decay_iters:
        return config.min_lr
    progress = (it - config.warmup_iters) / max(1, decay_iters - config.warmup_iters)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.learning_rate - config.min_lr)


def random_starts(data, shape, block_size, generator):
    """Where random windows of block_size + 1 tokens begin: an int64 tensor of the given shape,
    drawn in order (the first n of a larger draw are a smaller draw)."""
    return torch.randint(len(data) - block_size, shape, generator=generator)


def get_batch(data, starts, block_size, device):
    """The windows of the token stream at starts (B,): x (B, T) and the next characters y (B, T)."""
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in starts])  # (B, T)
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in starts])  # (B, T)
    return x.to(device), y.to(device)


def sum_over_processes(values, ranks, device):
    """Each of the float values summed over the processes (the values themselves in one process)."""
    if ranks.world_size == 1:
        return values
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)  # every process gets the sums
    return total.tolist()


@torch.no_grad()
def estimate_loss(model, splits, config, device, autocast, ranks=Processes()):
    """Mean loss over eval_iters batches per split, always the same batches (a fixed seed),
    so that successive evaluations are compared on equal terms. With several processes each
    evaluates every world_size-th batch and the sums are added up: the same mean, in 1/world_size
    of the time."""
    model.eval()
    totals = []
    for data in splits.values():
        generator = torch.Generator().manual_seed(config.seed)
        total = 0.0
        for i in range(config.eval_iters):
            starts = random_starts(data, (config.batch_size,), config.block_size, generator)  # (B,)
            if i % ranks.world_size == ranks.rank:
                x, y = get_batch(data, starts, config.block_size, device)
                with autocast:
                    total += model(x, y)[1].item()
        totals.append(total)
    model.train()
    totals = sum_over_processes(totals, ranks, device)
    return {name: total / config.eval_iters for name, total in zip(splits, totals)}


def configure_optimizer(model, config, device):
    """AdamW; weight decay on matrices (embeddings, Linear weights) only."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = device.startswith("cuda")
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2), fused=fused)


def data_vocabulary(data_dir):
    """The vocabulary of a prepared data folder; a ConfigError when the folder is not prepared."""
    missing = [name for name in prepare.FILES if not os.path.isfile(os.path.join(data_dir, name))]
    if missing:
        raise ConfigError(f"{data_dir} is not prepared (no {', '.join(missing)}); "
                          f"python data/shakespeare_char/prepare.py --out_dir {data_dir} prepares it")
    return checkpoint.read_meta(os.path.join(data_dir, "meta.pkl"))


def read_splits(data_dir, block_size, vocab_size):
    """train.bin and val.bin as memory-mapped uint16 token streams, checked: whole uint16s, more
    tokens than block_size, every id inside the vocabulary. A fault is a ConfigError."""
    splits = {}
    for split in ("train", "val"):
        path = os.path.join(data_dir, f"{split}.bin")
        size = os.path.getsize(path)
        if size == 0 or size % 2:
            raise ConfigError(f"{path} has {size} bytes: not a stream of uint16 token ids (prepare.py writes it)")
        data = np.memmap(path, dtype=np.uint16, mode="r")
        if len(data) <= block_size:
            raise ConfigError(f"{path} holds {len(data):,} tokens: block_size={block_size} needs at least "
                              f"{block_size + 1:,}")
        if data.max() >= vocab_size:
            raise ConfigError(f"{path} holds token id {data.max()}, but the vocabulary (meta.pkl) has only "
                              f"{vocab_size} symbols")
        splits[split] = data
    return splits


def check_ckpt_path(config):
    """Before training: a fresh run does not replace a checkpoint unless told to (--overwrite=true),
    and a checkpoint can be written at ckpt_path (its folder is created if need be)."""
    path = config.ckpt_path
    existing = [p for p in (path, interrupted_path(path)) if os.path.exists(p)]
    if config.init_from == "scratch" and not config.overwrite and existing:
        raise ConfigError(f"{existing[0]} exists: continue it with --init_from=resume, "
                          f"or replace it with --overwrite=true")
    if os.path.isdir(path):
        raise ConfigError(f"ckpt_path {path} is a folder; give a file name, such as {os.path.join(path, 'ckpt.pt')}")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise ConfigError(f"cannot write ckpt_path {path}: {e.strerror}")


def interrupted_path(ckpt_path):
    """out/ckpt.pt -> out/ckpt-interrupted.pt: where Ctrl-C saves a run's state, beside its best checkpoint."""
    root, ext = os.path.splitext(ckpt_path)
    return f"{root}-interrupted{ext}"


def check_finite(iter_num, *losses):
    """A TrainingError when a loss is nan or infinite: the run has diverged, and nothing after it is saved."""
    for loss in losses:
        if not math.isfinite(loss):
            raise TrainingError(f"loss {loss} at iter {iter_num}: training diverged (try a lower learning_rate); "
                                f"the checkpoint keeps the weights saved before")


def format_duration(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


def resume(config, given, device):
    """The model, checkpoint and path to continue from: ckpt_path's -interrupted.pt if there is one,
    else ckpt_path. The checkpoint decides the shape of the model (the settings it overrides are
    printed); a shape setting given that differs is a ConfigError. dropout, if given, replaces the
    checkpoint's: the weights do not depend on it."""
    interrupted = interrupted_path(config.ckpt_path)
    source = interrupted if os.path.exists(interrupted) else config.ckpt_path
    model, _, ckpt = checkpoint.load(source, device, meta_path=os.path.join(config.data_dir, "meta.pkl"),
                                     dropout=config.dropout if "dropout" in given else None)
    args = ckpt["model_args"]
    for k in SHAPE:
        if k in given and getattr(config, k) != args[k]:
            raise ConfigError(f"{source} has {k}={args[k]!r}; --init_from=resume cannot change it to "
                              f"{getattr(config, k)!r} (a new model needs --init_from=scratch)")
    taken = SHAPE if "dropout" in given else SHAPE + ("dropout",)
    for k in taken:
        setattr(config, k, args[k])
    print(f"from {source}: " + ", ".join(f"{k}={args[k]!r}" for k in taken))
    model.train()
    return model, ckpt, source


def start_processes(device, ranks):
    """Join the other processes torchrun started (gloo on CPU, nccl on CUDA); nothing in one process."""
    if ranks.world_size > 1:
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def train(config, given=frozenset(), ranks=Processes()):
    device = process_device(pick_device(config.device), ranks)
    start_processes(device, ranks)
    master = ranks.rank == 0  # prints, saves and prepares the data
    torch.manual_seed(config.seed + ranks.rank)  # rank 0's weights go to every process; dropout differs
    if master and os.path.realpath(config.data_dir) == os.path.realpath(prepare.HERE):  # this repository's data
        prepare.ensure_prepared(config.data_dir)
    if ranks.world_size > 1:
        dist.barrier()  # the data is there
    meta = data_vocabulary(config.data_dir)

    iter_num, best_val_loss, optimizer_state, source = 0, float("inf"), None, None
    if config.init_from == "resume":
        model, ckpt, source = resume(config, given, device)
        iter_num, best_val_loss = ckpt["iter_num"], ckpt["best_val_loss"]
        optimizer_state = ckpt.get("optimizer")
        print(f"resuming from {source} at iter {iter_num} (best val loss {best_val_loss:.4f})"
              + ("" if optimizer_state else ", with a fresh optimizer state"))
    splits = read_splits(config.data_dir, config.block_size, meta["vocab_size"])
    if not config.eval_only:
        check_ckpt_path(config)
    if config.init_from == "scratch":
        model = GPT(GPTConfig(block_size=config.block_size, vocab_size=meta["vocab_size"], n_layer=config.n_layer,
                              n_head=config.n_head, n_embd=config.n_embd, dropout=config.dropout, bias=config.bias))
        model.to(device)
    print(f"{model.num_params() / 1e6:.2f}M parameters on {device}"
          + (f", {ranks.world_size} processes" if ranks.world_size > 1 else ""))
    optimizer = configure_optimizer(model, config, device)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    autocast = (torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if config.dtype == "bfloat16"
                else nullcontext())
    # every process draws the whole global batch from the same stream and trains on its share of it
    generator = torch.Generator().manual_seed(config.seed + iter_num)
    micro_steps = config.gradient_accumulation_steps // ranks.world_size  # of this process
    mine = slice(ranks.rank * micro_steps, (ranks.rank + 1) * micro_steps)
    fast = torch.compile(model) if config.compile else model  # the same parameters as model
    trained = DistributedDataParallel(fast) if ranks.world_size > 1 else fast  # rank 0's weights to every replica

    # nanoGPT's sample.py finds the vocabulary at data/<dataset>/meta.pkl: name the data folder
    saved_config = dict(dataclasses.asdict(config), dataset=os.path.basename(os.path.abspath(config.data_dir)))

    def save(path):
        if master:
            checkpoint.save(path, model, meta, iter_num, best_val_loss, saved_config,
                            optimizer if config.save_optimizer else None)

    if config.eval_only:
        losses = estimate_loss(fast, splits, config, device, autocast, ranks)
        print(f"train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        return losses["val"]

    interrupted = interrupted_path(config.ckpt_path)
    if master and config.init_from == "scratch" and os.path.exists(interrupted):  # only with --overwrite=true
        os.remove(interrupted)  # a stale state that --init_from=resume would otherwise pick up
    # ckpt_path already holds the weights a resumed run starts from; those of iteration 0 are random:
    # neither is worth saving.
    saved_iter = iter_num if source == config.ckpt_path else 0
    start = time.time()
    t0 = time.time()
    try:
        while True:
            if iter_num % config.eval_interval == 0 or iter_num == config.max_iters:
                losses = estimate_loss(fast, splits, config, device, autocast, ranks)
                check_finite(iter_num, *losses.values())
                print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, "
                      f"{time.time() - start:.1f}s", flush=True)
                if losses["val"] < best_val_loss or config.always_save_checkpoint:
                    best_val_loss = min(best_val_loss, losses["val"])
                    if iter_num > saved_iter:
                        save(config.ckpt_path)
                        print(f"saved {config.ckpt_path}", flush=True)
            if iter_num >= config.max_iters:
                break
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(iter_num, config)
            starts = random_starts(splits["train"], (config.gradient_accumulation_steps, config.batch_size),
                                   config.block_size, generator)  # (steps, B): the global batch
            optimizer.zero_grad(set_to_none=True)
            loss = 0.0
            for step, micro_starts in enumerate(starts[mine]):  # this process's micro-batches
                x, y = get_batch(splits["train"], micro_starts, config.block_size, device)
                last = step == micro_steps - 1  # DDP averages the summed gradients once, after the last
                with (nullcontext() if last or ranks.world_size == 1 else trained.no_sync()):
                    with autocast:
                        micro_loss = trained(x, y)[1] / micro_steps
                    micro_loss.backward()
                loss += micro_loss.detach()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            iter_num += 1
            if iter_num % config.log_interval == 0:  # loss.item() waits for the GPU: only every log_interval
                (lossf,) = sum_over_processes([loss.item()], ranks, device)
                lossf /= ranks.world_size  # the global batch's mean: the same on every process
                check_finite(iter_num, lossf)
                dt = (time.time() - t0) / config.log_interval
                eta = dt * (config.max_iters - iter_num)
                print(f"iter {iter_num}: loss {lossf:.4f}, {dt * 1000:.0f} ms/iter, eta {format_duration(eta)}",
                      flush=True)
                t0 = time.time()
    except KeyboardInterrupt:  # the state goes beside the checkpoint: it has not been evaluated against it
        save(interrupted)
        raise Interrupted(f"interrupted at iter {iter_num}: saved {interrupted} beside {config.ckpt_path} "
                          f"(not over it); continue with --init_from=resume")
    if master and source == interrupted:
        os.remove(interrupted)  # this run went past it: the next resume starts from ckpt_path
    print(f"done: {iter_num} iterations in {format_duration(time.time() - start)}, best val loss {best_val_loss:.4f}")
    return best_val_loss


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(usage())
        return 0
    ranks = Processes()
    try:
        ranks = processes()
        quiet = nullcontext() if ranks.rank == 0 else redirect_stdout(open(os.devnull, "w"))  # rank 0 speaks
        with quiet:
            train(*get_config(argv, ranks.world_size), ranks)
        if dist.is_initialized():
            dist.barrier()  # leave together: a process that tears down while another still talks to it can abort
    except (ConfigError, checkpoint.CheckpointError) as e:
        return fail(f"error: {e}", 2, ranks)
    except (prepare.PrepareError, TrainingError) as e:
        return fail(f"error: {e}", 1, ranks)
    except Interrupted as e:
        return fail(f"\n{e}", 130, ranks)  # after the ^C the terminal shows
    except KeyboardInterrupt:
        return fail("\ninterrupted; no file was left half-written", 130, ranks)
    except RuntimeError as e:
        if not lost_contact(e):
            raise
        print(f"error: rank {ranks.rank} lost contact with the other processes: one of them has stopped",
              file=sys.stderr)  # torchrun stops this one too, and names the one that failed first
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def lost_contact(error):
    """An error of the communication between processes (gloo raises plain RuntimeErrors that name it)."""
    return isinstance(error, dist.DistError) or (dist.is_initialized() and "gloo" in str(error))


def fail(message, status, ranks):
    """Print the message once (every process meets the same errors: rank 0 says it) and return status."""
    if ranks.rank == 0:
        print(message, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
