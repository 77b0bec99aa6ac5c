"""lmlab's built-in summarization set: short news reports and the one-sentence summary of each.

Everything is generated from ``seed`` with :class:`random.Random` (no network, no global RNG). A
report is about one event: who did what (the *action* sentence), and what followed (the *result*
sentence); the town is named in the opening sentence, never in those two. Around them are
sentences that carry no summary content: the weather, the town, a spokesperson, and a
*distractor* — an older event of the same shape in another town, introduced by "Earlier this
year", "Last month" or "Two years ago", which the summary must leave out. The summary joins the
salient facts in a fixed form::

    It was a quiet Wednesday in Osness. A small charity did not comment on the plans. The
    transport office cancelled a rail project this week. Because of this, 74 farmers found new
    work. Last month, the city council opened a public library in Keldorf. A spokesperson said
    more details would follow.

    ->  The transport office cancelled a rail project in Osness; 74 farmers found new work.

(the first test report of seed 1234). The opening sentence always comes first and the others are
shuffled, the result after the action, so the facts sit anywhere in the report: the lead baseline
(the first three sentences, ``evaluate.metrics.lead``) shares the town and common words with the summary
but often misses the facts (ROUGE-1 34.2 on the test split), while a model has to find the two
salient sentences, skip the distractor and carry the town over from the first sentence.
"""

from __future__ import annotations

import random

AGENTS = ("the city council", "the mayor", "a local company", "the university", "the health board",
          "the river authority", "a small charity", "the transport office", "the school board",
          "a farming group", "the police", "a building firm")
ACTIONS = {  # verb (past tense) -> objects it takes
    "opened": ("a new bridge", "a public library", "a night market", "a sports hall", "a clinic"),
    "closed": ("the old hospital", "a bus depot", "the main road", "two schools", "a paper mill"),
    "approved": ("a housing plan", "a larger budget", "a new tram line", "a ban on cars", "a tax cut"),
    "cancelled": ("the summer festival", "a wind farm", "the town fair", "a rail project", "a concert"),
    "rebuilt": ("the old ferry pier", "a flooded tunnel", "the fire station", "a stone wall", "the market square"),
    "sold": ("the town hall", "a large farm", "three ferries", "the football ground", "an empty factory"),
}
GROUPS = ("residents", "workers", "students", "families", "shop owners", "farmers", "drivers", "nurses")
RESULTS = ("lost their jobs", "moved away", "signed a petition", "were given new homes",
           "joined a protest", "received extra money", "stayed at home", "asked for help",
           "found new work", "wrote to the mayor")
RESULT_OPENERS = ("As a result,", "Because of this,", "Since then,", "Soon after,")
ACTION_TAILS = (", officials said.", " this week.", ", according to a statement.", " on Tuesday.", ".")
DISTRACTOR_OPENERS = ("Earlier this year,", "Last month,", "Two years ago,")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WEATHER = ("cold", "rainy", "quiet", "busy", "windy", "warm", "grey", "bright")
FEATURES = ("old harbour", "long winters", "markets", "river walks", "football club", "stone houses",
            "bakeries", "narrow streets")
DAYPARTS = ("morning", "afternoon", "evening")
N_TOWNS = 40


def _towns(rng: random.Random, n: int) -> list[str]:
    """Made-up town names from syllables, so no real place is claimed."""
    first = ("Vel", "Os", "Tam", "Brin", "Kel", "Mar", "Dun", "Hal", "Sor", "Ar", "Lin", "Fen", "Gar", "Rud")
    last = ("mora", "trand", "wick", "holm", "bury", "stead", "ford", "ness", "vale", "dorf", "mouth")
    names = sorted({a + b for a in first for b in last})
    return rng.sample(names, n)


def _fillers(rng: random.Random, town: str, other_towns: list[str]) -> list[str]:
    """Sentences with no summary content; the last is the distractor event."""
    pool = [f"{town} is known for its {rng.choice(FEATURES)}.",
            f"Local radio covered the story all {rng.choice(DAYPARTS)}.",
            f"{_cap(rng.choice(AGENTS))} did not comment on the plans.",
            f"Some people in {town} had expected the news for weeks.",
            "A spokesperson said more details would follow."]
    chosen = rng.sample(pool, rng.randint(2, 3))
    verb = rng.choice(sorted(ACTIONS))
    chosen.append(f"{rng.choice(DISTRACTOR_OPENERS)} {rng.choice(AGENTS)} {verb} "
                  f"{rng.choice(ACTIONS[verb])} in {rng.choice(other_towns)}.")
    return chosen


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def sample_report(rng: random.Random, towns: list[str]) -> tuple[tuple, str, str]:
    """(facts, report, summary) of one event; ``facts`` identifies the event (for de-duplication)."""
    town = rng.choice(towns)
    agent, verb = rng.choice(AGENTS), rng.choice(sorted(ACTIONS))
    obj, count = rng.choice(ACTIONS[verb]), rng.randint(2, 95)
    group, result = rng.choice(GROUPS), rng.choice(RESULTS)
    action = f"{_cap(agent)} {verb} {obj}{rng.choice(ACTION_TAILS)}"
    outcome = f"{rng.choice(RESULT_OPENERS)} {count} {group} {result}."
    body = _fillers(rng, town, [t for t in towns if t != town]) + [action]
    rng.shuffle(body)
    # the result follows the action, at any later position
    body.insert(rng.randint(body.index(action) + 1, len(body)), outcome)
    opening = f"It was a {rng.choice(WEATHER)} {rng.choice(DAYS)} in {town}."
    summary = f"{_cap(agent)} {verb} {obj} in {town}; {count} {group} {result}."
    return (town, agent, verb, obj, count, group, result), " ".join([opening, *body]), summary


def generate_summaries(seed: int = 1234, n_train: int = 20000, n_valid: int = 1000,
                       n_test: int = 1000) -> dict[str, list[tuple[str, str]]]:
    """{"train", "validation", "test"} -> [(report, summary)], no event in two splits or twice.
    Held-out splits come first, so they do not change with ``n_train``."""
    rng = random.Random(f"lmlab-summaries-{seed}")
    towns = _towns(rng, N_TOWNS)
    seen: set[tuple] = set()
    out = {}
    for split, n in (("test", n_test), ("validation", n_valid), ("train", n_train)):
        pairs = []
        while len(pairs) < n:
            facts, report, summary = sample_report(rng, towns)
            if facts not in seen:
                seen.add(facts)
                pairs.append((report, summary))
        out[split] = pairs
    return {split: out[split] for split in ("train", "validation", "test")}
