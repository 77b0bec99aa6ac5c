"""Stage `prepare`: tokenizer training and encoding of every split."""

from __future__ import annotations

from pathlib import Path

from .config import Config
from .files import atomic_path, atomic_write_json
from .rawdata import SIDES, SPLITS, raw_path, read_lines
from .tokenization import encode_lines, train_bpe, write_array


def prepare(cfg: Config, raw_dir: str | Path, out_dir: str | Path) -> dict:
    """Train the tokenizer on the training split and encode every split to token arrays.

    Training and validation pairs with a side longer than ``tokenizer.max_tokens`` are dropped
    (and counted); the test split is kept whole so that generations line up with references."""
    tc, out_dir = cfg.tokenizer, Path(out_dir)
    train_text = {side: read_lines(raw_path(raw_dir, "train", side)) for side in SIDES}
    tok = train_bpe(train_text["source"] + train_text["target"], tc.vocab_size, tc.min_frequency)
    vocab = tok.get_vocab_size()
    stats: dict = {"vocab_size": vocab}
    for split in SPLITS:
        lines = {side: read_lines(raw_path(raw_dir, split, side)) for side in SIDES}
        if len(lines["source"]) != len(lines["target"]):
            raise ValueError(f"{raw_path(raw_dir, split, 'source')} has {len(lines['source'])} lines "
                             f"but {raw_path(raw_dir, split, 'target')} has {len(lines['target'])}")
        ids = {side: list(encode_lines(tok, lines[side])) for side in SIDES}
        keep = range(len(ids["source"]))
        if split != "test":
            keep = [i for i in keep if max(len(ids["source"][i]), len(ids["target"][i])) <= tc.max_tokens]
        for side in SIDES:
            write_array(out_dir / f"{split}.{side}", (ids[side][i] for i in keep), vocab)
        n_tok = {side: int(sum(len(ids[side][i]) for i in keep)) for side in SIDES}
        stats[split] = {"pairs": len(keep), "dropped_too_long": len(ids["source"]) - len(keep),
                        "source_tokens": n_tok["source"], "target_tokens": n_tok["target"]}
    with atomic_path(out_dir / "tokenizer.json") as tmp:
        tok.save(str(tmp))
    atomic_write_json(out_dir / "stats.json", stats)
    return stats


