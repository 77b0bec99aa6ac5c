"""The Transformer, in plain PyTorch, in both architectures.

One set of blocks builds both:

* ``arch="encoder-decoder"``: the original Transformer (Vaswani et al., 2017) for translation;
* ``arch="decoder-only"``: a GPT-style causal language model. With learned positions, pre-LN,
  ``gelu_tanh`` and tied embeddings it has GPT-2's exact layout, one of our tensors per GPT-2
  tensor (``qkv`` is GPT-2's ``c_attn`` transposed, ``ln1``/``ln3`` its ``ln_1``/``ln_2``);
* ``arch="encoder-only"``: a BERT-style masked language model (Devlin et al., 2019): the encoder
  blocks, then BERT's prediction head (a dense layer, GELU and LayerNorm before the tied output
  layer, which has a bias). Its vocabulary is the tokenizer's plus one last id, ``<mask>``
  (``mask_id``), which the tokenizers do not have.

The module knows nothing of Lightning or of decoding strategies. Decoding talks to it through
two calls, the same for both architectures:

    memory = model.encode(src, src_pad)                       # once per batch
    logits = model.decode(tgt, memory, src_pad, cache, start)  # once per step, with a KV cache

For a decoder-only model the "memory" is the prompt itself, left-padded (see ``encode``), and the
first ``decode`` call runs prompt and target together. Training a decoder-only model on sentence
pairs reads ``source EOS BOS target`` as one sequence (``lm``) and is scored on the target only.

Shapes: B batch, S source length, T target length, C = n_embd, nh heads, hs = C // nh.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.model.architecture import ACTIVATIONS, ARCHS, POSITIONS, Architecture


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Architecture):
    """Everything needed to rebuild the module: the architecture and its vocabulary."""

    vocab_size: int
    pad_id: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, cfg, vocab_size: int, pad_id: int = 0) -> ModelConfig:
        """The model of a run config ``cfg`` (its ``model`` section, less the preset's name) for a
        tokenizer of ``vocab_size`` tokens (an encoder-only model adds one, ``<mask>``); lmlab's
        tokenizers put ``<pad>`` at id 0."""
        arch = {k: v for k, v in cfg.model.__dict__.items() if k != "name"}
        extra = 1 if arch["arch"] == "encoder-only" else 0
        return cls(vocab_size=vocab_size + extra, pad_id=pad_id, **arch)


def sinusoidal_positions(n: int, dim: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv)
    return table  # (n, C)


def rotary_tables(n: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of RoPE (Su et al., 2021) in the "rotate half" layout, each (n, hs)."""
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.arange(n, dtype=torch.float32)[:, None] * inv  # (n, hs/2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, nh, T, hs) queries or keys by the angles of their positions, cos/sin (B|1, 1, T, hs)."""
    half = x.size(-1) // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class KVCache:
    """Per-layer keys and values of the decoder: self-attention grows by one step per call,
    cross-attention is computed once from the encoder memory and then reused.

    A layer's self-attention keys and values share one buffer (2, B, nh, room, hs) with room for
    ``GROW`` more positions, so a step writes both in place with one copy instead of copying the
    whole history into a new tensor. The room is kept small because beam search copies whole
    buffers when it reorders them.
    """

    GROW = 32

    def __init__(self, n_layer: int):
        self.self_kv: list[torch.Tensor | None] = [None] * n_layer  # buffers
        self.cross_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer
        self._len = 0  # positions filled in the self-attention buffers (the same in every layer)

    def append(self, layer: int, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this call's keys and values, stacked (2, B, nh, T, hs), of ``layer``; return all
        keys and all values so far. The length advances once every layer has appended (the last
        layer moves it)."""
        T, start = kv.size(3), self._len
        buf = self.self_kv[layer]
        if buf is None or buf.size(3) < start + T:
            two, B, nh, _, hs = kv.shape
            grown = kv.new_empty(two, B, nh, start + T + self.GROW, hs)
            if buf is not None:
                grown[:, :, :, :start] = buf[:, :, :, :start]
            buf = self.self_kv[layer] = grown
        buf[:, :, :, start:start + T] = kv
        if layer == len(self.self_kv) - 1:
            self._len = start + T
        k, v = buf[:, :, :, :start + T]
        return k, v

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` of every cached tensor (beam search picks surviving beams). Only
        the filled part of a self-attention buffer is copied, straight into a new buffer."""
        L = self._len
        for i, buf in enumerate(self.self_kv):
            if buf is not None:
                fresh = buf.new_empty(buf.size(0), index.numel(), *buf.shape[2:])
                torch.index_select(buf[:, :, :, :L], 1, index, out=fresh[:, :, :, :L])
                self.self_kv[i] = fresh
        for i, kv in enumerate(self.cross_kv):
            if kv is not None:
                self.cross_kv[i] = (kv[0].index_select(0, index), kv[1].index_select(0, index))

    def length(self) -> int:
        return self._len


class Attention(nn.Module):
    """Multi-head attention over SDPA. Self-attention projects q, k, v with one fused matrix;
    cross-attention (``cross=True``) projects q from the decoder and k, v from the encoder."""

    def __init__(self, cfg: Architecture, cross: bool = False):
        super().__init__()
        C = cfg.n_embd
        self.n_head, self.cross, self.dropout = cfg.n_head, cross, cfg.dropout
        if cross:
            self.q, self.kv = nn.Linear(C, C), nn.Linear(C, 2 * C)
        else:
            self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

    def forward(self, x, mask=None, is_causal=False, slot=None, memory=None, rope=None):
        """``mask`` (B|1, 1, T, S) True where attention is allowed. ``slot`` is a (KVCache, layer)
        place: self-attention appends this call's keys, cross-attention fills it once."""
        if self.cross:
            q = self._heads(self.q(x))
            cached = slot[0].cross_kv[slot[1]] if slot is not None else None
            if cached is not None:
                k, v = cached
            else:
                k, v = (self._heads(t) for t in self.kv(memory).chunk(2, dim=-1))  # (B, nh, S, hs)
                if slot is not None:
                    # read at every decoding step: one copy now makes each head's keys and values
                    # contiguous, which SDPA reads faster than the strided views (greedy b64 +7%)
                    k, v = k.contiguous(), v.contiguous()
                    slot[0].cross_kv[slot[1]] = (k, v)
        else:
            B, T, C = x.shape
            qkv = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
            q, k, v = qkv  # each (B, nh, T, hs)
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
            if slot is not None:
                kv = qkv[1:] if rope is None else torch.stack((k, v))  # (2, B, nh, T, hs)
                k, v = slot[0].append(slot[1], kv)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, nh, T, hs)
        B, _, T, _ = y.shape
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """Position-wise MLP; ``swiglu`` (Shazeer, 2020) gates one half of ``up`` with the other."""

    def __init__(self, cfg: Architecture):
        super().__init__()
        self.activation = cfg.activation
        width = 2 * cfg.d_ff if cfg.activation == "swiglu" else cfg.d_ff
        self.up = nn.Linear(cfg.n_embd, width)
        self.down = nn.Linear(cfg.d_ff, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        h = self.up(x)
        if self.activation == "swiglu":
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        elif self.activation == "relu":
            h = F.relu(h)
        else:
            h = F.gelu(h, approximate="tanh" if self.activation == "gelu_tanh" else "none")
        return self.down(self.drop(h) if self.training else h)


def layer_norm(cfg: Architecture) -> nn.LayerNorm:
    return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps)


class Block(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; each a residual sublayer normed
    before (pre-LN) or after (post-LN). Encoder blocks and decoder-only blocks have no cross-attention."""

    def __init__(self, cfg: Architecture, cross: bool = False):
        super().__init__()
        self.norm_first = cfg.norm_first
        self.self_attn, self.ff = Attention(cfg), FeedForward(cfg)
        self.cross_attn = Attention(cfg, cross=True) if cross else None
        self.ln1, self.ln3 = layer_norm(cfg), layer_norm(cfg)
        self.ln2 = layer_norm(cfg) if cross else None
        self.drop = nn.Dropout(cfg.dropout)

    def _residual(self, x, f, ln):
        # (dropout modules are only called in training: in eval they would be one more call per
        # sublayer and decoding step for nothing)
        if self.norm_first:
            h = f(ln(x))
            return x + (self.drop(h) if self.training else h)
        h = f(x)
        return ln(x + (self.drop(h) if self.training else h))

    def forward(self, x, mask=None, is_causal=False, rope=None, memory=None, mem_mask=None,
                cache=None, layer=0):
        self_slot = (cache, layer) if cache is not None else None
        x = self._residual(x, lambda h: self.self_attn(h, mask, is_causal, self_slot, rope=rope), self.ln1)
        if self.cross_attn is not None:
            cross_slot = (cache, layer) if cache is not None else None
            x = self._residual(x, lambda h: self.cross_attn(h, mem_mask, slot=cross_slot, memory=memory),
                               self.ln2)
        return self._residual(x, self.ff, self.ln3)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.arch not in ARCHS:
            raise ValueError(f"model.arch={cfg.arch!r} must be one of {', '.join(ARCHS)}")
        if cfg.positions not in POSITIONS:
            raise ValueError(f"model.positions={cfg.positions!r} must be one of {', '.join(POSITIONS)}")
        if cfg.activation not in ACTIVATIONS:
            raise ValueError(f"model.activation={cfg.activation!r} must be one of {', '.join(ACTIVATIONS)}")
        self.cfg = cfg
        self.decoder_only = cfg.arch == "decoder-only"
        self.encoder_only = cfg.arch == "encoder-only"
        C, hs = cfg.n_embd, cfg.n_embd // cfg.n_head
        self.embed = nn.Embedding(cfg.vocab_size, C, padding_idx=cfg.pad_id)
        if cfg.positions == "learned":
            self.pos_embed = nn.Embedding(cfg.max_len, C)
        elif cfg.positions == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_positions(cfg.max_len, C), persistent=False)
        else:
            cos, sin = rotary_tables(cfg.max_len, hs)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.embed_ln = layer_norm(cfg) if cfg.embed_norm else None  # BERT's
        self.drop = nn.Dropout(cfg.dropout)
        n_enc = 0 if self.decoder_only else cfg.n_encoder_layer
        self.encoder = nn.ModuleList(Block(cfg) for _ in range(n_enc))
        self.decoder = nn.ModuleList(Block(cfg, cross=not self.decoder_only)
                                     for _ in range(cfg.n_decoder_layer))
        # pre-LN stacks need a final norm; post-LN blocks already end in one
        final = (lambda: layer_norm(cfg)) if cfg.norm_first else nn.Identity
        self.enc_ln = final() if n_enc else nn.Identity()
        self.dec_ln = final() if cfg.n_decoder_layer else nn.Identity()
        if self.encoder_only:  # BERT's prediction head, and a bias on the output layer
            self.mlm_transform = nn.Sequential(nn.Linear(C, C), nn.GELU(), layer_norm(cfg))
            self.mlm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.lm_head = nn.Linear(C, cfg.vocab_size, bias=False)
        self.apply(self._init)
        if self.decoder_only:  # GPT-2's scaled init of the projections that feed the residual stream
            for name, p in self.named_parameters():
                if name.endswith(("proj.weight", "down.weight")):
                    nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_decoder_layer))
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    @property
    def normal_init(self) -> bool:
        """GPT-2's and BERT's initialisation, N(0, 0.02), rather than the 2017 paper's Xavier."""
        return self.decoder_only or self.encoder_only

    @property
    def mask_id(self) -> int:
        """The ``<mask>`` id of an encoder-only model: the last row of its vocabulary."""
        if not self.encoder_only:
            raise ValueError(f"a {self.cfg.arch} model has no <mask> token")
        return self.cfg.vocab_size - 1

    def _init(self, m):
        if isinstance(m, nn.Linear):
            if self.normal_init:
                nn.init.normal_(m.weight, std=0.02)
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            std = 0.02 if self.normal_init or not self.cfg.scale_embeddings else self.cfg.n_embd ** -0.5
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                nn.init.zeros_(m.weight[m.padding_idx])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- inputs ---------------------------------------------------------------------------------

    def _embed(self, ids: torch.Tensor, pos: torch.Tensor, length: int):
        """Token (+ position) embeddings of ``ids`` (B, T) at positions ``pos`` (B|1, T), all below
        ``length`` (checked here without reading ``pos`` back from the device); returns (x, rope),
        rope being the (cos, sin) pair for rotary attention, else None."""
        if length > self.cfg.max_len:
            raise ValueError(f"a sequence of {length} tokens exceeds model.max_len={self.cfg.max_len}")
        x = self.embed(ids)
        if self.cfg.scale_embeddings:  # so the embeddings are not swamped by a sinusoidal table
            x = x * math.sqrt(self.cfg.n_embd)
        rope = None
        if self.cfg.positions == "learned":
            x = x + self.pos_embed(pos)
        elif self.cfg.positions == "sinusoidal":
            x = x + self.pos_table[pos]
        else:
            rope = (self.rope_cos[pos][:, None], self.rope_sin[pos][:, None])  # (B|1, 1, T, hs)
        if self.embed_ln is not None:
            x = self.embed_ln(x)
        return (self.drop(x) if self.training else x), rope  # (B, T, C)

    @staticmethod
    def attention_mask(pad: torch.Tensor) -> torch.Tensor:
        """(B, S) True-at-padding -> (B, 1, 1, S) True-where-attention-is-allowed."""
        return ~pad[:, None, None, :]

    def _run_decoder(self, x, rope, cache, last: int | None = None, **kw):
        """Logits (B, T, V), or of the ``last`` positions only (the output layer is the costliest
        matmul of a decoding step, and a prompt's positions need none)."""
        for i, block in enumerate(self.decoder):
            x = block(x, rope=rope, cache=cache, layer=i, **kw)
        if last is not None:
            x = x[:, -last:]
        return self.lm_head(self.dec_ln(x))

    # -- encoder-decoder ------------------------------------------------------------------------

    def encode(self, src: torch.Tensor, src_pad: torch.Tensor | None) -> torch.Tensor:
        """Encoder states (B, S, C); for decoder-only, the prompt ids (B, S) moved to the right
        end of their rows, so that every prompt ends where generation starts. ``src_pad`` may be
        None when no position is padding."""
        if self.decoder_only:
            return left_align(src, src_pad)
        x, rope = self._embed(src, torch.arange(src.size(1), device=src.device)[None], src.size(1))
        mask = None if src_pad is None else self.attention_mask(src_pad)
        for block in self.encoder:
            x = block(x, mask, rope=rope)
        return self.enc_ln(x)  # (B, S, C)

    def decode(self, tgt, memory, src_pad, cache: KVCache | None = None, start: int = 0):
        """Logits (B, T, V) for target positions ``start .. start+T-1`` given the tokens ``tgt``
        (B, T); ``start`` must equal the number of target tokens already in ``cache``. ``src_pad``
        may be None when no source position is padding."""
        if self.decoder_only:
            return self._decode_prompted(tgt, memory, cache, start)
        if self.encoder_only:
            raise ValueError("an encoder-only model has no decoder: it fills in masked tokens (mlm), "
                             "it does not generate")
        T = tgt.size(1)
        x, rope = self._embed(tgt, start + torch.arange(T, device=tgt.device)[None], start + T)
        # Several query positions at once: causal. With a cache offset the mask must say so
        # explicitly (row i sees the past and itself); one new position sees everything cached.
        mask, is_causal = None, False
        if T > 1 and start == 0:
            is_causal = True
        elif T > 1:
            mask = torch.ones(T, start + T, dtype=torch.bool, device=tgt.device).tril(start)
        # No padded source position (src_pad None): no cross-attention mask to build each step.
        mem_mask = None if src_pad is None else self.attention_mask(src_pad)
        return self._run_decoder(x, rope, cache, mask=mask, is_causal=is_causal, memory=memory,
                                 mem_mask=mem_mask)

    def forward(self, src, src_pad, tgt_in):
        """Teacher-forced logits (B, T, V) of the target given the source (both architectures)."""
        return self.decode(tgt_in, self.encode(src, src_pad), src_pad)

    # -- encoder-only ---------------------------------------------------------------------------

    def mlm(self, ids: torch.Tensor, pad: torch.Tensor | None = None,
            where: torch.Tensor | None = None) -> torch.Tensor:
        """Masked language-model logits (B, T, V) at every position of ``ids`` (B, T), each
        position seeing the whole row (no causal mask); ``pad`` (B, T) True at padding, or None.
        With ``where`` (B, T), True at the positions wanted, only those: (N, V) in row-major
        order. The output layer is the costliest matmul at these sizes, and training scores only
        the masked 15%, so it skips the rest (as Megatron-LM's and Cramming's BERTs do)."""
        h = self.encode(ids, pad)
        if where is not None:
            h = h[where]
        return self.lm_head(self.mlm_transform(h)) + self.mlm_bias

    # -- decoder-only ---------------------------------------------------------------------------

    def lm(self, ids: torch.Tensor) -> torch.Tensor:
        """Causal language-model logits (B, T, V) of right-padded sequences starting at position 0
        (padding at the end cannot affect earlier positions, so no mask is needed)."""
        x, rope = self._embed(ids, torch.arange(ids.size(1), device=ids.device)[None], ids.size(1))
        return self._run_decoder(x, rope, None, is_causal=True)

    def _decode_prompted(self, tgt, prompt, cache, start):
        """Decoder-only decoding step. ``prompt`` (B, P) is left-padded; positions count real
        tokens only, so the first real token of every row is position 0, as in training."""
        prompt_pad = prompt.eq(self.cfg.pad_id)  # (B, P)
        B, P = prompt.shape
        T = tgt.size(1)
        n_real = P - prompt_pad.sum(1, keepdim=True)  # (B, 1)
        if start == 0:
            ids = torch.cat([prompt, tgt], dim=1)  # (B, P+T)
            key_pad = torch.cat([prompt_pad, prompt_pad.new_zeros(B, T)], dim=1)
            pos = (torch.cumsum(~key_pad, dim=1) - 1).clamp(min=0)
        else:
            if cache is None or cache.length() != P + start:
                raise ValueError("decode(start > 0) of a decoder-only model needs the cache of the earlier steps")
            ids, key_pad = tgt, None
            pos = n_real + start + torch.arange(T, device=tgt.device)  # (B, T)
        L, K = ids.size(1), P + start + T
        x, rope = self._embed(ids, pos, K)
        if not prompt_pad.any() and (start == 0 or T == 1):
            # no padding: plain causal attention (one new position sees everything cached), which
            # lets SDPA skip the mask
            return self._run_decoder(x, rope, cache, last=T, is_causal=start == 0 and L > 1)
        if key_pad is None:
            key_pad = torch.cat([prompt_pad, prompt_pad.new_zeros(B, start + T)], dim=1)
        causal = torch.ones(L, K, dtype=torch.bool, device=tgt.device).tril(K - L)  # (L, K)
        # A padding query may see only itself: a row with nothing to attend to would give NaN.
        itself = causal.triu(K - L)  # (L, K), the diagonal ending in the bottom-right corner
        mask = (causal & ~key_pad[:, None, None, :]) | itself  # (B, 1, L, K)
        return self._run_decoder(x, rope, cache, last=T, mask=mask)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.decoder))


def left_align(ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Move the padding of right-padded rows to the left: [a b c P P] -> [P P a b c]."""
    S = ids.size(1)
    shift = pad.sum(1, keepdim=True)  # (B, 1)
    index = (torch.arange(S, device=ids.device)[None] - shift) % S
    return ids.gather(1, index)
