"""lmlab models in other libraries' layouts. A decoder-only ``Transformer`` with GPT-2's layout
(``model=gpt2-124m``: learned positions, pre-LN, tanh-GELU, tied output) maps tensor for tensor
onto Hugging Face's ``GPT2LMHeadModel``; ``transformers`` is needed only for ``to_gpt2``."""

from __future__ import annotations

import torch

from lmlab.model.transformer import Transformer

# lmlab block tensor -> GPT-2 block tensor, and whether GPT-2's Conv1D stores it transposed
_BLOCK = (("self_attn.qkv", "attn.c_attn", True), ("self_attn.proj", "attn.c_proj", True),
          ("ff.up", "mlp.c_fc", True), ("ff.down", "mlp.c_proj", True),
          ("ln1", "ln_1", False), ("ln3", "ln_2", False))


def check_gpt2_layout(model: Transformer) -> None:
    c = model.cfg
    wanted = {"arch": "decoder-only", "norm_first": True, "positions": "learned",
              "activation": "gelu_tanh", "scale_embeddings": False, "tie_embeddings": True}
    for key, value in wanted.items():
        if getattr(c, key) != value:
            raise ValueError(f"model.{key}={getattr(c, key)!r}: GPT-2's layout needs {value!r} "
                             "(as in conf/model/gpt2-124m.yaml)")


def gpt2_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """``model``'s weights under GPT2LMHeadModel's names (``lm_head.weight`` is tied to wte)."""
    check_gpt2_layout(model)
    ours = model.state_dict()
    out = {"transformer.wte.weight": ours["embed.weight"], "transformer.wpe.weight": ours["pos_embed.weight"],
           "transformer.ln_f.weight": ours["dec_ln.weight"], "transformer.ln_f.bias": ours["dec_ln.bias"]}
    for i in range(model.cfg.n_decoder_layer):
        for mine, gpt2, transpose in _BLOCK:
            w = ours[f"decoder.{i}.{mine}.weight"]
            out[f"transformer.h.{i}.{gpt2}.weight"] = w.t().contiguous() if transpose else w.clone()
            out[f"transformer.h.{i}.{gpt2}.bias"] = ours[f"decoder.{i}.{mine}.bias"].clone()
    return out


def to_gpt2(model: Transformer, *, bos_id: int, eos_id: int, pad_id: int):
    """A ``transformers.GPT2LMHeadModel`` (eval mode) computing what ``model`` computes."""
    import transformers

    c = model.cfg
    config = transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.max_len, n_embd=c.n_embd, n_layer=c.n_decoder_layer,
        n_head=c.n_head, n_inner=c.d_ff, activation_function="gelu_new", resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=bos_id,
        eos_token_id=eos_id, pad_token_id=pad_id, tie_word_embeddings=True)
    hf = transformers.GPT2LMHeadModel(config)
    missing, unexpected = hf.load_state_dict(gpt2_state_dict(model), strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"GPT-2 mapping incomplete: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf.eval()
