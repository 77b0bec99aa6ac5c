"""scoring: exact scores on hand-computed cases, parity with sacrebleu and rouge-score called directly."""

import json

import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer

from lmlab.evaluate.metrics import read_generations, score, split_sentences

KEYS = ["bleu", "chrf", "ter", "bleu_signature", "chrf_signature", "ter_signature", "rouge1", "rouge2", "rougeL", "rougeLsum",
        "rouge_stemmer", "mean_hyp_words", "mean_hyp_tokens", "len_cap_rate", "n_examples"]


def rec(i, hyp, ref, hyp_tokens=0, hit_max_len=False, source="src"):
    return {"id": i, "source": source, "reference": ref, "hypothesis": hyp,
            "hyp_tokens": hyp_tokens, "hit_max_len": hit_max_len}


def write_jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# --- score -----------------------------------------------------------------------------------------

def test_identical_hypotheses_score_100_everywhere():
    refs = ["The cat sat on the mat.", "Dogs bark at night. Birds sing in the morning!"]
    m = score([rec(i, r, r, hyp_tokens=7) for i, r in enumerate(refs)])
    assert list(m) == KEYS
    for key in ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert m[key] == 100.0, key
    assert m["ter"] == 0.0
    assert m["n_examples"] == 2 and m["len_cap_rate"] == 0.0 and m["mean_hyp_tokens"] == 7.0


def test_hand_computed_bleu_and_rouge():
    # hyp: the cat sat on the mat   ref: the cat sat on a mat   (6 tokens each, so BP = 1)
    # clipped n-gram precisions 5/6, 3/5, 2/4, 1/3 -> BLEU = (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = 12 ** -0.25
    # ROUGE-1: 5 of 6 unigrams either way -> F 5/6; ROUGE-2: 3 of 5 bigrams -> 3/5;
    # LCS "the cat sat on mat" = 5 -> ROUGE-L 5/6; one sentence, so ROUGE-Lsum = ROUGE-L.
    hyp, ref = "the cat sat on the mat", "the cat sat on a mat"
    m = score([rec(0, hyp, ref)])
    assert m["bleu"] == round(100 * 12 ** -0.25, 4) == 53.7285
    assert m["rouge1"] == m["rougeL"] == m["rougeLsum"] == 83.3333
    assert m["rouge2"] == 60.0
    assert m["mean_hyp_words"] == 6.0


def test_hand_computed_rouge_lsum_needs_the_hypothesis_split():
    # ref (1 sentence): the fox ran and it was fast   hyp (2): fast it was | the fox ran
    # ROUGE-L, one LCS over the whole hypothesis: "the fox ran" = 3 -> P 3/6, R 3/7, F 6/13.
    # ROUGE-Lsum, union of the LCS with each hypothesis sentence: {it, was} + {the, fox, ran} = 5
    # -> P 5/6, R 5/7, F 10/13. Without splitting the hypothesis it would equal ROUGE-L.
    m = score([rec(0, "Fast it was. The fox ran.", "The fox ran and it was fast.")])
    assert m["rougeL"] == round(100 * 6 / 13, 4) == 46.1538
    assert m["rougeLsum"] == round(100 * 10 / 13, 4) == 76.9231


