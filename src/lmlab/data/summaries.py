"""lmlab's built-in summarization set: short news reports and the one-sentence summary of each.

Everything is generated from ``seed`` with :class:`random.Random` (no network, no global RNG). A
report tells of two things that happened in one town this week, each an *action* (who did what)
and its *result* (how many people it touched). The summary is about the one that touched more
people: a model has to compare the two counts to choose its content. Around them are sentences
with no summary content (the weather, the town, a spokesperson) and a *distractor*: an older event
in another town ("Earlier this year", "Last month", "Two years ago"), which the summary leaves out.

The summary rephrases what it keeps. Reports name agents, actions and results in one of several
ways ("councillors", "city officials", "the council"), objects carry descriptions the summary
drops ("a long-awaited new bridge"), and the summary always uses one canonical wording ("the city
council", "a new bridge"). It takes one of three forms, drawn at random and so not predictable from
the report: no model can reach ROUGE 100, as real references vary too::

    It was a bright Sunday in Osness. The police cancelled a controversial rail project on
    Tuesday. As a result, 74 farmers moved into new houses. The travel agency shut down two
    schools. Soon after, 53 residents lost their jobs. Earlier this year, a local company closed a
    paper mill in Marholm. Osness is known for its markets.

    ->  In Osness, the police cancelled a rail project and 74 farmers were given new homes.

(the first test report of seed 1234: 74 > 53, "moved into new houses" is "were given new homes",
the description goes and the older event in Marholm stays out).
The opening sentence always comes first and the others are shuffled (each result right after
its action), so the lead baseline (the first three sentences, ``evaluate.metrics.lead``) shares the
town and common words with the summary but often misses the facts, the wording or both.
"""

from __future__ import annotations

import random

# canonical name (what the summary says) -> the ways a report may say it (the canonical included)
AGENTS = {
    "the city council": ("the city council", "councillors", "city officials", "the council"),
    "the mayor": ("the mayor", "the mayor's office", "the town's mayor"),
    "a local company": ("a local company", "a firm based in the town", "a local business"),
    "the university": ("the university", "university leaders", "the college board"),
    "the health board": ("the health board", "health officials", "the regional health service"),
    "the river authority": ("the river authority", "the waterways agency", "river managers"),
    "a small charity": ("a small charity", "a local charity", "volunteers from a charity"),
    "the transport office": ("the transport office", "transport officials", "the travel agency"),
    "the school board": ("the school board", "school governors", "the education office"),
    "a farming group": ("a farming group", "local farmers' leaders", "a growers' union"),
    "the police": ("the police", "police chiefs", "the local force"),
    "a building firm": ("a building firm", "a construction company", "builders"),
}
# canonical verb -> (report verbs, objects it takes)
ACTIONS = {
    "opened": (("opened", "threw open", "unveiled"),
               ("a new bridge", "a public library", "a night market", "a sports hall", "a clinic")),
    "closed": (("closed", "shut", "shut down"),
               ("the old hospital", "a bus depot", "the main road", "two schools", "a paper mill")),
    "approved": (("approved", "backed", "gave the go-ahead for"),
                 ("a housing plan", "a larger budget", "a new tram line", "a ban on cars", "a tax cut")),
    "cancelled": (("cancelled", "called off", "scrapped"),
                  ("the summer festival", "a wind farm", "the town fair", "a rail project", "a concert")),
    "rebuilt": (("rebuilt", "restored", "repaired"),
                ("the old ferry pier", "a flooded tunnel", "the fire station", "a stone wall", "the market square")),
    "sold": (("sold", "sold off", "found a buyer for"),
             ("the town hall", "a large farm", "three ferries", "the football ground", "an empty factory")),
}
# words a report may put before an object's noun ("a new bridge" -> "a long-awaited new bridge")
DESCRIPTIONS = ("long-awaited", "much-needed", "costly", "controversial", "well-known", "popular")
GROUPS = ("residents", "workers", "students", "families", "shop owners", "farmers", "drivers", "nurses")
# canonical result -> the ways a report may say it
RESULTS = {
    "lost their jobs": ("lost their jobs", "were laid off", "were left without work"),
    "moved away": ("moved away", "left the town", "packed up and left"),
    "signed a petition": ("signed a petition", "put their names to a petition", "backed a petition"),
    "were given new homes": ("were given new homes", "moved into new houses", "were rehoused"),
    "joined a protest": ("joined a protest", "took to the streets", "marched in protest"),
    "received extra money": ("received extra money", "were paid a bonus", "got extra funds"),
    "stayed at home": ("stayed at home", "did not go out", "kept indoors"),
    "asked for help": ("asked for help", "called a helpline", "turned to the council for aid"),
    "found new work": ("found new work", "got new jobs", "were hired elsewhere"),
    "wrote to the mayor": ("wrote to the mayor", "sent letters to the mayor", "complained to the mayor"),
}
RESULT_OPENERS = ("As a result,", "Because of this,", "Since then,", "Soon after,")
ACTION_TAILS = (", officials said.", " this week.", ", according to a statement.", " on Tuesday.", ".")
DISTRACTOR_OPENERS = ("Earlier this year,", "Last month,", "Two years ago,")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WEATHER = ("cold", "rainy", "quiet", "busy", "windy", "warm", "grey", "bright")
FEATURES = ("old harbour", "long winters", "markets", "river walks", "football club", "stone houses",
            "bakeries", "narrow streets")
