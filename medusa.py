"""
Medusa heads (Cai et al. 2024, "Medusa: Simple LLM Inference Acceleration Framework with Multiple
Decoding Heads"): small heads on the model's last hidden state guess the tokens after the next
one, so that the model drafts for itself, with no second model.

    h_t            the last hidden state at position t (after the final LayerNorm, model(..., hidden=True))
    lm_head(h_t)   the model's own logits for x_{t+1}
    head_i(h_t) = W_i (h_t + SiLU(U_i h_t + b_i))   logits for x_{t+1+i},  i = 1 .. K

Medusa-1: each head is one residual block and an output layer, trained on the frozen model. U_i
starts at zero and W_i at the model's lm_head, so that every head starts by guessing the next
token itself. The loss is sum_i 0.8^i CE(head_i(h_t), x_{t+1+i}), as in the paper.

B: batch, T: positions, C: n_embd, V: vocabulary size, K: heads.
"""
import hashlib

import torch
import torch.nn as nn
import torch.nn.functional as F

import checkpoint
from files import ctrl_c_deferred, write_atomically

DEFAULT_HEADS = checkpoint.DEFAULT_CKPT.replace("shakespeare_char.pt", "medusa.pt")
DECAY = 0.8  # head i's weight in the loss: 0.8^i


class MedusaHeads(nn.Module):
    def __init__(self, n_embd, vocab_size, num_heads):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(n_embd, n_embd) for _ in range(num_heads))  # U_i, b_i
        self.outputs = nn.ModuleList(nn.Linear(n_embd, vocab_size, bias=False) for _ in range(num_heads))  # W_i
        for block in self.blocks:
            nn.init.zeros_(block.weight)
            nn.init.zeros_(block.bias)

    @property
    def num_heads(self):
        return len(self.blocks)

    def forward(self, hidden):
        """hidden (..., C) -> logits (..., K, V): head i's guess at the token i + 1 places after the next."""
        return torch.stack([out(hidden + F.silu(block(hidden))) for block, out in zip(self.blocks, self.outputs)],
                           dim=-2)


def for_model(model, num_heads):
    """New heads for the model, each output layer a copy of its lm_head."""
    heads = MedusaHeads(model.config.n_embd, model.config.vocab_size, num_heads)
    with torch.no_grad():
        for out in heads.outputs:
            out.weight.copy_(model.lm_head.weight)
    return heads


def targets(ids, num_heads):
    """What each head should have said at each position of ids (B, T + K + 1): head i at position t
    the token at t + 1 + i. -> (B, T, K)"""
    T = ids.size(1) - num_heads - 1
    return torch.stack([ids[:, 1 + i:1 + i + T] for i in range(1, num_heads + 1)], dim=-1)  # (B, T, K)


def loss(logits, target):
    """sum_i 0.8^i CE(head i): logits (B, T, K, V), target (B, T, K) -> scalar."""
    K = logits.size(-2)
    per_head = F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="none").view(-1, K).mean(0)  # (K,)
    return (per_head * DECAY ** torch.arange(1, K + 1, device=logits.device)).sum()


def accuracy(logits, target, k):
    """The share of positions where head i's top k holds the true token: logits (..., K, V),
    target (..., K) -> (K,)"""
    top = logits.topk(k, dim=-1).indices  # (..., K, k)
    return (top == target[..., None]).any(dim=-1).flatten(0, -2).float().mean(0)  # (K,)


def fingerprint(model):
    """A short hash of the model's weights: heads trained on one model are refused by another."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def save(path, heads, model, stats):
    """The heads, their shape, the fingerprint of the model they read and their measured
    accuracies (stats), written atomically (files.write_atomically)."""
    state = {"heads": heads.state_dict(), "num_heads": heads.num_heads, "n_embd": model.config.n_embd,
             "vocab_size": model.config.vocab_size, "model": fingerprint(model), "stats": stats}
    with ctrl_c_deferred():
        write_atomically(path, lambda f: torch.save(state, f))


def holds_heads(path):
    """True when path is a readable file of Medusa heads (else load() or checkpoint.load() says why not)."""
    try:
        state = checkpoint.read_plain(path)
    except checkpoint.CheckpointError:
        return False
    return isinstance(state, dict) and "heads" in state


def load(path, model):
    """The heads saved for this model, in eval mode; a checkpoint.CheckpointError with one line
    when the file is missing, unreadable, not Medusa heads, or made for another model. Nothing in
    the file runs (weights_only=True)."""
    state = checkpoint.read_plain(path)
    keys = {"heads", "num_heads", "n_embd", "vocab_size", "model", "stats"}
    if not isinstance(state, dict) or set(state) != keys or not isinstance(state["num_heads"], int) \
            or not 1 <= state["num_heads"] <= 16:
        raise checkpoint.CheckpointError(f"{path} is not a file of Medusa heads (train_medusa.py writes them)")
    if (state["n_embd"], state["vocab_size"]) != (model.config.n_embd, model.config.vocab_size) \
            or state["model"] != fingerprint(model):
        raise checkpoint.CheckpointError(f"{path}: these Medusa heads were trained on another model "
                                         f"(python train_medusa.py trains heads for yours)")
    heads = MedusaHeads(state["n_embd"], state["vocab_size"], state["num_heads"])
    try:
        heads.load_state_dict(state["heads"])
    except (RuntimeError, TypeError, AttributeError) as e:
        raise checkpoint.CheckpointError(f"{path}: weights do not fit the heads ({str(e).splitlines()[0]})")
    return heads.to(model.lm_head.weight.device).eval()