def test_parity_with_sacrebleu_and_rouge_score_on_a_corpus():
    pairs = [
        # Sentences swapped: ROUGE-L (one LCS) sees half, ROUGE-Lsum (union LCS per sentence) all.
        ("It was very fast! A quick brown fox jumps.", "A quick brown fox jumped. It was very fast!"),
        ("She reads books, every day.", "She reads a book every day."),
        ("Prices rose 3.5% in May.", "Prices rose by 3.5% in May."),
        ("", "Nothing was generated here."),
        ("Running dogs are happy dogs.", "The dog runs happily."),
    ]
    records = [rec(i, h, r) for i, (h, r) in enumerate(pairs)]
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    m = score(records)

    assert m["bleu"] == round(sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a").score, 4)
    assert m["chrf"] == round(sacrebleu.corpus_chrf(hyps, [refs]).score, 4)
    assert m["ter"] == round(sacrebleu.corpus_ter(hyps, [refs]).score, 4)
    assert m["ter_signature"].startswith("nrefs:1|case:lc|tok:tercom|")

    scorer = RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    raw = [scorer.score(r, h) for h, r in pairs]                         # plain strings
    split = [scorer.score("\n".join(split_sentences(r)), "\n".join(split_sentences(h))) for h, r in pairs]
    for key, scores in (("rouge1", raw), ("rouge2", raw), ("rougeL", raw), ("rougeLsum", split)):
        expected = round(100 * sum(s[key].fmeasure for s in scores) / len(pairs), 4)
        assert m[key] == pytest.approx(expected, abs=1e-4), key
    # Splitting into sentences matters for ROUGE-Lsum on this corpus (else the test proves nothing).
    assert m["rougeLsum"] != m["rougeL"]


def test_empty_hypothesis_scores_zero_without_crashing():
    m = score([rec(0, "", "Some reference text.")])
    assert m["bleu"] == m["chrf"] == 0.0
    assert m["rouge1"] == m["rouge2"] == m["rougeL"] == m["rougeLsum"] == 0.0
    assert m["mean_hyp_words"] == 0.0


def test_length_statistics_are_exact():
    records = [rec(0, "a b c", "a b c", 4, True), rec(1, "a b", "a b", 2, False),
               rec(2, "a", "a", 1, False), rec(3, "a  b\tc d", "a", 9, False)]
    m = score(records)
    assert m["len_cap_rate"] == 0.25
    assert m["mean_hyp_words"] == 2.5     # (3 + 2 + 1 + 4) / 4, any whitespace separates words
    assert m["mean_hyp_tokens"] == 4.0    # (4 + 2 + 1 + 9) / 4
    assert m["n_examples"] == 4
    assert score(records[:3])["len_cap_rate"] == 0.3333


def test_signatures_follow_the_options():
    records = [rec(0, "The cat sat on the mat today .", "the cat sat on the mat today .")]
    m = score(records)
    assert "tok:13a" in m["bleu_signature"] and "case:mixed" in m["bleu_signature"]
    assert m["chrf_signature"].startswith("nrefs:1|case:mixed|") and "nc:6" in m["chrf_signature"]
    assert m["bleu"] < 100

    lc = score(records, bleu_tokenize="none", lowercase=True)
    assert "tok:none" in lc["bleu_signature"] and "case:lc" in lc["bleu_signature"]
    assert "case:lc" in lc["chrf_signature"]
    assert lc["bleu"] == lc["chrf"] == 100.0


def test_rouge_stemmer_switch():
    records = [rec(0, "cats running", "cat run")]
    assert score(records, rouge_stemmer=True)["rouge1"] == 100.0
    off = score(records, rouge_stemmer=False)
    assert off["rouge1"] == 0.0 and off["rouge_stemmer"] is False


def test_score_rejects_no_records():
    with pytest.raises(ValueError, match="no generation records"):
        score([])


# --- split_sentences -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, sentences", [
    ("He left. \"Why?\" she asked... Fine!", ["He left.", "\"Why?\"", "she asked...", "Fine!"]),
    ("Pi is 3.14 today. See example.com now", ["Pi is 3.14 today.", "See example.com now"]),
    ("(It rained.) Then it stopped!?  Ok", ["(It rained.)", "Then it stopped!?", "Ok"]),
    ("Line one\nline two. Three", ["Line one", "line two.", "Three"]),
    ("Dr. Smith came.", ["Dr.", "Smith came."]),          # documented limit: no abbreviation list
    ("No end mark", ["No end mark"]),
    ("Trailing space.   ", ["Trailing space."]),
    ("", []),
    ("   \n ", []),
])
def test_split_sentences(text, sentences):
    assert split_sentences(text) == sentences


# --- read_generations ------------------------------------------------------------------------------

def test_read_generations_roundtrip_skips_blank_lines(tmp_path):
    records = [rec(0, "h0", "r0", 3), rec(1, "h1 ü", "r1", 5, True)]
    path = write_jsonl(tmp_path / "g.jsonl",
                       [json.dumps(records[0]), "", json.dumps(records[1], ensure_ascii=False), "  "])
    assert read_generations(path) == records


def test_read_generations_names_line_and_missing_key(tmp_path):
    bad = rec(1, "h", "r")
    del bad["hypothesis"]
    path = write_jsonl(tmp_path / "g.jsonl", [json.dumps(rec(0, "h", "r")), json.dumps(bad)])
    with pytest.raises(ValueError) as err:
        read_generations(path)
    msg = str(err.value)
    assert f"{path}:2:" in msg and "missing key 'hypothesis'" in msg


