"""Scores of a generations file: corpus BLEU and chrF (sacrebleu), ROUGE (rouge-score), lengths.

The generations file is JSONL written by the ``generate`` stage, one record per test example in
input order::

    {"id": 0, "source": "...", "reference": "...", "hypothesis": "...", "hyp_tokens": 7, "hit_max_len": false}

:func:`score` returns one flat dict with stable keys, ready for ``reports/metrics.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from statistics import fmean

# key -> accepted type(s). bool is a subclass of int, so ints are checked to be "int and not bool".
RECORD_KEYS: dict[str, type] = {
    "id": int, "source": str, "reference": str, "hypothesis": str, "hyp_tokens": int, "hit_max_len": bool,
}
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def read_generations(path: str | Path) -> list[dict]:
    """Read and validate a generations JSONL file; blank lines are skipped.

    Raises ``ValueError`` naming the file, the line number and the culprit (bad JSON, missing key,
    wrong type, repeated id) and ``FileNotFoundError`` when there is no file.
    """
    path = Path(path)
    records: list[dict] = []
    seen: dict[int, int] = {}  # id -> line number
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            for key, kind in RECORD_KEYS.items():
                if key not in rec:
                    raise ValueError(f"{where}: missing key {key!r} (a generations record needs "
                                     f"{', '.join(RECORD_KEYS)})")
                value = rec[key]
                if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                    raise ValueError(f"{where}: key {key!r} should be {kind.__name__}, "
                                     f"got {type(value).__name__} {value!r}")
            if rec["id"] in seen:
                raise ValueError(f"{where}: id {rec['id']} already used on line {seen[rec['id']]}")
            seen[rec["id"]] = lineno
            records.append(rec)
    if not records:
        raise ValueError(f"{path} holds no generation records: rerun the generate stage")
    return records


# A sentence ends at a run of . ! or ?, optionally followed by closing quotes or brackets, and then
# whitespace. Example: 'He left. "Why?" she asked... Fine!' -> ['He left.', '"Why?"', 'she asked...',
# 'Fine!']. Decimals ("3.5") and dotted names ("a.b") stay whole because no whitespace follows the dot.
# Abbreviations ("Dr. Smith", "e.g. this") are split, a known limit of a rule without a word list; it
# hits hypothesis and reference alike, so ROUGE-Lsum stays comparable between runs.
_SENTENCE_END = re.compile(r"""([.!?]+["'”’»)\]]*)\s+""")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences offline (no nltk punkt data); existing newlines also split."""
    marked = _SENTENCE_END.sub("\\1\n", text.strip())
    return [s.strip() for s in marked.split("\n") if s.strip()]


def _rouge(records: list[dict], use_stemmer: bool) -> dict[str, float]:
    """Mean ROUGE F-measures ×100. Every type is scored on newline-split sentences: ROUGE-Lsum needs
    them, and rouge-score's tokenizer treats the newlines as spaces for the other types."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for rec in records:
        # An empty hypothesis (or one with no [a-z0-9] token) scores 0, it does not raise.
        scores = scorer.score("\n".join(split_sentences(rec["reference"])),
                              "\n".join(split_sentences(rec["hypothesis"])))
        for t in ROUGE_TYPES:
            totals[t] += scores[t].fmeasure
    return {t: round(100 * totals[t] / len(records), 4) for t in ROUGE_TYPES}


def score(records: list[dict], *, bleu_tokenize: str = "13a", rouge_stemmer: bool = True,
          lowercase: bool = False) -> dict:
    """Corpus BLEU/chrF, mean ROUGE F1 (all ×100, 4 decimals) and length statistics of ``records``.

    ``lowercase`` applies to BLEU and chrF (it shows in their signatures as ``case:lc``); rouge-score
    always lowercases and keeps only ASCII letters and digits as tokens, so ROUGE of text in other
    scripts is 0 by construction.
    """
    if not records:
        raise ValueError("no generation records to score: the generations file is empty")
    from sacrebleu.metrics import BLEU, CHRF

    hyps = [r["hypothesis"] for r in records]
    refs = [[r["reference"] for r in records]]  # one reference stream
    bleu = BLEU(tokenize=bleu_tokenize, lowercase=lowercase)
    chrf = CHRF(lowercase=lowercase)
    bleu_score = bleu.corpus_score(hyps, refs).score
    chrf_score = chrf.corpus_score(hyps, refs).score
    n = len(records)
    return {
        "bleu": round(bleu_score, 4),
        "chrf": round(chrf_score, 4),
        # sacrebleu fills the signature from the last corpus_score (e.g. nrefs), so ask after scoring.
        "bleu_signature": bleu.get_signature().format(),
        "chrf_signature": chrf.get_signature().format(),
        **_rouge(records, rouge_stemmer),
        "rouge_stemmer": bool(rouge_stemmer),
        "mean_hyp_words": round(fmean(len(h.split()) for h in hyps), 4),
        "mean_hyp_tokens": round(fmean(r["hyp_tokens"] for r in records), 4),
        "len_cap_rate": round(sum(bool(r["hit_max_len"]) for r in records) / n, 4),
        "n_examples": n,
    }


def paired_bootstrap(baseline: list[dict], system: list[dict], *, bleu_tokenize: str = "13a",
                     n_samples: int = 1000) -> dict:
    """sacreBLEU's paired bootstrap resampling (Koehn, 2004) of ``system`` against ``baseline`` on
    the same test set, for BLEU and chrF: each metric's difference (system − baseline) and
    two-sided p-value (how often the centred resampled |difference| exceeds the observed one; the
    sign is the delta's). sacreBLEU seeds its resampling with ``SACREBLEU_SEED``, 12345 unless set.
    Identical outputs get p = 1: sacreBLEU's strict comparison would call even them significant."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    if [r["reference"] for r in baseline] != [r["reference"] for r in system]:
        raise ValueError("significance needs both systems on the same test set: the references differ")
    refs = [[r["reference"] for r in baseline]]
    test = PairedTest([("baseline", [r["hypothesis"] for r in baseline]),
                       ("system", [r["hypothesis"] for r in system])],
                      {"bleu": BLEU(tokenize=bleu_tokenize), "chrf": CHRF()}, refs,
                      test_type="bs", n_samples=n_samples)
    _, results = test()
    identical = [r["hypothesis"] for r in baseline] == [r["hypothesis"] for r in system]
    out = {}
    for key, name in (("bleu", "BLEU"), ("chrf", "chrF2")):
        base, sys_ = results[name]
        out[f"{key}_delta"] = round(sys_.score - base.score, 4)
        out[f"{key}_p_value"] = 1.0 if identical else round(float(sys_.p_value), 4)
    out["bootstrap_samples"] = n_samples
    return out