DAYPARTS = ("morning", "afternoon", "evening")
N_TOWNS = 40
# The three ways a summary may be put, drawn at random for each report
FORMS = (
    "{Agent} {verb} {obj} in {town}; {count} {group} {result}.",
    "In {town}, {agent} {verb} {obj} and {count} {group} {result}.",
    "{count} {group} in {town} {result} after {agent} {verb} {obj}.",
)


def _towns(rng: random.Random, n: int) -> list[str]:
    """Made-up town names from syllables, so no real place is claimed."""
    first = ("Vel", "Os", "Tam", "Brin", "Kel", "Mar", "Dun", "Hal", "Sor", "Ar", "Lin", "Fen", "Gar", "Rud")
    last = ("mora", "trand", "wick", "holm", "bury", "stead", "ford", "ness", "vale", "dorf", "mouth")
    names = sorted({a + b for a in first for b in last})
    return rng.sample(names, n)


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _described(rng: random.Random, obj: str) -> str:
    """The object as a report may put it: with a description before its noun, half the time."""
    if rng.random() < 0.5:
        return obj
    det, rest = obj.split(" ", 1)
    desc = rng.choice(DESCRIPTIONS)
    if det in ("a", "an"):
        det = "an" if desc[0] in "aeiou" else "a"
    return f"{det} {desc} {rest}"


def _event(rng: random.Random, counts: set[int]) -> tuple[tuple, list[str]]:
    """(facts, [action sentence, result sentence]) of one event this week; its count is new to
    ``counts`` so that the two events of a report never tie."""
    agent, verb = rng.choice(sorted(AGENTS)), rng.choice(sorted(ACTIONS))
    obj = rng.choice(ACTIONS[verb][1])
    count = rng.choice([c for c in range(2, 96) if c not in counts])
    counts.add(count)
    group, result = rng.choice(GROUPS), rng.choice(sorted(RESULTS))
    action = (f"{_cap(rng.choice(AGENTS[agent]))} {rng.choice(ACTIONS[verb][0])} "
              f"{_described(rng, obj)}{rng.choice(ACTION_TAILS)}")
    outcome = f"{rng.choice(RESULT_OPENERS)} {count} {group} {rng.choice(RESULTS[result])}."
    return (agent, verb, obj, count, group, result), [action, outcome]


def _fillers(rng: random.Random, town: str, other_towns: list[str]) -> list[str]:
    """Sentences with no summary content; the last is the distractor event."""
    pool = [f"{town} is known for its {rng.choice(FEATURES)}.",
            f"Local radio covered the story all {rng.choice(DAYPARTS)}.",
            f"Some people in {town} had expected the news for weeks.",
            "A spokesperson said more details would follow."]
    chosen = rng.sample(pool, rng.randint(1, 2))
    verb = rng.choice(sorted(ACTIONS))
    chosen.append(f"{rng.choice(DISTRACTOR_OPENERS)} {rng.choice(sorted(AGENTS))} {verb} "
                  f"{rng.choice(ACTIONS[verb][1])} in {rng.choice(other_towns)}.")
    return chosen


def sample_report(rng: random.Random, towns: list[str]) -> tuple[tuple, str, str]:
    """(facts, report, summary); ``facts`` identifies the report (for de-duplication)."""
    town = rng.choice(towns)
    counts: set[int] = set()
    events = [_event(rng, counts) for _ in range(2)]
    units = [[s] for s in _fillers(rng, town, [t for t in towns if t != town])]
    units += [sentences for _, sentences in events]  # each result right after its action
    rng.shuffle(units)
    body = [s for unit in units for s in unit]
    opening = f"It was a {rng.choice(WEATHER)} {rng.choice(DAYS)} in {town}."
    (agent, verb, obj, count, group, result), _ = max(events, key=lambda e: e[0][3])
    summary = rng.choice(FORMS).format(Agent=_cap(agent), agent=agent, verb=verb, obj=obj, town=town,
                                       count=count, group=group, result=result)
    facts = (town, *(f for f, _ in events))
    return facts, " ".join([opening, *body]), summary


def generate_summaries(seed: int = 1234, n_train: int = 20000, n_valid: int = 1000,
                       n_test: int = 1000) -> dict[str, list[tuple[str, str]]]:
    """{"train", "validation", "test"} -> [(report, summary)], no report in two splits or twice.
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
