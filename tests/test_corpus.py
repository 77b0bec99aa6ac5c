"""The built-in synthetic corpus: determinism, splits, size, the phenomena, the dictionary baseline."""

import hashlib
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter

import pytest
from conftest import ROOT

from lmlab.data import corpus  # noqa: E402
from lmlab.data.corpus import (  # noqa: E402
    NP,
    PP,
    SPLITS,
    Clause,
    Rel,
    dictionary,
    dictionary_bleu,
    generate_corpus,
    lexicon,
    render,
    translate_word_for_word,
)

SMALL = dict(n_train=1500, n_valid=150, n_test=150)


@pytest.fixture(scope="module")
def default_corpus():
    return generate_corpus()


def _digest(c) -> str:
    return hashlib.sha256(json.dumps(c).encode()).hexdigest()


def test_same_seed_same_corpus_different_seed_different():
    a = generate_corpus(seed=5, **SMALL)
    assert a == generate_corpus(seed=5, **SMALL)
    b = generate_corpus(seed=6, **SMALL)
    assert a["test"] != b["test"] and a["train"] != b["train"]


def test_byte_identical_in_another_process_with_another_hash_seed():
    code = ("import hashlib, json; "
            "from lmlab.data.corpus import generate_corpus; "
            "print(hashlib.sha256(json.dumps(generate_corpus(seed=5, n_train=1500, n_valid=150, "
            "n_test=150)).encode()).hexdigest())")
    env = {**os.environ, "PYTHONHASHSEED": "987", "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == _digest(generate_corpus(seed=5, **SMALL))


def test_split_sizes_and_keys(default_corpus):
    assert tuple(default_corpus) == SPLITS
    assert [len(default_corpus[s]) for s in SPLITS] == [20000, 1000, 1000]
    small = generate_corpus(seed=3, n_train=30, n_valid=4, n_test=5)
    assert [len(small[s]) for s in SPLITS] == [30, 4, 5]
    assert all(isinstance(p, tuple) and len(p) == 2 for s in SPLITS for p in small[s])


def test_no_source_sentence_repeats_within_or_across_splits(default_corpus):
    sources = [src for s in SPLITS for src, _ in default_corpus[s]]
    assert len(set(sources)) == len(sources)


def test_held_out_splits_do_not_depend_on_n_train(default_corpus):
    other = generate_corpus(n_train=50)
    assert other["test"] == default_corpus["test"]
    assert other["validation"] == default_corpus["validation"]


def test_size_vocabulary_and_lengths(default_corpus):
    train = default_corpus["train"]
    for side in (0, 1):
        types = {w for pair in train for w in pair[side].split()}
        assert 2000 <= len(types) <= 3000, (side, len(types))
    src_lens = [len(s.split()) for s, _ in train]
    assert 10 <= sum(src_lens) / len(src_lens) <= 14
    assert max(src_lens) <= corpus.MAX_SOURCE_WORDS
    assert all(re.fullmatch(r"[a-z]+( [a-z]+)* \.", x) for pair in train for x in pair)


def test_every_noun_lemma_is_seen_often(default_corpus):
    counts = Counter(w for s, _ in default_corpus["train"] for w in s.split())
    per_noun = [counts[n.src[-1]] + counts[n.src_pl[-1]] for n in lexicon().nouns]
    assert min(per_noun) >= 30


def test_target_is_a_function_of_the_source():
    # A tiny lexicon makes sentences collide often; every collision must agree on the target.
    lex = corpus.build_lexicon(9, n_nouns=3, n_compounds=2, n_adjectives=2, n_verbs=2,
                               n_context_verbs=1, n_adverbs=1)
    rng = random.Random(0)
    seen: dict[str, str] = {}
    collisions = 0
    for _ in range(20000):
        src, tgt = render(corpus.sample_clause(rng, lex))
        collisions += src in seen
        assert seen.setdefault(src, tgt) == tgt, src
    assert collisions > 50


# --- the phenomena, on hand-built sentences (the same ones as in the module docstring) ----------

def _examples():
    lex = lexicon(1234)
    n, a, v = lex.noun, lex.adjective, lex.verb
    return [
        (Clause(NP(n("chost"), adjectives=(a("capy"), a("spath"))), v("rirn"), "present",
                NP(n("poafall")), pp=PP("under", NP(n("kemp"))), adverb=lex.adverb("yelmly")),
         "the capy spath chost rirns the poafall under the kemp yelmly .",
         "la nema bricinta peta al runumo soto lo pruchuvo mandamente frazorte ."),
        (Clause(NP(n("weard"), rel=Rel(v("shoatch"), "past", NP(n("kean")))), v("rirn"), "future",
                NP(n("twirl"), det="a")),
         "the weard that shoatched the kean will rirn a twirl .",
         "lo socugo che lo prisso tradogato ae a una chupette frazortere vore ."),
        (Clause("she", v("rirn"), "present", NP(n("chost"), adjectives=(a("capy"),))),
         "she rirns the capy chost .", "la nema peta frazorte ."),
        (Clause("we", v("rirn"), "past", NP(n("kemp"), plural=True, det="these", adjectives=(a("capy"),))),
         "we rirned these capy kemps .", "questi pruchuvi peti frazortuto ajemo ."),
        (Clause("i", v("rirn"), "future", NP(n("zogeack"), plural=True, number="two")),
         "i will rirn the two zogeacks .", "ai duo grostiv frazortere voro ."),
        (Clause(NP(n("zogeack")), v("rirn"), "progressive", NP(n("snoot spurt")),
                pp=PP("near", NP(n("kemp"), plural=True, det="my"))),
         "the zogeack is rirning the snoot spurt near my kemps .",
         "lo grostiv la barna vicino ai mei pruchuvi frazorte ."),
        (Clause("they", v("rirn"), "past", NP(n("chost"), det="a"), pp=PP("in", NP(n("twirl"), plural=True))),
         "they rirned a chost in the twirls .", "una nema nele chupetti frazortuto aeno ."),
        (Clause("she", v("munk"), "present", NP(n("chost"))), "she munks the chost .", "la nema lefa ."),
        (Clause("she", v("munk"), "present", NP(n("poafall"))), "she munks the poafall .", "al runumo puscoza ."),
        (Clause("we", v("rirn"), "present", NP(n("kemp")), pp=PP("with", NP(n("lichill"), det="a"))),
         "we rirn the kemp with a lichill .", "lo pruchuvo con una pipruba frazortiamo ."),
        (Clause("we", v("rirn"), "present", NP(n("kemp")), pp=PP("with", NP(n("chost"), det="a"))),
         "we rirn the kemp with a chost .", "lo pruchuvo mediante una nema frazortiamo ."),
    ]


@pytest.mark.parametrize("i", range(11))
def test_hand_built_sentences_render_exactly(i):
    clause, src, tgt = _examples()[i]
    assert render(clause) == (src, tgt)


def test_docstring_examples_are_the_tested_ones():
    doc = " ".join(corpus.__doc__.split())
    for _, src, tgt in _examples():
        assert src in doc and tgt in doc


def test_agreement_rules_on_sampled_sentences():
    lex = lexicon(1234)
    verb_final = {f for v in lex.verbs for forms in (v.tgt, v.tgt_animate) if forms
                  for f in forms.present.values()}
    verb_final |= set(corpus.PAST_AUX.values()) | set(corpus.FUTURE_AUX.values())
    rng = random.Random(1)
    for _ in range(300):
        clause = corpus.sample_clause(rng, lex)
        src, tgt = render(clause)
        words = tgt.split()
        assert words[-1] == "." and words[-2] in verb_final  # verb-final
        person = corpus.PRONOUNS.get(clause.subj) if isinstance(clause.subj, str) else (
            "3pl" if clause.subj.plural else "3sg")
        expected_agr = {"past": corpus.PAST_AUX, "future": corpus.FUTURE_AUX}.get(clause.tense)
        if expected_agr:
            assert words[-2] == expected_agr[person]
        if isinstance(clause.subj, str):  # pro-drop
            assert clause.subj not in words
        obj = clause.obj
        slot = corpus._slot(obj.noun.gender, obj.plural)
        noun = obj.noun.tgt_pl if obj.plural else obj.noun.tgt
        if obj.adjectives:  # adjectives follow the noun, in mirror order, agreeing with it
            after = [adj.forms[slot] for adj in reversed(obj.adjectives)]
            k = words.index(noun)
            assert words[k + 1:k + 1 + len(after)] == after


def test_context_verb_translation_depends_on_object_animacy():
    lex = lexicon(1234)
    verb = next(v for v in lex.verbs if v.tgt_animate is not None)
    thing = next(n for n in lex.nouns if not n.animate)
    being = next(n for n in lex.nouns if n.animate)
    _, t1 = render(Clause("he", verb, "present", NP(thing)))
    _, t2 = render(Clause("he", verb, "present", NP(being)))
    assert t1.split()[-2] == verb.tgt.present["3sg"]
    assert t2.split()[-2] == verb.tgt_animate.present["3sg"]
    assert t1.split()[-2] != t2.split()[-2]
    # ... and animate objects take the object marker, fused with the definite article
    assert t1.split()[0] in ("lo", "la") and t2.split()[0] in ("al", "ala")


# --- the dictionary baseline --------------------------------------------------------------------

def test_word_for_word_translation():
    table = {"a": "x y", "b": "", "c": "z"}
    assert translate_word_for_word("a b c d .", table) == "x y z d ."
    d = dictionary()
    assert d["the"] in corpus.DEFINITE and d["i"] == "" and d["."] == "."
    assert dictionary() == d


def test_dictionary_baseline_scores_low():
    result = dictionary_bleu(seed=1234, n_test=1000)
    assert result["n_test"] == 1000
    assert 0 < result["dictionary_bleu"] <= 25
    assert "tok:13a" in result["bleu_signature"]


def test_bench_script_prints_json_last(capsys):
    import dictionary_baseline as module
    module.main(["--n-test", "200"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert set(result) >= {"dictionary_bleu", "dictionary_chrf", "n_test", "bleu_signature"}
    assert result["n_test"] == 200 and result["dictionary_bleu"] <= 25


def test_language_modelling_text_is_three_source_sentences_per_line():
    from lmlab.data.corpus import generate_lm_text

    text = generate_lm_text(n_train=30, n_valid=5, n_test=5)
    pairs = corpus.generate_corpus(n_train=90, n_valid=15, n_test=15)
    assert [len(text[s]) for s in ("train", "validation", "test")] == [30, 5, 5]
    assert text["test"][0] == " ".join(src for src, _ in pairs["test"][:3])
    assert text["train"][-1] == " ".join(src for src, _ in pairs["train"][-3:])
    assert generate_lm_text(n_train=30, n_valid=5, n_test=5) == text


def test_the_standard_level_is_the_corpus_it_always_was():
    """Level STANDARD (data=synthetic) is byte for byte the corpus of before the levels existed:
    the digest below was computed with that code (commit 4eb4d78)."""
    assert corpus.LEVELS["standard"] == corpus.Level()
    assert _digest(generate_corpus(seed=5, **SMALL)) == "3be173646cba9fff77bfcd3eea1f82b74b3c4b5b11fd64e625b33b8d97d08202"


def test_the_hard_level_has_a_long_tail_irregular_verbs_and_nested_relatives():
    hard = corpus.HARD
    lex = lexicon(1234, hard)
    assert (len(lex.nouns), len(lex.adjectives), len(lex.verbs), len(lex.adverbs)) == (3150, 400, 200, 500)
    # irregular: the past and future forms do not share the present's stem
    irregular = [v for v in lex.verbs if not v.tgt.participle.startswith(v.tgt.present["1sg"][:-1])]
    assert 0.2 < len(irregular) / len(lex.verbs) < 0.4
    c = corpus.generate_hard_corpus(seed=1234, n_train=4000, n_valid=100, n_test=100)
    words = Counter(w for s, _ in c["train"] for w in s.split())
    counts = sorted((words[n.src[0]] + words[n.src_pl[0]] for n in lex.nouns[:N_SIMPLE]), reverse=True)
    assert counts[0] > 20 * max(counts[500], 1)  # Zipfian: the head is far more frequent than the tail
    lengths = [len(s.split()) for s, _ in c["train"]]
    assert max(lengths) <= hard.max_source_words and max(lengths) > corpus.MAX_SOURCE_WORDS
    rng = random.Random(0)
    nested = sum(1 for _ in range(2000) if _has_nested_relative(corpus.sample_clause(rng, lex, hard)))
    assert nested > 20
    # the same lexicon and sentences at STANDARD never nest
    rng = random.Random(0)
    assert not any(_has_nested_relative(corpus.sample_clause(rng, lexicon(1234))) for _ in range(2000))


N_SIMPLE = 3000  # HARD's simple nouns (the compounds follow them)


def _has_nested_relative(clause) -> bool:
    nps = [n for n in (clause.subj, clause.obj) if isinstance(n, NP)]
    return any(n.rel is not None and n.rel.obj.rel is not None for n in nps)


def test_the_dictionary_reads_each_levels_default_training_split():
    """corpus.DEFAULT_N_TRAIN repeats the data presets' n_train (corpus.py cannot read conf/)."""
    from lmlab.config import compose

    for level, preset in (("standard", "synthetic"), ("hard", "synthetic_hard")):
        assert corpus.DEFAULT_N_TRAIN[level] == compose([f"data={preset}"])["data"]["n_train"]
