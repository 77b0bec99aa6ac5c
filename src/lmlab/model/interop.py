"""lmlab models in other libraries' layouts, both ways.

Export: a decoder-only ``Transformer`` with GPT-2's layout (``model=gpt2-124m``: learned positions,
pre-LN, tanh-GELU, tied output) maps tensor for tensor onto Hugging Face's ``GPT2LMHeadModel``;
``transformers`` is needed only for ``to_gpt2``.

Import (``read_hf``, what ``init_from`` does with a folder): a ``GPT2LMHeadModel`` or
``BertForMaskedLM`` saved with ``save_pretrained``, read from its files (safetensors or a PyTorch
pickle, ``config.json``, ``tokenizer.json``) without ``transformers``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmlab.data.tokenizer import BOS, EOS, N_SPECIAL, PAD, UNK
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


# -- import: a Hugging Face model directory (``save_pretrained``) as an init_from -----------------

# what a Hugging Face activation name computes, in lmlab's words
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
# BERT's per-layer tensors: lmlab name -> Hugging Face name under bert.encoder.layer.{i}.
_BERT_BLOCK = (("self_attn.proj", "attention.output.dense"), ("ln1", "attention.output.LayerNorm"),
               ("ff.up", "intermediate.dense"), ("ff.down", "output.dense"), ("ln3", "output.LayerNorm"))


class HFImportError(ValueError):
    """A Hugging Face directory lmlab cannot take: one line naming the directory and the cause."""


def is_hf_dir(path: Path) -> bool:
    """A folder saved by ``save_pretrained`` (it has ``config.json``)."""
    return path.is_dir() and (path / "config.json").is_file()


def read_hf(path: Path) -> tuple[dict[str, torch.Tensor], dict, str, dict]:
    """(weights under lmlab's names, ``ModelConfig`` fields, tokenizer JSON, payload) of a
    ``GPT2LMHeadModel`` or ``BertForMaskedLM`` saved with ``save_pretrained``, with its fast
    tokenizer (``tokenizer.json``) beside it.

    lmlab's tokenizers have ``<pad> <unk> <s> </s>`` at ids 0-3, so the vocabulary is re-indexed:
    the model's own special tokens take those ids (end of text -> ``</s>``; BERT's ``[CLS]`` ->
    ``<s>``, ``[SEP]`` -> ``</s>``; a role the model has no token for, or shares with one already
    placed, gets a new row, the mean of the others, zero for ``<pad>``), every other token keeps
    its order from id 4, and BERT's ``[MASK]`` becomes lmlab's ``<mask>``, the last id. The
    embedding and output rows are permuted to match: ``payload["hf_ids"][i]`` is the Hugging Face
    id of lmlab id i (None for a new row). BERT's token-type embedding of type 0 is added to its
    positions (lmlab reads one segment). Tensors lmlab has no place for (BERT's pooler) keep their
    names, so the run reports them as dropped."""
    config = _read_json(path, "config.json")
    kind = config.get("model_type")
    if kind not in ("gpt2", "bert"):
        raise HFImportError(f"init_from={str(path)!r} holds a Hugging Face {kind!r} model: lmlab imports "
                           "gpt2 (GPT2LMHeadModel) and bert (BertForMaskedLM)")
    encoder_only = kind == "bert"
    _check_supported(path, config)
    hf_ids, tokenizer_json = _reindex_vocab(path, config, encoder_only)
    weights = _hf_weights(path)
    prefix = "transformer." if kind == "gpt2" else "bert."
    weights = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in weights.items()}
    mapped, used = (_from_bert if encoder_only else _from_gpt2)(weights, config, hf_ids, path)
    mapped |= {k: v for k, v in weights.items() if k not in used}  # left out: reported as dropped
    if kind == "gpt2":
        model_config = dict(
            arch="decoder-only", n_embd=config["n_embd"], n_head=config["n_head"], n_encoder_layer=0,
            n_decoder_layer=config["n_layer"], d_ff=config.get("n_inner") or 4 * config["n_embd"],
            dropout=config.get("resid_pdrop", 0.1), max_len=config["n_positions"], norm_first=True,
            positions="learned", activation=_ACTIVATIONS[config.get("activation_function", "gelu_new")],
            norm_eps=config.get("layer_norm_epsilon", 1e-5))
    else:
        model_config = dict(
            arch="encoder-only", n_embd=config["hidden_size"], n_head=config["num_attention_heads"],
            n_encoder_layer=config["num_hidden_layers"], n_decoder_layer=0, d_ff=config["intermediate_size"],
            dropout=config.get("hidden_dropout_prob", 0.1), max_len=config["max_position_embeddings"],
            norm_first=False, positions="learned", activation="gelu", embed_norm=True,
            norm_eps=config.get("layer_norm_eps", 1e-12))
    model_config |= dict(vocab_size=len(hf_ids), pad_id=0, scale_embeddings=False,
                         tie_embeddings=config.get("tie_word_embeddings", True))
    payload = {"format": f"huggingface-{kind}", "hf_ids": hf_ids, "hf_config": config, "config": {}}
    return mapped, model_config, tokenizer_json, payload


def _read_json(path: Path, name: str) -> dict:
    try:
        return json.loads((path / name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HFImportError(f"init_from={str(path)!r} has no {name}: save the model and its fast tokenizer "
                           "there with save_pretrained") from None
    except ValueError as err:
        raise HFImportError(f"init_from={str(path)!r}: {name} is not JSON ({err})") from None


def _check_supported(path: Path, config: dict) -> None:
    """Settings of GPT-2 and BERT configs that compute something lmlab's blocks do not."""
    unsupported = {"gpt2": {"scale_attn_weights": (True,), "scale_attn_by_inverse_layer_idx": (False,),
                            "add_cross_attention": (False,), "activation_function": tuple(_ACTIVATIONS)},
                   "bert": {"position_embedding_type": ("absolute",), "is_decoder": (False,),
                            "hidden_act": ("gelu",)}}[config["model_type"]]
    for key, allowed in unsupported.items():
        if key in config and config[key] not in allowed:
            raise HFImportError(f"init_from={str(path)!r}: config.json has {key}={config[key]!r}, which lmlab's "
                               f"blocks do not compute (they take {key}={allowed[0]!r})")


def _hf_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the directory's weight file(s): safetensors, or a PyTorch pickle read with
    ``weights_only`` (``checkpoint.safe_load``); sharded files through their index."""
    from safetensors.torch import load_file

    from lmlab.model.checkpoint import safe_load

    for name in _WEIGHT_FILES:
        file = path / name
        if not file.is_file():
            continue
        shards = ([path / s for s in sorted(set(json.loads(file.read_text())["weight_map"].values()))]
                  if name.endswith(".index.json") else [file])
        weights: dict[str, torch.Tensor] = {}
        for shard in shards:
            weights |= load_file(shard) if shard.suffix == ".safetensors" else safe_load(shard)
        return weights
    raise HFImportError(f"init_from={str(path)!r} has config.json but no weights ({' or '.join(_WEIGHT_FILES[::2])}): "
                       "save the model there with save_pretrained")


def _special(path: Path, config: dict, vocab: dict[str, int],
             by_id: dict[int, str]) -> tuple[list[str | None], str | None]:
    """The Hugging Face tokens that take lmlab's ids 0-3 (None: a new row), and the mask token."""
    file = path / "tokenizer_config.json"
    tc = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}

    def token(*keys, id_key=None):
        for key in keys:
            value = tc.get(key)
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str) and value in vocab:
                return value
        return by_id.get(config.get(id_key)) if id_key else None

    roles: list[str | None] = [None] * N_SPECIAL
    taken: set[str] = set()
    for lm_id, found in ((EOS, token("eos_token", "sep_token", id_key="eos_token_id")),
                         (BOS, token("bos_token", "cls_token", id_key="bos_token_id")),
                         (UNK, token("unk_token")), (PAD, token("pad_token", id_key="pad_token_id"))):
        if found is not None and found not in taken:  # a token serves one role (GPT-2's end of text: </s>)
            roles[lm_id] = found
            taken.add(found)
    return roles, token("mask_token")