@pytest.mark.parametrize("line, expected", [
    ("{not json", "g.jsonl:1: not valid JSON"),
    ("[1, 2]", "g.jsonl:1: expected a JSON object, got list"),
    (json.dumps({**rec(0, "h", "r"), "hit_max_len": "no"}), "g.jsonl:1: key 'hit_max_len' should be bool"),
    (json.dumps({**rec(0, "h", "r"), "id": True}), "g.jsonl:1: key 'id' should be int"),
    (json.dumps({**rec(0, "h", "r"), "hyp_tokens": 2.0}), "g.jsonl:1: key 'hyp_tokens' should be int"),
])
def test_read_generations_rejects_bad_lines(tmp_path, line, expected):
    path = write_jsonl(tmp_path / "g.jsonl", [line])
    with pytest.raises(ValueError, match=expected):
        read_generations(path)


def test_read_generations_rejects_repeated_id_and_empty_file(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [json.dumps(rec(0, "a", "b")), json.dumps(rec(0, "c", "d"))])
    with pytest.raises(ValueError, match="g.jsonl:2: id 0 already used on line 1"):
        read_generations(path)
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(ValueError, match="empty.jsonl holds no generation records"):
        read_generations(empty)
    with pytest.raises(FileNotFoundError):
        read_generations(tmp_path / "missing.jsonl")


def test_paired_bootstrap_against_a_baseline():
    from lmlab.evaluate.metrics import paired_bootstrap

    refs = [f"the cat number {i} sat on the mat today" for i in range(60)]
    good = [rec(i, r, r) for i, r in enumerate(refs)]
    bad = [rec(i, "a dog stood near the door", r) for i, r in enumerate(refs)]
    same = paired_bootstrap(good, good, n_samples=200)
    assert (same["bleu_delta"], same["chrf_delta"]) == (0.0, 0.0)
    assert same["bleu_p_value"] == same["chrf_p_value"] == 1.0 and same["bootstrap_samples"] == 200
    better = paired_bootstrap(bad, good, n_samples=200)
    worse = paired_bootstrap(good, bad, n_samples=200)
    assert better["bleu_delta"] == pytest.approx(100.0 - score(bad)["bleu"], abs=1e-3)
    assert better["bleu_p_value"] < 0.05 and better["chrf_p_value"] < 0.05
    assert worse["bleu_delta"] == pytest.approx(-better["bleu_delta"], abs=1e-3)
    assert worse["bleu_p_value"] < 0.05  # two-sided: significantly worse; the sign is the delta's
    with pytest.raises(ValueError, match="the references differ"):
        paired_bootstrap(good, [rec(i, r, "x") for i, r in enumerate(refs)])


# --- tasks, tokenizers and the language-modelling metrics -----------------------------------------

ASCII_TEXTS = ["The quick brown foxes were running faster than 3.5 dogs!", "It's a don't-stop, well-known",
               "Prices rose 12% in 2024; analysts (mostly) agreed.", "", "   ", "A_B c__d e-f",
               "Generalization generalizes generally", "x y z"]


@pytest.mark.parametrize("stemmer", [True, False])
def test_unicode_rouge_tokenizer_equals_rouge_score_on_ascii(stemmer):
    from rouge_score.tokenizers import DefaultTokenizer

    from lmlab.evaluate.metrics import UnicodeTokenizer

    ours, theirs = UnicodeTokenizer(stemmer), DefaultTokenizer(stemmer)
    for text in ASCII_TEXTS:
        assert ours.tokenize(text) == theirs.tokenize(text), text


def test_rouge_scores_chinese_and_accented_text():
    from lmlab.evaluate.metrics import UnicodeTokenizer

    assert UnicodeTokenizer(True).tokenize("Running Dogs, l'été 猫が好き") == [
        "run", "dog", "l", "été", "猫", "が", "好", "き"]
    # 我喜欢猫 vs 我喜欢狗: 3 of 4 characters shared -> ROUGE-1 F = 0.75; rouge-score's own tokenizer gives 0
    m = score([rec(0, "我喜欢狗", "我喜欢猫")])
    assert m["rouge1"] == 75.0 and m["rouge2"] == round(100 * 2 / 3, 4)
    assert RougeScorer(["rouge1"]).score("我喜欢猫", "我喜欢狗")["rouge1"].fmeasure == 0.0
    # été is one word, not "t": the accented words match whole
    assert score([rec(0, "un été chaud", "un été froid")])["rouge1"] == round(100 * 2 / 3, 4)


