"""The built-in summarization set: deterministic, disjoint splits, summaries built from the report's
salient facts, and a lead baseline that falls clearly short."""

import re

import pytest  # noqa: E402

from lmlab.data import summaries  # noqa: E402
from lmlab.evaluate.metrics import lead, score, split_sentences  # noqa: E402


@pytest.fixture(scope="module")
def corpus():
    return summaries.generate_summaries(n_train=3000, n_valid=300, n_test=300)


def test_same_seed_same_set_and_held_out_splits_do_not_depend_on_n_train(corpus):
    again = summaries.generate_summaries(n_train=100, n_valid=300, n_test=300)
    assert again["test"] == corpus["test"] and again["validation"] == corpus["validation"]
    assert again["train"] == corpus["train"][:100]
    assert summaries.generate_summaries(seed=7, n_train=10, n_valid=10, n_test=10)["test"] != corpus["test"][:10]
    assert [len(corpus[s]) for s in ("train", "validation", "test")] == [3000, 300, 300]


def test_no_report_repeats_within_or_across_splits(corpus):
    reports = [r for split in corpus.values() for r, _ in split]
    assert len(set(reports)) == len(reports)


def test_docstring_example_is_the_first_test_report():
    report, summary = summaries.generate_summaries()["test"][0]
    doc = " ".join(summaries.__doc__.split())
    assert " ".join(report.split()) in doc and summary in doc


def test_summary_is_made_of_the_salient_facts(corpus):
    pattern = re.compile(r"(.+) (\w+) (.+) in (\w+); (\d+) (.+?) (.+)\.")
    for report, summary in corpus["train"][:500]:
        agent, verb, obj, town, count, group, result = pattern.fullmatch(summary).groups()
        sentences = split_sentences(report)
        assert sentences[0].endswith(f" in {town}.")  # the town opens the report
        action = [s for s in sentences if s.lower().startswith(f"{agent.lower()} {verb} {obj}")]
        outcome = [s for s in sentences if s.endswith(f"{count} {group} {result}.")]
        assert len(action) == 1 and len(outcome) == 1, report
        assert sentences.index(action[0]) < sentences.index(outcome[0])
        assert town not in action[0] and town not in outcome[0]  # carried over from the opening
        assert any(s.startswith(summaries.DISTRACTOR_OPENERS) for s in sentences)


def test_lead_baseline_falls_clearly_short(corpus):
    records = [{"id": i, "source": r, "reference": s, "hypothesis": lead(r), "hyp_tokens": 0,
                "hit_max_len": False} for i, (r, s) in enumerate(corpus["test"])]
    m = score(records, task="summarization")
    assert m["lead3_rouge1"] == m["rouge1"]  # the hypothesis here is the lead itself
    assert 25 < m["lead3_rouge1"] < 45 and m["lead3_rouge2"] < 30