def _reindex_vocab(path: Path, config: dict, encoder_only: bool) -> tuple[list[int | None], str]:
    """(``hf_ids``: the Hugging Face id of each lmlab id, None for a new row; lmlab's tokenizer
    JSON: the same tokenizer with the special tokens at 0-3 under lmlab's names, the others
    renumbered, no post-processor (lmlab adds ``<s>``/``</s>`` itself))."""
    from tokenizers import Tokenizer

    from lmlab.data.tokenizer import SPECIAL_TOKENS, TokenizerSet

    file = path / "tokenizer.json"
    if not file.is_file():
        raise HFImportError(f"init_from={str(path)!r} has no tokenizer.json: save the model's fast tokenizer "
                           "there (AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained)")
    obj = json.loads(file.read_text(encoding="utf-8"))
    if obj["model"]["type"] not in ("BPE", "WordPiece", "WordLevel"):
        raise HFImportError(f"init_from={str(path)!r}: a {obj['model']['type']} tokenizer; lmlab imports BPE, "
                           "WordPiece and WordLevel tokenizers")
    vocab = Tokenizer.from_file(str(file)).get_vocab(with_added_tokens=True)
    by_id = {i: t for t, i in vocab.items()}
    roles, mask = _special(path, config, vocab, by_id)
    if encoder_only and mask is None:
        raise HFImportError(f"init_from={str(path)!r}: the tokenizer names no mask_token, which masked "
                           "language modelling needs")
    placed = {vocab[t] for t in roles if t is not None} | ({vocab[mask]} if encoder_only else set())
    rest = sorted(i for i in vocab.values() if i not in placed)
    clash = [by_id[i] for i in rest if by_id[i] in SPECIAL_TOKENS]
    if clash:
        raise HFImportError(f"init_from={str(path)!r}: the token {clash[0]!r} is not a special token there but is "
                           "one of lmlab's names for them")
    rows = config["vocab_size"] if "vocab_size" in config else len(vocab)
    if rest and rest[-1] >= rows:
        raise HFImportError(f"init_from={str(path)!r}: the tokenizer has id {rest[-1]}, past the model's "
                           f"{rows} embedding rows")
    hf_ids = [vocab[t] if t is not None else None for t in roles] + rest + ([vocab[mask]] if encoder_only else [])
    added = {a["content"]: a for a in obj.get("added_tokens", [])}
    new_vocab = {**{name: i for i, name in enumerate(SPECIAL_TOKENS)},
                 **{by_id[h]: N_SPECIAL + k for k, h in enumerate(rest)}}
    obj["model"]["vocab"] = new_vocab
    if obj["model"].get("unk_token") is not None:
        obj["model"]["unk_token"] = SPECIAL_TOKENS[UNK]
    obj["added_tokens"] = [dict(id=i, content=name, single_word=False, lstrip=False, rstrip=False,
                                normalized=False, special=True) for i, name in enumerate(SPECIAL_TOKENS)]
    obj["added_tokens"] += [added[t] | {"id": new_vocab[t]} for t in added if t in new_vocab and t not in SPECIAL_TOKENS]
    obj["post_processor"] = obj["truncation"] = obj["padding"] = None
    return hf_ids, TokenizerSet(Tokenizer.from_str(json.dumps(obj))).to_json()