@pytest.mark.parametrize("lang, requested, expected", [
    ("zh", "auto", "zh"), ("zh-Hans", "auto", "zh"), ("ZH_cn", "auto", "zh"), ("fr", "auto", "13a"),
    (None, "auto", "13a"), ("zh", "intl", "intl"), ("de", "none", "none")])
def test_bleu_tokenizer_follows_the_target_language(lang, requested, expected):
    from lmlab.evaluate.metrics import bleu_tokenizer_for

    assert bleu_tokenizer_for(lang, requested) == expected


def test_japanese_uses_mecab_only_where_installed():
    import importlib.util

    from lmlab.evaluate.metrics import bleu_tokenizer_for

    have = importlib.util.find_spec("MeCab") is not None
    assert bleu_tokenizer_for("ja") == ("ja-mecab" if have else "13a")


def test_distinct_n_and_seq_repetition_by_hand():
    from lmlab.evaluate.metrics import distinct_n, seq_repetition

    texts = ["a b a b", "a b c", ""]
    # unigrams: a b a b a b c -> 3 distinct of 7; bigrams: ab ba ab | ab bc -> {ab, ba, bc} of 5
    assert distinct_n(texts, 1) == 3 / 7 and distinct_n(texts, 2) == 3 / 5
    assert distinct_n(texts, 5) == 0.0
    # seq-rep-2: "a b a b" has ab ba ab -> 1 - 2/3; "a b c" -> 0; "" has no bigram and is left out
    assert seq_repetition(texts, 2) == pytest.approx((1 / 3 + 0) / 2)
    assert seq_repetition(["a a a a"], 1) == 0.75


def test_each_task_scores_its_own_metrics():
    from lmlab.evaluate.metrics import lead

    doc = "Storms hit the coast. Ten homes flooded. Schools will close. The mayor spoke later."
    assert lead(doc) == "Storms hit the coast. Ten homes flooded. Schools will close."
    assert lead(doc, 1) == "Storms hit the coast."
    records = [rec(0, "Ten homes flooded in storms.", "Storms flooded ten homes.", source=doc)]
    summ = score(records, task="summarization")
    assert "bleu" not in summ and "ter" not in summ
    scorer = RougeScorer(["rouge1", "rougeLsum"], use_stemmer=True)
    lead_split = "\n".join(split_sentences(lead(doc)))
    assert summ["lead3_rouge1"] == round(100 * scorer.score("Storms flooded ten homes.", lead(doc))["rouge1"].fmeasure, 4)
    assert summ["lead3_rougeLsum"] == round(
        100 * scorer.score("Storms flooded ten homes.", lead_split)["rougeLsum"].fmeasure, 4)
    assert summ["rouge1"] == round(100 * scorer.score("Storms flooded ten homes.",
                                                      "Ten homes flooded in storms.")["rouge1"].fmeasure, 4)

    lm = score([rec(0, "a b a b", "", hyp_tokens=4), rec(1, "a b c", "")], task="language_modeling")
    assert list(lm) == ["distinct_1", "distinct_2", "distinct_3", "distinct_4", "seq_rep_2", "seq_rep_4",
                        "mean_hyp_words", "mean_hyp_tokens", "len_cap_rate", "n_examples"]
    assert lm["distinct_1"] == round(3 / 7, 4) and lm["seq_rep_2"] == round(1 / 6, 4)
    with pytest.raises(ValueError, match="task='qa' must be one of translation, summarization, language_modeling"):
        score(records, task="qa")


def test_summary_line_shows_the_task_metrics_and_the_lead_beside():
    from lmlab.evaluate.metrics import summary_line

    assert summary_line({"bleu": 31.2, "chrf": 58.1, "ter": 52.4, "rougeL": 1.0}, "translation") == \
        "BLEU 31.20, chrF 58.10, TER 52.40"
    m = {"rouge1": 40, "rouge2": 18, "rougeL": 30, "rougeLsum": 36,
         "lead3_rouge1": 35, "lead3_rouge2": 15, "lead3_rougeL": 25, "lead3_rougeLsum": 33}
    assert summary_line(m, "summarization") == ("ROUGE-1 40.00 (lead 35.00), ROUGE-2 18.00 (lead 15.00), "
                                                "ROUGE-L 30.00 (lead 25.00), ROUGE-Lsum 36.00 (lead 33.00)")
