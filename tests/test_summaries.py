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


def _alternatives(words) -> str:
    return "(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"


# each summary form as a pattern whose slots take the canonical wordings only
_SLOTS = {"agent": _alternatives([*summaries.AGENTS, *(a[0].upper() + a[1:] for a in summaries.AGENTS)]),
          "verb": _alternatives(summaries.ACTIONS),
          "obj": _alternatives({o for _, objs in summaries.ACTIONS.values() for o in objs}),
          "town": r"\w+", "count": r"\d+", "group": _alternatives(summaries.GROUPS),
          "result": _alternatives(summaries.RESULTS)}
FORM_PATTERNS = [re.compile(re.escape(form).replace(r"\{Agent\}", "{agent}").replace(r"\{", "{").replace(r"\}", "}")
                            .format(**{k: f"(?P<{k}>{v})" for k, v in _SLOTS.items()}))
                 for form in summaries.FORMS]


def parse(summary: str) -> dict:
    """The facts of a summary and which form puts them, read with the canonical wordings only."""
    for form, pattern in enumerate(FORM_PATTERNS):
        m = pattern.fullmatch(summary)
        if m:
            return dict(m.groupdict(), agent=m["agent"][0].lower() + m["agent"][1:], form=form)
    raise AssertionError(f"no summary form fits {summary!r}")


def test_summary_keeps_the_event_that_touched_more_people_in_canonical_words(corpus):
    forms = set()
    for report, summary in corpus["train"][:500]:
        f = parse(summary)
        forms.add(f["form"])
        sentences = split_sentences(report)
        assert sentences[0].endswith(f" in {f['town']}.")  # the town opens the report
        # the chosen event, in one of the report's wordings: its action, then right after it its result
        actions = [i for i, s in enumerate(sentences)
                   if any(s.lower().startswith(f"{alias} {verb} ".lower())
                          for alias in summaries.AGENTS[f["agent"]] for verb in summaries.ACTIONS[f["verb"]][0])
                   and f["obj"].split(" ", 1)[1] in s]
        results = [i for i, s in enumerate(sentences)
                   if any(s.endswith(f" {f['count']} {f['group']} {r}.") for r in summaries.RESULTS[f["result"]])]
        assert len(results) == 1 and results[0] - 1 in actions, report
        # the other event of this week touched fewer people
        counts = [int(c) for c in re.findall(r"(?:As a result|Because of this|Since then|Soon after), (\d+) ", report)]
        assert len(counts) == 2 and max(counts) == int(f["count"]) and min(counts) < max(counts), report
        assert f["town"] not in sentences[results[0]] and f["town"] not in sentences[results[0] - 1]
        assert any(s.startswith(summaries.DISTRACTOR_OPENERS) for s in sentences)
    assert forms == {0, 1, 2}


def test_even_a_perfect_model_stays_below_100(corpus):
    """The summary's form is drawn at random, so the best any model can do is one form always:
    the right facts in form 0 everywhere score below 100 on every ROUGE, and far above the lead."""
    records = []
    for i, (report, summary) in enumerate(corpus["test"]):
        f = parse(summary)
        hyp = summaries.FORMS[0].format(Agent=f["agent"][0].upper() + f["agent"][1:], **f)
        records.append({"id": i, "source": report, "reference": summary, "hypothesis": hyp,
                        "hyp_tokens": 0, "hit_max_len": False})
    m = score(records, task="summarization")
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert m["lead3_" + key] + 40 < m[key] < 99, (key, m)


def test_lead_baseline_falls_clearly_short(corpus):
    records = [{"id": i, "source": r, "reference": s, "hypothesis": lead(r), "hyp_tokens": 0,
                "hit_max_len": False} for i, (r, s) in enumerate(corpus["test"])]
    m = score(records, task="summarization")
    assert m["lead3_rouge1"] == m["rouge1"]  # the hypothesis here is the lead itself
    assert 25 < m["lead3_rouge1"] < 45 and m["lead3_rouge2"] < 30
