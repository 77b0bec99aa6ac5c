"""The Transformer, in plain PyTorch.

One set of blocks serves both architectures: an encoder-decoder (Vaswani et al., 2017) for
translation, and, through the same ``DecoderBlock`` without cross-attention, a decoder-only model
(a later issue). The module knows nothing of Lightning or of decoding strategies; decoding talks to
it through two calls:

    memory = model.encode(src, src_pad)                       # once per batch
    logits = model.decode(tgt, memory, src_pad, cache, start)  # once per step, with a KV cache

Shapes: B batch, S source length, T target length, C = n_embd, nh heads, hs = C // nh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, asdict

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelConfig:
    """Architecture only; everything else (optimiser, data) lives in other configs."""

    vocab_size: int
    arch: str = "encoder-decoder"
    n_embd: int = 256
    n_head: int = 4
    n_encoder_layer: int = 3
    n_decoder_layer: int = 3
    d_ff: int = 1024
    dropout: float = 0.1
    max_len: int = 256
    norm_first: bool = True  # pre-LN trains reliably without a long warmup; the 2017 paper is post-LN
    tie_embeddings: bool = True  # one matrix for source, target and output (joint vocabulary)
    pad_id: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoidal_positions(n: int, dim: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv)
    return table  # (n, C)


class KVCache:
    """Per-layer keys and values of the decoder: self-attention grows by one step per call,
    cross-attention is computed once from the encoder memory and then reused."""

    def __init__(self, n_layer: int):
        self.self_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer
        self.cross_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` of every cached tensor (beam search picks surviving beams)."""
        for kvs in (self.self_kv, self.cross_kv):
            for i, kv in enumerate(kvs):
                if kv is not None:
                    kvs[i] = (kv[0].index_select(0, index), kv[1].index_select(0, index))


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.q = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.kv = nn.Linear(cfg.n_embd, 2 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

    def forward(self, x, kv_source=None, mask=None, causal=False, cache=None, static_kv=False):
        """``kv_source`` is None for self-attention. ``cache`` is a (list, index) slot of a KVCache:
        self-attention appends this step's keys; cross-attention (static_kv) computes them once."""
        q = self._heads(self.q(x))
        cached = cache[0][cache[1]] if cache is not None else None
        if static_kv and cached is not None:
            k, v = cached
        else:
            k, v = self.kv(x if kv_source is None else kv_source).chunk(2, dim=-1)
            k, v = self._heads(k), self._heads(v)  # (B, nh, S, hs)
            if cached is not None:
                k, v = torch.cat([cached[0], k], dim=2), torch.cat([cached[1], v], dim=2)
        if cache is not None:
            cache[0][cache[1]] = (k, v)
        # A cached decoder step attends to every earlier position, so causality only matters when
        # several query positions are processed at once without a cache offset (training).
        is_causal = causal and cached is None and q.size(2) > 1
        if causal and cached is not None and q.size(2) > 1:
            # several new positions on top of a cache: explicit mask (row i sees past + itself)
            T, S = q.size(2), k.size(2)
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, nh, T, hs)
        B, _, T, _ = y.shape
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.n_embd, cfg.d_ff)
        self.down = nn.Linear(cfg.d_ff, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.down(self.drop(F.relu(self.up(x))))


class EncoderBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm_first = cfg.norm_first
        self.attn, self.ff = Attention(cfg), FeedForward(cfg)
        self.ln1, self.ln2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, mask):
        if self.norm_first:
            x = x + self.drop(self.attn(self.ln1(x), mask=mask))
            return x + self.drop(self.ff(self.ln2(x)))
        x = self.ln1(x + self.drop(self.attn(x, mask=mask)))
        return self.ln2(x + self.drop(self.ff(x)))


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention to the encoder (skipped when ``cross`` is False,
    which is the decoder-only layout), feed-forward."""

    def __init__(self, cfg: ModelConfig, cross: bool = True):
        super().__init__()
        self.norm_first = cfg.norm_first
        self.self_attn, self.ff = Attention(cfg), FeedForward(cfg)
        self.cross_attn = Attention(cfg) if cross else None
        self.ln1, self.ln3 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.ln2 = nn.LayerNorm(cfg.n_embd) if cross else None
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, memory=None, mem_mask=None, cache=None, layer=0):
        self_slot = (cache.self_kv, layer) if cache is not None else None
        cross_slot = (cache.cross_kv, layer) if cache is not None else None
        sublayers = [lambda h: self.self_attn(h, causal=True, cache=self_slot)]
        norms = [self.ln1]
        if self.cross_attn is not None:
            sublayers.append(lambda h: self.cross_attn(
                h, kv_source=memory, mask=mem_mask, cache=cross_slot, static_kv=True))
            norms.append(self.ln2)
        sublayers.append(self.ff)
        norms.append(self.ln3)
        for f, ln in zip(sublayers, norms):
            x = x + self.drop(f(ln(x))) if self.norm_first else ln(x + self.drop(f(x)))
        return x


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.arch != "encoder-decoder":
            raise ValueError(f"model.arch={cfg.arch!r} is not built yet; use 'encoder-decoder'")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd, padding_idx=cfg.pad_id)
        self.register_buffer("pos", sinusoidal_positions(cfg.max_len, cfg.n_embd), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_encoder_layer))
        self.decoder = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_decoder_layer))
        # pre-LN stacks need a final norm; post-LN blocks already end in one
        self.enc_ln = nn.LayerNorm(cfg.n_embd) if cfg.norm_first else nn.Identity()
        self.dec_ln = nn.LayerNorm(cfg.n_embd) if cfg.norm_first else nn.Identity()
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def _init(self, m):
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=self.cfg.n_embd ** -0.5)
            nn.init.zeros_(m.weight[self.cfg.pad_id])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _embed(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        T = ids.size(1)
        if start + T > self.cfg.max_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds model.max_len={self.cfg.max_len}")
        # scale as in the paper so the embeddings are not swamped by the positional table
        x = self.embed(ids) * math.sqrt(self.cfg.n_embd) + self.pos[start:start + T]
        return self.drop(x)  # (B, T, C)

    @staticmethod
    def attention_mask(pad: torch.Tensor) -> torch.Tensor:
        """(B, S) True-at-padding -> (B, 1, 1, S) True-where-attention-is-allowed."""
        return ~pad[:, None, None, :]

    def encode(self, src: torch.Tensor, src_pad: torch.Tensor) -> torch.Tensor:
        mask = self.attention_mask(src_pad)
        x = self._embed(src)
        for block in self.encoder:
            x = block(x, mask)
        return self.enc_ln(x)  # (B, S, C)

    def decode(self, tgt, memory, src_pad, cache: KVCache | None = None, start: int = 0):
        """Logits for target positions ``start .. start+T-1`` given the tokens ``tgt`` (B, T)."""
        mask = self.attention_mask(src_pad)
        x = self._embed(tgt, start)
        for i, block in enumerate(self.decoder):
            x = block(x, memory, mask, cache, i)
        return self.lm_head(self.dec_ln(x))  # (B, T, V)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.decoder))

    def forward(self, src, src_pad, tgt_in):
        return self.decode(tgt_in, self.encode(src, src_pad), src_pad)
