"""The model presets of ``conf/model/`` as a table: ``python -m lmlab.model.presets`` prints the README's.

Parameter counts come from instantiating each preset (``Transformer.num_parameters``); the test
suite checks them against a closed-form formula and the README against this output.
"""

from __future__ import annotations

import argparse

from lmlab.config import CONF_DIR, build_config, compose
from lmlab.model.architecture import ARCHS

GPT2_VOCAB = 50257


def preset_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def preset_config(name: str):
    """The default config with ``model=name``; an encoder-only preset gets the built-in text
    (``data=lm_text``), the only kind of task it trains on."""
    data = ["data=lm_text"] if compose([f"model={name}"])["model"]["arch"] == "encoder-only" else []
    return build_config(compose([f"model={name}", *data]))


def count_parameters(name: str, vocab_size: int) -> int:
    """Parameters of preset ``name`` with a ``vocab_size``-token vocabulary (built on the meta
    device: no memory is allocated, so the large presets cost nothing)."""
    import torch

    from lmlab.model.transformer import ModelConfig, Transformer

    cfg = preset_config(name)
    with torch.device("meta"):
        return Transformer(ModelConfig.of(cfg, vocab_size)).num_parameters()


def table(vocab_sizes: tuple[int, ...] = (6000, GPT2_VOCAB)) -> str:
    """Markdown table of every preset: architecture, dims, layers, heads, dropout, the learning
    rate and warm-up its width calls for (``config.lr_for_width``), parameters."""
    head = ["preset", "arch", "n_embd", "d_ff", "layers (enc+dec)", "heads", "positions", "FFN",
            "dropout", "lr", "warm-up"]
    head += [f"params @ {v:,} vocab" for v in vocab_sizes]
    rows = []
    configs = {name: preset_config(name) for name in preset_names()}
    models = {name: c.model for name, c in configs.items()}
    counts = {name: [count_parameters(name, v) for v in vocab_sizes] for name in models}
    # encoder-decoder, decoder-only, encoder-only; by size within each
    for name in sorted(models, key=lambda n: (ARCHS.index(models[n].arch), counts[n][0])):
        m = models[name]
        layers = {"decoder-only": f"{m.n_decoder_layer}", "encoder-only": f"{m.n_encoder_layer}"}.get(
            m.arch, f"{m.n_encoder_layer}+{m.n_decoder_layer}")
        row = [f"`{name}`", m.arch, str(m.n_embd), str(m.d_ff), layers, str(m.n_head), m.positions,
               m.activation, f"{m.dropout:g}", f"{configs[name].trainer.lr:.3g}",
               str(configs[name].trainer.warmup_steps)]
        row += [f"{n / 1e6:.2f}M" for n in counts[name]]
        rows.append(row)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    print(table())


if __name__ == "__main__":
    main()