def _rows(table: torch.Tensor, hf_ids: list[int | None]) -> torch.Tensor:
    """``table``'s rows in lmlab's order; a new row is the mean of the table's rows (zero for <pad>)."""
    out = table[torch.tensor([0 if h is None else h for h in hf_ids])].clone()
    for i, h in enumerate(hf_ids):
        if h is None:
            out[i] = 0.0 if i == PAD else table.mean(0)
    return out


def _take(weights: dict, name: str, path: Path, used: set) -> torch.Tensor:
    if name not in weights:
        raise HFImportError(f"init_from={str(path)!r}: the weights have no {name}: not a complete model of its config.json")
    used.add(name)
    return weights[name]


def _from_gpt2(w: dict, config: dict, hf_ids: list, path: Path) -> tuple[dict, set]:
    used: set = set()
    out = {"embed.weight": _rows(_take(w, "wte.weight", path, used), hf_ids),
           "pos_embed.weight": _take(w, "wpe.weight", path, used),
           "dec_ln.weight": _take(w, "ln_f.weight", path, used), "dec_ln.bias": _take(w, "ln_f.bias", path, used)}
    for i in range(config["n_layer"]):
        for mine, gpt2, transposed in _BLOCK:
            weight = _take(w, f"h.{i}.{gpt2}.weight", path, used)
            out[f"decoder.{i}.{mine}.weight"] = weight.t().contiguous() if transposed else weight
            out[f"decoder.{i}.{mine}.bias"] = _take(w, f"h.{i}.{gpt2}.bias", path, used)
    used |= {k for k in w if k.endswith((".attn.bias", ".attn.masked_bias"))}  # causal-mask buffers of old files
    tied = config.get("tie_word_embeddings", True)
    out["lm_head.weight"] = out["embed.weight"] if tied else _rows(_take(w, "lm_head.weight", path, used), hf_ids)
    used.add("lm_head.weight")
    return out, used


def _from_bert(w: dict, config: dict, hf_ids: list, path: Path) -> tuple[dict, set]:
    used: set = set()
    e = "embeddings."
    out = {"embed.weight": _rows(_take(w, e + "word_embeddings.weight", path, used), hf_ids),
           "pos_embed.weight": _take(w, e + "position_embeddings.weight", path, used)
           + _take(w, e + "token_type_embeddings.weight", path, used)[0],
           "embed_ln.weight": _take(w, e + "LayerNorm.weight", path, used),
           "embed_ln.bias": _take(w, e + "LayerNorm.bias", path, used)}
    used.add(e + "position_ids")  # a buffer of arange, in older files
    for i in range(config["num_hidden_layers"]):
        layer = f"encoder.layer.{i}."
        for part in ("weight", "bias"):
            out[f"encoder.{i}.self_attn.qkv.{part}"] = torch.cat(
                [_take(w, f"{layer}attention.self.{x}.{part}", path, used) for x in ("query", "key", "value")])
            for mine, theirs in _BERT_BLOCK:
                out[f"encoder.{i}.{mine}.{part}"] = _take(w, f"{layer}{theirs}.{part}", path, used)
    head = "cls.predictions."
    for part in ("weight", "bias"):
        out[f"mlm_transform.0.{part}"] = _take(w, f"{head}transform.dense.{part}", path, used)
        out[f"mlm_transform.2.{part}"] = _take(w, f"{head}transform.LayerNorm.{part}", path, used)
    bias = head + "bias" if head + "bias" in w else head + "decoder.bias"
    out["mlm_bias"] = _rows(_take(w, bias, path, used), hf_ids)
    used |= {head + "decoder.bias", head + "decoder.weight"}
    tied = config.get("tie_word_embeddings", True)
    out["lm_head.weight"] = out["embed.weight"] if tied else _rows(_take(w, head + "decoder.weight", path, used), hf_ids)
    return out, used
