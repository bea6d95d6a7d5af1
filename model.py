"""
A minimal GPT, in the layout of nanoGPT so that its checkpoints load as they are.

    tokens (B, T) -> embeddings (B, T, C) -> n_layer x Block -> LayerNorm -> logits (B, T, V)

B: batch, T: time (positions), C: n_embd channels, V: vocab_size, H: n_head, D = C / H.
"""
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def dropout(x, p, training):
    """Zero each element with probability p, scaling the rest by 1 / (1 - p), while training; in
    inference (or at p = 0) x itself, without a call into PyTorch: the decode loop makes 13 a token."""
    return F.dropout(x, p, training=True) if training and p > 0 else x


@dataclass
class GPTConfig:
    block_size: int = 256  # longest context the model sees
    vocab_size: int = 65
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as in GPT-2


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x, cache=None, layer=0, sees=None):
        B, T, C = x.shape
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head)  # (B, T, 3C) -> (B, T, 3, H, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # -> (3, B, H, T, D) -> q, k, v: (B, H, T, D) each
        if cache is None:
            # softmax(q k^T / sqrt(D) + causal mask) v: (B, H, T, D) @ (B, H, D, T) @ (B, H, T, D) -> (B, H, T, D)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:
            start = cache.length  # S = start + T: the new tokens attend to the cached ones and to each other
            k, v = cache.append(layer, k, v)  # (B, H, S, D) each
            mask = None  # one new token may see every position: no mask needed
            if sees is not None:  # a tree: new token i sees the cache and the new tokens j with sees[i, j]
                mask = torch.cat((torch.ones(T, start, dtype=torch.bool, device=x.device), sees), dim=1)  # (T, S)
            elif T > 1:  # new token i sees positions up to start + i
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)  # (T, S)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, D) @ (B, H, D, S) @ (B, H, S, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, H, T, D) -> (B, T, H, D) -> (B, T, C)
        return dropout(self.c_proj(y), self.dropout, self.training)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x):
        x = F.gelu(self.c_fc(x))  # (B, T, C) -> (B, T, 4C)
        return dropout(self.c_proj(x), self.dropout, self.training)  # (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, layer=0, sees=None):
        x = x + self.attn(self.ln_1(x), cache, layer, sees)
        return x + self.mlp(self.ln_2(x))


class KVCache:
    """The keys and values every layer has computed so far, so that each new token costs one
    position instead of the whole context again.

    k, v: (L, B, H, block_size + room, D), filled up to `length` positions (the same in every
    layer); `room` holds the extra candidates of a tree (GPT.forward's tree) beyond block_size.
    The cache alone moves `length`: the model appends each layer's new positions, then
    advance()s; a decoder may reset() it or truncate() it back to an earlier length (to take
    back tokens it rejected)."""

    def __init__(self, config, batch_size, device=None, dtype=torch.float32, room=0):
        shape = (config.n_layer, batch_size, config.n_head, config.block_size + room, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self._length = 0

    @property
    def length(self):
        """Positions filled."""
        return self._length

    def append(self, layer, k, v):
        """Store k, v (B, H, T, D) after the filled positions; return all so far, (B, H, length + T, D)."""
        end = self._length + k.size(2)
        self.k[layer, :, :, self._length:end] = k
        self.v[layer, :, :, self._length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n):
        """Count the n positions every layer has just appended as filled."""
        self._length += n

    def truncate(self, length):
        """Forget every position from `length` on (what was stored there is overwritten later)."""
        assert 0 <= length <= self._length, f"cannot truncate {self._length} positions to {length}"
        self._length = length

    def reset(self):
        """Forget every position."""
        self.truncate(0)

    def keep(self, start, kept):
        """Of the positions from `start` on, keep only those at start + kept (kept: a list of
        increasing offsets), moved to start, start + 1, ...: a tree's accepted path."""
        end = start + len(kept)
        at = torch.tensor(kept, dtype=torch.long, device=self.k.device) + start  # (n,)
        self.k[:, :, :, start:end] = self.k[:, :, :, at]  # (L, B, H, n, D), gathered first, then written
        self.v[:, :, :, start:end] = self.v[:, :, :, at]
        self._length = end

    def reorder(self, rows):
        """Keep the rows (B',) of the batch, in that order (beam search follows its surviving beams).
        With B' = B only the filled positions are copied, in place; otherwise the buffers are
        gathered whole, and the batch grows or shrinks to B'."""
        if len(rows) != self.k.size(1):
            self.k, self.v = self.k[:, rows], self.v[:, rows]  # (L, B', H, block_size, D)
            return
        n = self._length
        self.k[:, :, :, :n] = self.k[:, rows, :, :n]  # (L, B, H, n, D), gathered first, then written
        self.v[:, :, :, :n] = self.v[:, rows, :, :n]


class Tree(NamedTuple):
    """New tokens read as a tree of candidates rather than one sequence (GPT.forward)."""
    offset: torch.Tensor  # (T,) the position of each after the cached ones: a candidate's depth in the tree
    sees: torch.Tensor  # (T, T) bool: sees[i, j] when token j is token i or one of its ancestors


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
            wpe=nn.Embedding(config.block_size, config.n_embd),  # learned position embeddings
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 n_layer)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def new_cache(self, batch_size, room=0):
        p = self.lm_head.weight
        return KVCache(self.config, batch_size, p.device, p.dtype, room)

    def num_params(self):
        """Parameters, counting the tied embedding once and leaving out position embeddings (as nanoGPT)."""
        return sum(p.numel() for p in self.parameters()) - self.transformer.wpe.weight.numel()

    def forward(self, idx, targets=None, cache=None, hidden=False, tree=None):
        """idx (B, T) token ids -> logits (B, T, V) at every position, and the mean
        cross-entropy against targets (B, T) when they are given (else None); with hidden=True,
        the last hidden states (B, T, C) too, after the final LayerNorm (contrastive search and
        the Medusa heads read them).

        With a KVCache, idx holds only the tokens that follow the cached ones: they take the
        next positions, attend to the cache, and are appended to it. With a Tree as well, they
        are not one sequence but a tree of candidates: token i takes the position
        cache.length + tree.offset[i] and attends to the cache and to its ancestors (tree.sees)."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if tree is None:
            assert start + T <= self.config.block_size, f"{start + T} positions, block_size is {self.config.block_size}"
            pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        else:
            assert cache is not None and start + int(tree.offset.max()) < self.config.block_size, "a tree past block_size"
            pos = start + tree.offset  # (T,)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C) + (T, C) -> (B, T, C)
        x = dropout(x, self.config.dropout, self.training)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cache, layer, None if tree is None else tree.sees)  # (B, T, C)
        if cache is not None:
            cache.advance(T)
        x = self.transformer.ln_f(x)  # (B, T, C): the last hidden states
        logits = self.lm_head(x)  # (B, T, C) -> (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))  # (B*T, V), (B*T,)
        return (logits, loss, x) if hidden else (logits, loss)
