"""The architecture fields shared by the model (``ModelConfig``) and the config (``model`` section).

Kept apart from ``transformer.py`` so that reading a config does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

ARCHS = ("encoder-decoder", "decoder-only", "encoder-only")
POSITIONS = ("sinusoidal", "learned", "rotary")
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "swiglu")


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """The shape of the network; the config's ``model`` section is this plus a preset name."""

    arch: str = "encoder-decoder"
    n_embd: int = 256
    n_head: int = 4
    n_encoder_layer: int = 3  # 0 for decoder-only
    n_decoder_layer: int = 3  # 0 for encoder-only
    d_ff: int = 1024  # hidden width of the feed-forward (of each half for swiglu)
    dropout: float = 0.1
    max_len: int = 256  # longest sequence (decoder-only: prompt and continuation together)
    norm_first: bool = True  # pre-LN trains reliably without a long warmup; the 2017 paper is post-LN
    positions: str = "sinusoidal"
    activation: str = "relu"
    scale_embeddings: bool = True  # multiply token embeddings by sqrt(n_embd), as the 2017 paper
    tie_embeddings: bool = True  # one matrix for source, target and output (joint vocabulary)
    embed_norm: bool = False  # a LayerNorm on the summed embeddings, as BERT has
    norm_eps: float = 1e-5  # every LayerNorm's epsilon (BERT's is 1e-12, GPT-2's 1e-5)
