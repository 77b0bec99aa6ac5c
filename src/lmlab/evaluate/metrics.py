"""Scores of a generations file: corpus BLEU and chrF (sacrebleu), ROUGE (rouge-score), lengths.

The generations file is JSONL written by the ``generate`` stage, one record per test example in
input order::

    {"id": 0, "source": "...", "reference": "...", "hypothesis": "...", "hyp_tokens": 7, "hit_max_len": false}

:func:`score` returns one flat dict with stable keys, ready for ``reports/metrics.json``. Which
metrics depends on the task, each scored with what its field reports:

* translation: sacreBLEU BLEU, chrF and TER (with their signatures; BLEU's tokenizer follows the
  target language, :func:`bleu_tokenizer_for`), and ROUGE;
* summarization: ROUGE-1/2/L/Lsum, and the same for the lead baseline (the source's first
  sentences, :func:`lead`), so the model's scores can be read against it;
* language modelling: distinct-n (Li et al., 2016) and sequence-level repetition (Welleck et al.,
  2019) of the sampled continuations (perplexity comes from the model, in ``evaluate.perplexity``);
  a masked language model's records are fills instead (``lmlab.decoding.fill``, with ``correct``
  and ``hyp_tokens`` per line), scored by ``fill_accuracy``, the share of masked tokens filled in
  right (×100).

ROUGE is computed with rouge-score and :class:`UnicodeTokenizer`, which equals rouge-score's own
tokenizer on ASCII text but does not drop letters outside a-z (rouge-score scores Chinese 0).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from statistics import fmean

from lmlab.config import TASKS

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
    with open(path, encoding="utf-8") as f:
        return parse_generations(f, str(path))


def parse_generations(lines: Iterable[str], name: str) -> list[dict]:
    """The records of a generations JSONL stream (``read_generations``); errors name ``name``."""
    records: list[dict] = []
    seen: dict[int, int] = {}  # id -> line number
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
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
        raise ValueError(f"{name} holds no generation records: rerun the generate stage")
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


# Scripts written without spaces between words: each character is a token (as sacreBLEU's `zh`
# tokenizer does for Chinese). Han, hiragana, katakana, Thai, Lao, Khmer, Myanmar.
_UNSPACED = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff"
                       r"\u1780-\u17ff\u1000-\u109f])")
_WORD = re.compile(r"[^\W_]+")  # a run of letters and digits, in any script


class UnicodeTokenizer:
    """ROUGE tokens for any script. On ASCII text it gives exactly rouge-score's tokens (lowercase,
    runs of [a-z0-9], Porter stems of words longer than 3 letters); elsewhere letters of every
    script count, words of unspaced scripts split into characters, and only ASCII words are
    stemmed (the Porter stemmer is English). rouge-score's own tokenizer deletes every letter
    outside a-z: "été" becomes "t", and Chinese text has no token at all, so scores 0.

        >>> UnicodeTokenizer(use_stemmer=True).tokenize("Running Dogs, l'été 猫が好き")
        ['run', 'dog', 'l', 'été', '猫', 'が', '好', 'き']
    """

    def __init__(self, use_stemmer: bool = False):
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens = []
        for word in _WORD.findall(text.lower()):
            for piece in _UNSPACED.split(word):
                if not piece:
                    continue
                if self._stemmer is not None and len(piece) > 3 and piece.isascii():
                    piece = self._stemmer.stem(piece)
                tokens.append(piece)
        return tokens


def _rouge(pairs: list[tuple[str, str]], use_stemmer: bool, prefix: str = "") -> dict[str, float]:
    """Mean ROUGE F-measures ×100 of (hypothesis, reference) pairs. Every type is scored on
    newline-split sentences: ROUGE-Lsum needs them, and the other types read newlines as spaces."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(list(ROUGE_TYPES), tokenizer=UnicodeTokenizer(use_stemmer))
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, ref in pairs:
        # An empty hypothesis (or one with no letter or digit) scores 0, it does not raise.
        scores = scorer.score("\n".join(split_sentences(ref)), "\n".join(split_sentences(hyp)))
        for t in ROUGE_TYPES:
            totals[t] += scores[t].fmeasure
    return {prefix + t: round(100 * totals[t] / len(pairs), 4) for t in ROUGE_TYPES}


