"""LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") on lmlab's plain
``Transformer``, through ``peft``: every ``nn.Linear`` whose name is in ``trainer.lora_targets``
gains a trainable low-rank update B·A (rank ``trainer.lora_rank``, scaled by alpha / rank), and
every other parameter is frozen. The model file of such a run is an ordinary lmlab model: the
updates are merged into the weights they adapt (``merged_weights``), so generation, evaluation and
a later ``init_from`` never see ``peft``.
"""

from __future__ import annotations

import torch

from lmlab.model.transformer import ModelConfig, Transformer


def _inject(model: Transformer, tcfg: dict):
    """``peft.LoraModel`` over ``model``: the adapters go into ``model``'s own layers, in place. A
    target that names no linear layer of the model is a ``ConfigError`` listing the layers."""
    import peft

    from lmlab.config import ConfigError

    layers = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    targets = [t for t in tcfg["lora_targets"] if t in layers]
    if not targets:
        raise ConfigError(f"trainer.lora_targets={list(tcfg['lora_targets'])} names no linear layer of this model "
                          f"(its layers: {', '.join(sorted(layers))})")
    config = peft.LoraConfig(r=tcfg["lora_rank"], lora_alpha=tcfg["lora_alpha"], lora_dropout=tcfg["lora_dropout"],
                             target_modules=targets)
    return peft.LoraModel(model, config, "default")


def add_lora(model: Transformer, tcfg: dict) -> dict:
    """Put LoRA adapters into ``model`` (its adapted layers' parameters are renamed
    ``<layer>.base_layer.*``, beside ``<layer>.lora_A/lora_B``) and freeze everything else;
    ``tcfg`` is the trainer section. Returns rank, alpha, the adapted layers and the number of
    trainable parameters."""
    _inject(model, tcfg)
    adapted = [name.rsplit(".lora_A", 1)[0] for name, _ in model.named_parameters() if ".lora_A." in name]
    return {"rank": tcfg["lora_rank"], "alpha": tcfg["lora_alpha"], "adapted": adapted,
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def merged_weights(model_cfg: dict, weights: dict[str, torch.Tensor], tcfg: dict) -> dict[str, torch.Tensor]:
    """The plain weights of a LoRA run's ``weights`` (a state dict with adapters): each adapted
    layer's weight plus its scaled B·A, under the layer's own names (``peft``'s merge)."""
    model = Transformer(ModelConfig(**model_cfg))
    lora = _inject(model, tcfg)
    model.load_state_dict(weights)
    return lora.merge_and_unload().state_dict()
