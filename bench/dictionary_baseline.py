"""Word-for-word dictionary baseline on the synthetic corpus's test split.

Translates every test source sentence word by word with ``lmlab.data.corpus.dictionary`` (the
strongest word-for-word table: each source word's most frequent translation under the
generator's own alignments) and scores it with sacreBLEU (BLEU, 13a tokenization) and chrF.
The corpus is built so that this stays far below what a trained model reaches.

    python bench/dictionary_baseline.py [--seed N] [--n-test N] [--level hard]

The last line printed is one JSON object with the scores.
"""

from __future__ import annotations

import argparse
import json

from lmlab.data.corpus import LEVELS, dictionary_bleu

__all__ = ["dictionary_bleu", "main"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1234, help="corpus seed (default 1234)")
    parser.add_argument("--n-test", type=int, default=1000, help="test sentences (default 1000)")
    parser.add_argument("--level", choices=sorted(LEVELS), default="standard",
                        help="data=synthetic (standard) or data=synthetic_hard (hard)")
    args = parser.parse_args(argv)
    result = dictionary_bleu(seed=args.seed, n_test=args.n_test, level=args.level)
    result["level"] = args.level
    print(f"word-for-word dictionary on {result['n_test']} test sentences (seed {args.seed}, "
          f"{args.level}): "
          f"BLEU {result['dictionary_bleu']:.2f}, chrF {result['dictionary_chrf']:.2f}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