def lead(text: str, n_sentences: int = 3) -> str:
    """The lead baseline of summarization: the first ``n_sentences`` sentences of the document."""
    return " ".join(split_sentences(text)[:n_sentences])


def bleu_tokenizer_for(target_lang: str | None, requested: str = "auto") -> str:
    """sacreBLEU's tokenizer for text in ``target_lang``: ``requested`` unless it is ``auto``;
    ``auto`` picks ``zh`` for Chinese, ``ja-mecab`` / ``ko-mecab`` for Japanese / Korean where
    MeCab is installed (``pip install sacrebleu[ja]`` / ``[ko]``), and ``13a`` otherwise, as
    sacreBLEU's own command line does."""
    if requested != "auto":
        return requested
    lang = (target_lang or "").lower().split("-")[0].split("_")[0]
    if lang == "zh":
        return "zh"
    if lang in ("ja", "ko"):
        import importlib.util

        module = "MeCab" if lang == "ja" else "mecab_ko"
        if importlib.util.find_spec(module) is not None:
            return f"{lang}-mecab"
    return "13a"


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct-n (Li et al., 2016): distinct word n-grams ÷ all word n-grams, over every text
    together; 0 when there is no n-gram at all. Words are split on whitespace."""
    seen, total = set(), 0
    for text in texts:
        words = text.split()
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def seq_repetition(texts: list[str], n: int) -> float:
    """seq-rep-n (Welleck et al., 2019): per text, the share of its word n-grams that repeat an
    earlier one (1 − distinct ÷ all), averaged over the texts that have an n-gram."""
    rates = []
    for text in texts:
        words = text.split()
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        if grams:
            rates.append(1 - len(set(grams)) / len(grams))
    return fmean(rates) if rates else 0.0


# what each task's field reports first: the metrics a one-line summary and the sweep report show
MAIN_METRICS = {"translation": ("bleu", "chrf", "ter"),
                "summarization": ("rouge1", "rouge2", "rougeL", "rougeLsum"),
                "language_modeling": ("distinct_2", "seq_rep_4")}
METRIC_NAMES = {"bleu": "BLEU", "chrf": "chrF", "ter": "TER", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2",
                "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum", "distinct_2": "distinct-2",
                "seq_rep_4": "seq-rep-4", "fill_accuracy": "fill accuracy"}


def main_metric_keys(task: str, metrics: dict) -> tuple[str, ...]:
    """``MAIN_METRICS[task]``, or for a masked language model's scores (language modelling scored
    by fills) its fill accuracy."""
    return ("fill_accuracy",) if "fill_accuracy" in metrics else MAIN_METRICS[task]


def summary_line(metrics: dict, task: str) -> str:
    """The task's main metrics as one line, e.g. ``BLEU 31.20, chrF 58.10, TER 52.40``; a
    summarization line adds the lead baseline's ROUGE beside the model's."""
    parts = []
    for key in main_metric_keys(task, metrics):
        lead_key = next((k for k in metrics if k.startswith("lead") and k.endswith("_" + key)), None)
        beside = f" (lead {metrics[lead_key]:.2f})" if lead_key else ""
        parts.append(f"{METRIC_NAMES[key]} {metrics[key]:.2f}{beside}")
    return ", ".join(parts)


def score(records: list[dict], *, task: str = "translation", bleu_tokenize: str = "13a",
          rouge_stemmer: bool = True, lowercase: bool = False, lead_sentences: int = 3) -> dict:
    """The ``task``'s metrics of ``records`` (all ×100 but the rates, 4 decimals) and length
    statistics; see the module docstring for which metrics each task gets.

    ``lowercase`` applies to BLEU and chrF (it shows in their signatures as ``case:lc``); TER is
    case-insensitive either way, sacreBLEU's default (``case:lc`` in its signature).
    """
    if not records:
        raise ValueError("no generation records to score: the generations file is empty")
    if task not in TASKS:
        raise ValueError(f"task={task!r} must be one of {', '.join(TASKS)}")
    hyps = [r["hypothesis"] for r in records]
    metrics: dict = {}
    if task == "translation":
        from sacrebleu.metrics import BLEU, CHRF, TER

        refs = [[r["reference"] for r in records]]  # one reference stream
        bleu = BLEU(tokenize=bleu_tokenize, lowercase=lowercase)
        chrf = CHRF(lowercase=lowercase)
        ter = TER()  # sacreBLEU's default: case-insensitive, tercom tokenization
        metrics["bleu"] = round(bleu.corpus_score(hyps, refs).score, 4)
        metrics["chrf"] = round(chrf.corpus_score(hyps, refs).score, 4)
        metrics["ter"] = round(ter.corpus_score(hyps, refs).score, 4)
        # sacrebleu fills a signature from the last corpus_score (e.g. nrefs), so ask after scoring.
        metrics["bleu_signature"] = bleu.get_signature().format()
        metrics["chrf_signature"] = chrf.get_signature().format()
        metrics["ter_signature"] = ter.get_signature().format()
    if task in ("translation", "summarization"):
        metrics.update(_rouge([(h, r["reference"]) for h, r in zip(hyps, records)], rouge_stemmer))
        metrics["rouge_stemmer"] = bool(rouge_stemmer)
    if task == "summarization":
        metrics.update(_rouge([(lead(r["source"], lead_sentences), r["reference"]) for r in records],
                              rouge_stemmer, prefix=f"lead{lead_sentences}_"))
    if task == "language_modeling" and "correct" in records[0]:  # fills of masked positions
        metrics["fill_accuracy"] = round(100 * sum(r["correct"] for r in records)
                                         / max(1, sum(r["hyp_tokens"] for r in records)), 4)
    elif task == "language_modeling":
        for n in (1, 2, 3, 4):
            metrics[f"distinct_{n}"] = round(distinct_n(hyps, n), 4)
        for n in (2, 4):
            metrics[f"seq_rep_{n}"] = round(seq_repetition(hyps, n), 4)
    n = len(records)
    metrics.update({
        "mean_hyp_words": round(fmean(len(h.split()) for h in hyps), 4),
        "mean_hyp_tokens": round(fmean(r["hyp_tokens"] for r in records), 4),
        "len_cap_rate": round(sum(bool(r["hit_max_len"]) for r in records) / n, 4),
        "n_examples": n,
    })
    return metrics


def example_scores(records: list[dict], *, task: str = "translation", bleu_tokenize: str = "13a",
                   rouge_stemmer: bool = True) -> tuple[str, list[float]]:
    """(column name, one score per record): what each example earns on its own, for the W&B
    table of example generations.

    * translation: ``sentence BLEU``, sacreBLEU's sentence-level BLEU with the tokenizer of the
      corpus BLEU and effective n-gram order (a short sentence with no 4-gram match is not 0);
    * summarization: ``ROUGE-L``, the F-measure ×100 that :func:`score` averages into ``rougeL``;
    * language modelling: ``seq-rep-4``, the share of the continuation's 4-grams that repeat.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} must be one of {', '.join(TASKS)}")
    hyps = [r["hypothesis"] for r in records]
    if task == "translation":
        from sacrebleu.metrics import BLEU

        bleu = BLEU(tokenize=bleu_tokenize, effective_order=True)
        return "sentence BLEU", [round(bleu.sentence_score(h, [r["reference"]]).score, 4)
                                 for h, r in zip(hyps, records)]
    if task == "summarization":
        return "ROUGE-L", [_rouge([(h, r["reference"])], rouge_stemmer)["rougeL"]
                           for h, r in zip(hyps, records)]
    return "seq-rep-4", [round(seq_repetition([h], 4), 4) for h in hyps]


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
