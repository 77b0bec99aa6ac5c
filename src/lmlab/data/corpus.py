"""lmlab's built-in parallel corpus: a made-up source language and a made-up target language.

Everything is generated from ``seed`` with :class:`random.Random` (no network, no global RNG):
first two lexicons of pseudo-words (source vaguely English-like, target vaguely Romance-like),
then sentences from a small grammar. The target is a *deterministic* function of the source
sentence (no noise, no free choices), so a model can learn it exactly, yet a word-for-word
dictionary cannot: :func:`dictionary` + :func:`translate_word_for_word`, the strongest such
dictionary (read off the generator's own word alignments), scores about 7 BLEU on the test split.

Grammar, source side (``?`` optional, ``*`` repeated)::

    S     -> SUBJ VG OBJ ("and" NP)? PP? ADV? "."
    SUBJ  -> PRONOUN (i he she we they) | NP
    NP    -> DET NUM? ADJ* NOUN REL?       DET -> the a some this these my our | (none, with NUM)
    REL   -> "that" VG NP
    VG    -> V | V-s | am/is/are V-ing | V-ed | will V
    PP    -> PREP NP                       PREP -> in on from near with under behind for
    NOUN  -> noun | noun noun              (a fixed set of two-noun compounds)

Target side::

    S     -> SUBJ? OBJ ("e" OBJ)? PP? ADV? VERB-COMPLEX "."
    OBJ   -> "a"? NP                       ("a" before animate objects only)
    NP    -> DET NUM? NOUN ADJ* REL?       REL -> "che" OBJ VERB-COMPLEX
    VERB-COMPLEX -> V-agr | participle AUX-agr | infinitive FUTURE-AUX-agr

Target nouns have a lexical gender (m/f, not visible on the "-e/-i" nouns nor on the invariant
ones), determiners and adjectives agree with the noun in gender and number, verbs agree with the
subject in person and number (1sg 3sg 1pl 3pl) and carry tense. The phenomena a word-for-word
dictionary cannot handle, with examples from seed 1234 (the lines in brackets gloss the target
with the source words it translates; ``+`` marks a target word with no source counterpart):

1. Reordering: the verb goes last (SOV, relative clauses too), adjectives follow the noun in
   mirror order::

       the capy spath chost rirns the poafall under the kemp yelmly .
       la nema bricinta peta al runumo soto lo pruchuvo mandamente frazorte .
       (the chost spath capy a+the poafall under the kemp yelmly rirns .)

       the weard that shoatched the kean will rirn a twirl .
       lo socugo che lo prisso tradogato ae a una chupette frazortere vore .
       (the weard that the kean shoatched +a a twirl rirn will .)

2. Agreement and inflection: articles and adjectives agree with the noun (chost is feminine,
   kemp masculine, zogeack masculine and invariant; ``ai`` is ``a`` + ``li``, see 4), the verb
   with the subject; tense comes from the source suffix or auxiliary; subject pronouns are
   dropped, the verb ending says who::

       she rirns the capy chost .          ->  la nema peta frazorte .
       we rirned these capy kemps .        ->  questi pruchuvi peti frazortuto ajemo .
       i will rirn the two zogeacks .      ->  ai duo grostiv frazortere voro .

3. One-to-many and many-to-one: ``V-ed`` becomes participle + auxiliary (above), ``my``/``our``
   become article + possessive and ``near`` becomes ``vicino a``; ``in/on/from/near`` fuse with
   a following definite article (also the one inside ``my``/``our``), ``is V-ing`` is one
   present-tense word, and a two-noun compound (snoot spurt) is one target noun::

       the zogeack is rirning the snoot spurt near my kemps .
       lo grostiv la barna vicino ai mei pruchuvi frazorte .
       they rirned a chost in the twirls .
       una nema nele chupetti frazortuto aeno .

4. Context-dependent words, all decided by the animacy of a noun (chost and kemp are things;
   poafall, lichill, twirl and zogeack are beings): an animate direct object takes ``a``
   (fused with a definite article: ``al``, ``ala``, ``ai``, ``ale``), some verbs have two
   translations chosen by their object (the first one if coordinated), and ``with`` is ``con``
   before an animate noun, ``mediante`` before an inanimate one::

       she munks the chost .               ->  la nema lefa .
       she munks the poafall .             ->  al runumo puscoza .
       we rirn the kemp with a lichill .   ->  lo pruchuvo con una pipruba frazortiamo .
       we rirn the kemp with a chost .     ->  lo pruchuvo mediante una nema frazortiamo .

Source sentences never repeat, within or across splits; the test split is drawn first, from its
own random stream, so it does not change with ``n_train``.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from dataclasses import dataclass

from lmlab.data.rawfiles import SPLITS

MAX_SOURCE_WORDS = 25

# Lexicon sizes. Chosen so that each language has ~2.3-2.6k word types in a 20k-sentence training
# split and every lexical item, drawn uniformly within its category, is seen ~40+ times there.
N_NOUNS = 880
N_COMPOUNDS = 40
N_ADJECTIVES = 100
N_VERBS = 52
N_CONTEXT_VERBS = 10  # of N_VERBS: two translations, picked by the animacy of the object
N_ADVERBS = 170
P_INVARIANT_NOUN = 0.2
P_E_NOUN = 0.2
P_ANIMATE = 0.45

# Sentence shape. First person is over-represented because, unlike third, it only ever comes
# from a pronoun, and each verb needs its 1sg/1pl forms seen often enough to be learnt.
P_PLURAL = 0.45
P_PRONOUN_SUBJECT = 0.4
PRONOUN_WEIGHTS = (("i", 0.3), ("we", 0.3), ("he", 0.1), ("she", 0.1), ("they", 0.2))
TENSE_WEIGHTS = (("present", 0.33), ("progressive", 0.15), ("past", 0.3), ("future", 0.22))
P_RELATIVE = 0.25
P_COORDINATION = 0.2
P_PP = 0.7
P_ADVERB = 0.5
ADJECTIVE_COUNT_WEIGHTS = ((0, 0.45), (1, 0.4), (2, 0.15))



@dataclass(frozen=True)
class Level:
    """How hard the corpus is (``data.corpus``: ``synthetic`` is :data:`STANDARD`,
    ``synthetic_hard`` is :data:`HARD`). The defaults are the standard corpus, byte for byte."""

    n_nouns: int = N_NOUNS
    n_compounds: int = N_COMPOUNDS
    n_adjectives: int = N_ADJECTIVES
    n_verbs: int = N_VERBS
    n_context_verbs: int = N_CONTEXT_VERBS
    n_adverbs: int = N_ADVERBS
    # 0: every word of a category equally likely; s > 0: the word of rank r with weight 1/r**s,
    # so a long tail of words is seen a few times only (as in real text). The rank is the order
    # the lexicon lists a category in, so the context verbs (listed first) are the frequent
    # verbs (73% of verb draws at HARD) and the compounds (listed last) rare nouns (0.6%).
    zipf: float = 0.0
    # share of verbs whose participle and infinitive have stems of their own (learnt by heart)
    p_irregular: float = 0.0
    p_relative: float = P_RELATIVE
    # chance that the object inside a relative clause has a relative clause of its own
    p_nested_relative: float = 0.0
    max_source_words: int = MAX_SOURCE_WORDS


STANDARD = Level()
# Four times the words, a Zipfian tail, irregular verbs and nested relative clauses: a task on
# which the default `tiny` stays well short of the ceiling at the default budget and more
# capacity pays (README, "The built-in corpus").
HARD = Level(n_nouns=3000, n_compounds=150, n_adjectives=400, n_verbs=200, n_context_verbs=40,
             n_adverbs=500, zipf=1.0, p_irregular=0.3, p_relative=0.35, p_nested_relative=0.35,
             max_source_words=35)
LEVELS = {"standard": STANDARD, "hard": HARD}

PERSONS = ("1sg", "3sg", "1pl", "3pl")
PRONOUNS = {"i": "1sg", "he": "3sg", "she": "3sg", "we": "1pl", "they": "3pl"}
BE = {"1sg": "am", "3sg": "is", "1pl": "are", "3pl": "are"}
PAST_AUX = {"1sg": "ajo", "3sg": "ae", "1pl": "ajemo", "3pl": "aeno"}
FUTURE_AUX = {"1sg": "voro", "3sg": "vore", "1pl": "voremo", "3pl": "voreno"}
TENSES = ("present", "progressive", "past", "future")

# Agreement slots, used as tuple indices everywhere: m.sg, f.sg, m.pl, f.pl.
DEFINITE = ("lo", "la", "li", "le")
CONTRACTION_SUFFIX = ("l", "la", "i", "le")  # "ne" + "la" -> "nela" ("in the" + f.sg)
DETERMINERS = {
    "the": DEFINITE,
    "a": ("uno", "una", None, None),
    "some": (None, None, "alcuni", "alcune"),
    "this": ("questo", "questa", None, None),
    "these": (None, None, "questi", "queste"),
}
# Possessives take the definite article as well (one source word -> two target words).
POSSESSIVES = {"my": ("meo", "mea", "mei", "mee"), "our": ("nostro", "nostra", "nostri", "nostre")}
NUMBERS = {"two": "duo", "three": "tre", "four": "quatro", "five": "cinque", "six": "sei",
           "seven": "sete", "eight": "oto", "nine": "nove", "ten": "dece"}
# source preposition -> (target words, target words whose last one fuses with a definite
# article, or None when it does not contract)
PREPOSITIONS = {
    "in": (("en",), ("ne",)),
    "on": (("su",), ("su",)),
    "from": (("da",), ("da",)),
    "near": (("vicino", "a"), ("vicino", "a")),
    "with": (("mediante",), None),  # inanimate; animate uses WITH_ANIMATE
    "under": (("soto",), None),
    "behind": (("dreto",), None),
    "for": (("pro",), None),
}
WITH_ANIMATE = ("con",)
OBJECT_MARKER = ("a",)  # before animate direct objects; fuses with "the" like "near"'s "a"

SOURCE_FUNCTION_WORDS = frozenset(
    [*DETERMINERS, *POSSESSIVES, *NUMBERS, *PRONOUNS, *BE.values(), *PREPOSITIONS,
     "will", "that", "and", "."])
TARGET_FUNCTION_WORDS = frozenset(
    [w for forms in DETERMINERS.values() for w in forms if w]
    + [w for forms in POSSESSIVES.values() for w in forms]
    + list(NUMBERS.values()) + list(PAST_AUX.values()) + list(FUTURE_AUX.values())
    + [w for plain, _ in PREPOSITIONS.values() for w in plain] + list(WITH_ANIMATE) + list(OBJECT_MARKER)
    + [c[-1] + s for _, c in PREPOSITIONS.values() if c for s in CONTRACTION_SUFFIX]
    + ["che", "e", "."])


def _slot(gender: str, plural: bool) -> int:
    return (2 if plural else 0) + (1 if gender == "f" else 0)


# ----------------------------------------------------------------------------- lexicon

@dataclass(frozen=True)
class Noun:
    src: tuple[str, ...]      # one word, or two for a compound
    src_pl: tuple[str, ...]
    tgt: str
    tgt_pl: str
    gender: str               # "m" | "f"
    animate: bool


@dataclass(frozen=True)
class Adjective:
    src: str
    forms: tuple[str, str, str, str]  # by agreement slot


@dataclass(frozen=True)
class VerbForms:
    present: dict                     # person -> form
    participle: str
    infinitive: str


@dataclass(frozen=True)
class Verb:
    src: str
    src_3sg: str
    src_past: str
    src_ing: str
    tgt: VerbForms                    # with an inanimate object (or always)
    tgt_animate: VerbForms | None = None  # context verbs: with an animate object


@dataclass(frozen=True)
class Adverb:
    src: str
    tgt: str


@dataclass(frozen=True)
class Lexicon:
    nouns: tuple[Noun, ...]           # simple nouns, then compounds
    adjectives: tuple[Adjective, ...]
    verbs: tuple[Verb, ...]
    adverbs: tuple[Adverb, ...]
    zipf: float = 0.0                 # Level.zipf: how words are drawn from each category

    def pick(self, rng: random.Random, items: tuple):
        """One item of a category: uniform, or the one of rank r with weight 1/r**zipf."""
        if not self.zipf:
            return rng.choice(items)
        return rng.choices(items, cum_weights=_zipf_weights(len(items), self.zipf))[0]

    def pick_distinct(self, rng: random.Random, items: tuple, k: int) -> tuple:
        if not self.zipf:
            return tuple(rng.sample(items, k))
        chosen: list = []
        while len(chosen) < k:
            item = self.pick(rng, items)
            if item not in chosen:
                chosen.append(item)
        return tuple(chosen)

    # Lookups by source form, for building sentences by hand (tests, docs).
    def noun(self, src: str) -> Noun:
        return _find(self.nouns, src, lambda n: " ".join(n.src))

    def adjective(self, src: str) -> Adjective:
        return _find(self.adjectives, src, lambda a: a.src)

    def verb(self, src: str) -> Verb:
        return _find(self.verbs, src, lambda v: v.src)

    def adverb(self, src: str) -> Adverb:
        return _find(self.adverbs, src, lambda a: a.src)


@functools.lru_cache(maxsize=16)
def _zipf_weights(n: int, s: float) -> tuple[float, ...]:
    total, out = 0.0, []
    for rank in range(1, n + 1):
        total += rank ** -s
        out.append(total)
    return tuple(out)


def _find(items, src: str, key):
    for item in items:
        if key(item) == src:
            return item
    raise KeyError(f"{src!r} is not in this lexicon")


_S_ONSETS = ("b", "bl", "br", "c", "ch", "cl", "cr", "d", "dr", "f", "fl", "fr", "g", "gl", "gr",
             "h", "j", "k", "l", "m", "n", "p", "pl", "pr", "qu", "r", "s", "sc", "sh", "sk", "sl",
             "sm", "sn", "sp", "st", "str", "sw", "t", "th", "tr", "tw", "v", "w", "wh", "y", "z")
_S_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ea", "ee", "oa", "oo", "ou")
_S_CODAS = ("b", "ck", "d", "ff", "g", "ft", "k", "l", "ld", "lk", "ll", "lm", "lp", "lt", "m",
            "mp", "n", "nch", "nd", "ng", "nk", "nt", "p", "pt", "rb", "rd", "rk", "rl", "rm", "rn",
            "rp", "rt", "sh", "sk", "sp", "st", "t", "tch", "th", "x", "zz")
_S_ADJ_SUFFIXES = ("", "", "y", "ish", "ful", "ous", "ic", "al")

_T_ONSETS = ("b", "br", "c", "ch", "d", "f", "fr", "g", "gr", "l", "m", "n", "p", "pr", "r", "s",
             "sc", "st", "t", "tr", "v", "z")
_T_VOWELS = ("a", "e", "i", "o", "u")
_T_CODAS = ("b", "c", "d", "f", "g", "l", "ll", "m", "n", "nd", "nt", "p", "r", "rc", "rd", "rn",
            "rt", "s", "ss", "st", "t", "tt", "v", "z", "zz")

_CONJUGATIONS = (  # present 1sg 3sg 1pl 3pl, participle, infinitive
    (("o", "a", "iamo", "ano"), "ato", "are"),
    (("o", "e", "iamo", "ono"), "uto", "ere"),
)


class _Words:
    """Draws pseudo-words whose every inflected form is new, so no word is ever ambiguous."""

    def __init__(self, rng: random.Random, reserved: frozenset[str]):
        self.rng = rng
        self.used = set(reserved)  # membership only; never iterated, so order cannot leak

    def draw(self, make, forms) -> tuple:
        while True:
            stem = make()
            out = forms(stem)
            if len(set(out)) == len(out) and not any(w in self.used for w in out):
                self.used.update(out)
                return out

    def source_stem(self) -> str:
        r = self.rng
        word = r.choice(_S_ONSETS) + r.choice(_S_NUCLEI)
        if r.random() < 0.45:
            word += r.choice(_S_ONSETS) + r.choice(_S_NUCLEI)
        return word + r.choice(_S_CODAS)

    def target_stem(self) -> str:
        r = self.rng
        word = r.choice(_T_ONSETS) + r.choice(_T_VOWELS)
        if r.random() < 0.6:
            word += r.choice(_T_ONSETS) + r.choice(_T_VOWELS)
        return word + r.choice(_T_CODAS)


def _target_noun(words: _Words, rng: random.Random) -> tuple[str, str, str]:
    gender = "f" if rng.random() < 0.5 else "m"
    x = rng.random()
    if x < P_INVARIANT_NOUN:  # same form in both numbers: only article/adjectives show plural
        (tgt,) = words.draw(words.target_stem, lambda s: (s,))
        return tgt, tgt, gender
    if x < P_INVARIANT_NOUN + P_E_NOUN:  # "-e/-i" nouns: gender is not visible on the noun
        sg, pl = "e", "i"
    else:
        sg, pl = ("a", "e") if gender == "f" else ("o", "i")
    tgt, tgt_pl = words.draw(words.target_stem, lambda s: (s + sg, s + pl))
    return tgt, tgt_pl, gender


def _target_verb(words: _Words, rng: random.Random, p_irregular: float = 0.0) -> VerbForms:
    endings, part, inf = rng.choice(_CONJUGATIONS)
    if p_irregular and rng.random() < p_irregular:  # the past and future forms from a stem of their own
        out = words.draw(words.target_stem, lambda s: tuple(s + e for e in endings))
        out += words.draw(words.target_stem, lambda s: (s + part, s + inf))
    else:
        out = words.draw(words.target_stem,
                         lambda s: tuple(s + e for e in endings) + (s + part, s + inf))
    return VerbForms(present=dict(zip(PERSONS, out[:4])), participle=out[4], infinitive=out[5])


@functools.lru_cache(maxsize=8)
def lexicon(seed: int = 1234, level: Level = STANDARD) -> Lexicon:
    """Both vocabularies for ``seed`` at ``level`` (cached; treat as read-only)."""
    return build_lexicon(seed, level.n_nouns, level.n_compounds, level.n_adjectives, level.n_verbs,
                         level.n_context_verbs, level.n_adverbs, level.zipf, level.p_irregular)


def build_lexicon(seed: int, n_nouns: int = N_NOUNS, n_compounds: int = N_COMPOUNDS,
                  n_adjectives: int = N_ADJECTIVES, n_verbs: int = N_VERBS,
                  n_context_verbs: int = N_CONTEXT_VERBS, n_adverbs: int = N_ADVERBS,
                  zipf: float = 0.0, p_irregular: float = 0.0) -> Lexicon:
    """A lexicon of the given sizes (tests use tiny ones, where sentences collide often)."""
    rng = random.Random(f"lmlab-corpus:{seed}:lexicon")
    src = _Words(rng, SOURCE_FUNCTION_WORDS)
    tgt = _Words(rng, TARGET_FUNCTION_WORDS)

    nouns = []
    for _ in range(n_nouns):
        sg, pl = src.draw(src.source_stem, lambda s: (s, s + "s"))
        t, t_pl, gender = _target_noun(tgt, rng)
        nouns.append(Noun((sg,), (pl,), t, t_pl, gender, rng.random() < P_ANIMATE))
    pairs: list[tuple[int, int]] = []
    while len(pairs) < n_compounds:
        a, b = rng.sample(range(n_nouns), 2)
        if (a, b) not in pairs:
            pairs.append((a, b))
    for a, b in pairs:
        t, t_pl, gender = _target_noun(tgt, rng)
        first, head = nouns[a].src[0], nouns[b]
        nouns.append(Noun((first, head.src[0]), (first, head.src_pl[0]), t, t_pl, gender,
                          rng.random() < P_ANIMATE))

    adjectives = []
    for _ in range(n_adjectives):
        (a,) = src.draw(lambda: src.source_stem() + rng.choice(_S_ADJ_SUFFIXES), lambda s: (s,))
        if rng.random() < 0.3:  # "-e/-i" adjectives agree in number only
            forms = tgt.draw(tgt.target_stem, lambda s: (s + "e", s + "i"))
            forms = (forms[0], forms[0], forms[1], forms[1])
        else:
            forms = tgt.draw(tgt.target_stem, lambda s: (s + "o", s + "a", s + "i", s + "e"))
        adjectives.append(Adjective(a, forms))

    verbs = []
    for i in range(n_verbs):
        base, s3, past, ing = src.draw(src.source_stem,
                                       lambda s: (s, s + "s", s + "ed", s + "ing"))
        inanimate = _target_verb(tgt, rng, p_irregular)
        animate = _target_verb(tgt, rng, p_irregular) if i < n_context_verbs else None
        verbs.append(Verb(base, s3, past, ing, inanimate, animate))

    adverbs = []
    for _ in range(n_adverbs):
        (a,) = src.draw(lambda: src.source_stem() + "ly", lambda s: (s,))
        (t,) = tgt.draw(lambda: tgt.target_stem() + "amente", lambda s: (s,))
        adverbs.append(Adverb(a, t))

    return Lexicon(tuple(nouns), tuple(adjectives), tuple(verbs), tuple(adverbs), zipf)


# ----------------------------------------------------------------------------- structures

@dataclass(frozen=True)
class NP:
    noun: Noun
    plural: bool = False
    det: str = "the"          # a DETERMINERS/POSSESSIVES key, or "" (bare numeral)
    number: str | None = None  # a NUMBERS key (plural only)
    adjectives: tuple[Adjective, ...] = ()
    rel: Rel | None = None


@dataclass(frozen=True)
class Rel:
    """Subject relative clause: "that" VG NP; the verb agrees with the head noun."""
    verb: Verb
    tense: str
    obj: NP


@dataclass(frozen=True)
class PP:
    prep: str
    np: NP


@dataclass(frozen=True)
class Clause:
    subj: NP | str            # an NP or a PRONOUNS key
    verb: Verb
    tense: str
    obj: NP
    obj2: NP | None = None    # "and" NP
    pp: PP | None = None
    adverb: Adverb | None = None


# ----------------------------------------------------------------------------- rendering
# Each renderer appends its source words to ``src`` (in source order) and returns its target
# words as (word, index of the source word it translates), so the caller can reorder freely and
# the dictionary baseline can read off word alignments.

Aligned = list[tuple[str, int]]


def _render_verb(verb: Verb, tense: str, person: str, object_animate: bool, src: list[str]) -> Aligned:
    forms = verb.tgt_animate if (verb.tgt_animate is not None and object_animate) else verb.tgt
    if tense == "present":
        src.append(verb.src_3sg if person == "3sg" else verb.src)
        return [(forms.present[person], len(src) - 1)]
    if tense == "progressive":  # "is V-ing" -> one present-tense word; "is" has no counterpart
        src.append(BE[person])
        src.append(verb.src_ing)
        return [(forms.present[person], len(src) - 1)]
    if tense == "past":  # one source word -> participle + auxiliary
        src.append(verb.src_past)
        return [(forms.participle, len(src) - 1), (PAST_AUX[person], len(src) - 1)]
    if tense == "future":
        src.append("will")
        src.append(verb.src)
        return [(forms.infinitive, len(src) - 1), (FUTURE_AUX[person], len(src) - 2)]
    raise ValueError(f"unknown tense {tense!r}, not one of {TENSES}")


def _render_np(np: NP, src: list[str], prep: str | None = None, is_object: bool = False) -> Aligned:
    noun = np.noun
    slot = _slot(noun.gender, np.plural)
    out: Aligned = []
    article = None
    plain = fused = None
    if prep is not None:  # the preposition is rendered here so that it can fuse with the article
        src.append(prep)
        p = len(src) - 1
        plain, fused = PREPOSITIONS[prep]
        if prep == "with" and noun.animate:
            plain = WITH_ANIMATE
    elif is_object and noun.animate:
        # Animate direct objects take "a" (as in Spanish "veo a la mujer"). Besides being one
        # more thing to learn, it shows a noun's animacy on every object use, which is what
        # the context-dependent verbs need to be learnable. No source word: align to the NP.
        p = len(src)
        plain = fused = OBJECT_MARKER
    if plain is not None:
        if fused is not None and (np.det == "the" or np.det in POSSESSIVES):
            out += [(w, p) for w in fused[:-1]]
            article = fused[-1] + CONTRACTION_SUFFIX[slot]
        else:
            out += [(w, p) for w in plain]
    if np.det:
        src.append(np.det)
        d = len(src) - 1
        if np.det in POSSESSIVES:
            out.append((article or DEFINITE[slot], d))
            out.append((POSSESSIVES[np.det][slot], d))
        else:
            word = article or DETERMINERS[np.det][slot]
            if word is None:
                raise ValueError(f"determiner {np.det!r} does not go with plural={np.plural}")
            out.append((word, d))
    if np.number is not None:
        if not np.plural:
            raise ValueError("numerals go with plural nouns")
        src.append(np.number)
        out.append((NUMBERS[np.number], len(src) - 1))
    adj_at = []
    for adj in np.adjectives:
        src.append(adj.src)
        adj_at.append(len(src) - 1)
    src.extend(noun.src_pl if np.plural else noun.src)
    out.append((noun.tgt_pl if np.plural else noun.tgt, len(src) - 1))
    for adj, i in zip(reversed(np.adjectives), reversed(adj_at)):
        out.append((adj.forms[slot], i))
    if np.rel is not None:
        rel = np.rel
        src.append("that")
        out.append(("che", len(src) - 1))
        verb = _render_verb(rel.verb, rel.tense, "3pl" if np.plural else "3sg",
                            rel.obj.noun.animate, src)
        out += _render_np(rel.obj, src, is_object=True)
        out += verb
    return out


def render_aligned(clause: Clause) -> tuple[list[str], Aligned]:
    """Source words and target words, each target word with the index of its source word."""
    src: list[str] = []
    if isinstance(clause.subj, str):
        person = PRONOUNS[clause.subj]
        src.append(clause.subj)
        subj: Aligned = []  # pro-drop: the verb ending carries the person
    else:
        person = "3pl" if clause.subj.plural else "3sg"
        subj = _render_np(clause.subj, src)
    verb = _render_verb(clause.verb, clause.tense, person, clause.obj.noun.animate, src)
    obj = _render_np(clause.obj, src, is_object=True)
    if clause.obj2 is not None:
        src.append("and")
        obj.append(("e", len(src) - 1))
        obj += _render_np(clause.obj2, src, is_object=True)
    pp = _render_np(clause.pp.np, src, prep=clause.pp.prep) if clause.pp is not None else []
    adv: Aligned = []
    if clause.adverb is not None:
        src.append(clause.adverb.src)
        adv = [(clause.adverb.tgt, len(src) - 1)]
    src.append(".")
    return src, subj + obj + pp + adv + verb + [(".", len(src) - 1)]


def render(clause: Clause) -> tuple[str, str]:
    """(source sentence, target sentence) of a hand-built or sampled clause."""
    src, tgt = render_aligned(clause)
    return " ".join(src), " ".join(w for w, _ in tgt)


# ----------------------------------------------------------------------------- sampling

_SG_DETS = (("the", 0.50), ("a", 0.25), ("this", 0.10), ("my", 0.10), ("our", 0.05))
_PL_DETS = (("the", 0.35), ("some", 0.15), ("these", 0.10), ("my", 0.10), ("our", 0.05),
            ("", 0.10), ("the+num", 0.15))
_NUMBER_WORDS = tuple(NUMBERS)
_PREP_WORDS = tuple(PREPOSITIONS)


def _weighted(rng: random.Random, table):
    """A value from ``((value, probability), ...)``."""
    x = rng.random()
    for value, p in table:
        x -= p
        if x < 0:
            return value
    return table[-1][0]


def _sample_np(rng: random.Random, lex: Lexicon, rel_p: float = 0.0, max_adjectives: int = 2,
               nested_p: float = 0.0) -> NP:
    noun = lex.pick(rng, lex.nouns)
    plural = rng.random() < P_PLURAL
    number = None
    det = _weighted(rng, _PL_DETS if plural else _SG_DETS)
    if det in ("", "the+num"):
        det = det and "the"
        number = rng.choice(_NUMBER_WORDS)
    k = min(_weighted(rng, ADJECTIVE_COUNT_WEIGHTS), max_adjectives)
    adjectives = lex.pick_distinct(rng, lex.adjectives, k) if k else ()
    rel = None
    if rng.random() < rel_p:
        tense = rng.choice(("present", "progressive", "past"))
        rel = Rel(lex.pick(rng, lex.verbs), tense,
                  _sample_np(rng, lex, rel_p=nested_p, max_adjectives=1, nested_p=nested_p))
    return NP(noun, plural, det, number, adjectives, rel)


def sample_clause(rng: random.Random, lex: Lexicon, level: Level = STANDARD) -> Clause:
    """One random sentence structure (rendered, it may exceed ``level.max_source_words``: the
    caller draws again)."""
    rel_p, nested_p = level.p_relative, level.p_nested_relative
    if rng.random() < P_PRONOUN_SUBJECT:
        subj: NP | str = _weighted(rng, PRONOUN_WEIGHTS)
    else:
        subj = _sample_np(rng, lex, rel_p=rel_p, nested_p=nested_p)
    verb = lex.pick(rng, lex.verbs)
    tense = _weighted(rng, TENSE_WEIGHTS)
    obj = _sample_np(rng, lex, rel_p=rel_p, nested_p=nested_p)
    obj2 = None
    # No "and" after a relative clause, so "... that V the N and the N" has a single reading.
    if obj.rel is None and rng.random() < P_COORDINATION:
        obj2 = _sample_np(rng, lex, max_adjectives=1)
    pp = None
    if rng.random() < P_PP:
        pp = PP(rng.choice(_PREP_WORDS), _sample_np(rng, lex, max_adjectives=1))
    adverb = lex.pick(rng, lex.adverbs) if rng.random() < P_ADVERB else None
    return Clause(subj, verb, tense, obj, obj2, pp, adverb)


def _sample_split(rng: random.Random, lex: Lexicon, level: Level, n: int, seen: set[str],
                  out: list | None = None) -> list:
    pairs = []
    while len(pairs) < n:
        clause = sample_clause(rng, lex, level)
        src, tgt = render_aligned(clause)
        if len(src) > level.max_source_words:
            continue
        s = " ".join(src)
        if s in seen:
            continue
        seen.add(s)
        pairs.append((s, " ".join(w for w, _ in tgt)))
        if out is not None:
            out.append((src, tgt))
    return pairs


def generate_corpus(seed: int = 1234, n_train: int = 20000, n_valid: int = 1000,
                    n_test: int = 1000) -> dict[str, list[tuple[str, str]]]:
    """``{"train"|"validation"|"test": [(source, target), ...]}``, identical for identical args.

    Test is drawn first, then validation, then train, each from its own random stream and each
    skipping any source sentence drawn before, so held-out sources never occur in train and the
    held-out splits do not depend on ``n_train``.
    """
    return _generate(seed, n_train, n_valid, n_test)


def generate_hard_corpus(seed: int = 1234, n_train: int = 20000, n_valid: int = 1000,
                         n_test: int = 1000) -> dict[str, list[tuple[str, str]]]:
    """:func:`generate_corpus` at :data:`HARD` (``data=synthetic_hard``)."""
    return _generate(seed, n_train, n_valid, n_test, level=HARD)


def _generate(seed: int, n_train: int, n_valid: int, n_test: int, alignments: list | None = None,
              level: Level = STANDARD) -> dict:
    lex = lexicon(seed, level)
    seen: set[str] = set()
    corpus = {}
    for split, n in (("test", n_test), ("validation", n_valid), ("train", n_train)):
        rng = random.Random(f"lmlab-corpus:{seed}:{split}")
        corpus[split] = _sample_split(rng, lex, level, n, seen, alignments if split == "train" else None)
    return {split: corpus[split] for split in SPLITS}


# ----------------------------------------------------------------------------- baseline

# the training pairs of each level's data preset (conf/data/synthetic.yaml, synthetic_hard.yaml)
DEFAULT_N_TRAIN = {"standard": 20000, "hard": 40000}


@functools.lru_cache(maxsize=4)
def _dictionary(seed: int, level: str) -> tuple[tuple[str, str], ...]:
    aligned: list = []
    # exactly the default train split
    _generate(seed, DEFAULT_N_TRAIN[level], 1000, 1000, alignments=aligned, level=LEVELS[level])
    counts: dict[str, Counter] = {}
    for src, tgt in aligned:
        per_word: list[list[str]] = [[] for _ in src]
        for w, i in tgt:
            per_word[i].append(w)
        for s, ws in zip(src, per_word):
            counts.setdefault(s, Counter())[" ".join(ws)] += 1
    # Ties broken by the translation's text so the table never depends on insertion order.
    return tuple((s, min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]) for s, c in sorted(counts.items()))


def dictionary(seed: int = 1234, level: str = "standard") -> dict[str, str]:
    """The strongest word-for-word dictionary: each source word -> its most frequent translation.

    Read off the generator's own word alignments over the level's default training split (20k
    sentences, 40k at ``hard``).
    A translation may be several words ("my" -> "lo meo") or empty (subject pronouns are dropped).
    """
    return dict(_dictionary(seed, level))


def translate_word_for_word(sentence: str, table: dict[str, str]) -> str:
    """Replace each word by ``table[word]`` in place (unknown words copied, empty ones dropped)."""
    out = []
    for word in sentence.split():
        t = table.get(word, word)
        if t:
            out.append(t)
    return " ".join(out)


def dictionary_bleu(seed: int = 1234, n_test: int = 1000, level: str = "standard") -> dict:
    """sacreBLEU BLEU (13a) and chrF of the word-for-word baseline on the test split."""
    import sacrebleu

    test = _generate(seed, 0, 0, n_test, level=LEVELS[level])["test"]
    table = dictionary(seed, level)
    hyps = [translate_word_for_word(s, table) for s, _ in test]
    refs = [t for _, t in test]
    # force: the sentences end in a separate "." by design; sacrebleu would warn it looks tokenized.
    bleu = sacrebleu.metrics.BLEU(tokenize="13a", force=True)
    chrf = sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    return {"dictionary_bleu": round(b.score, 2), "dictionary_chrf": round(c.score, 2),
            "n_test": len(test), "bleu_signature": str(bleu.get_signature())}


LM_SENTENCES_PER_LINE = 3


def generate_lm_text(seed: int = 1234, n_train: int = 20000, n_valid: int = 1000,
                     n_test: int = 1000) -> dict[str, list[str]]:
    """The language-modelling text (``data=lm_text``): ``{"train"|"validation"|"test": [line]}``,
    each line ``LM_SENTENCES_PER_LINE`` source-language sentences of :func:`generate_corpus` with
    the same seed, so no sentence of a held-out line occurs in train."""
    k = LM_SENTENCES_PER_LINE
    pairs = generate_corpus(seed, n_train * k, n_valid * k, n_test * k)
    return {split: [" ".join(src for src, _ in rows[i:i + k]) for i in range(0, len(rows), k)]
            for split, rows in pairs.items()}


def generate_bilingual_text(seed: int = 1234, n_train: int = 20000, n_valid: int = 1000,
                            n_test: int = 1000) -> dict[str, list[str]]:
    """Text in both built-in languages (``data=lm_text_both``), for pre-training a model that is
    then fine-tuned to translate: each line ``LM_SENTENCES_PER_LINE`` sentences of one language,
    the source language on even lines and the target language on odd ones, every line from pairs
    of its own, so that no sentence occurs in the text with its translation (the text teaches
    each language, never the mapping between them)."""
    k = LM_SENTENCES_PER_LINE
    pairs = generate_corpus(seed, n_train * k, n_valid * k, n_test * k)
    return {split: [" ".join(pair[(i // k) % 2] for pair in rows[i:i + k]) for i in range(0, len(rows), k)]
            for split, rows in pairs.items()}
