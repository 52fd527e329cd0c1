"""Caption analysis: what kind of words the captions use (the paper's section 5)."""

import re

# Basic English colour terms; the paper's Table 7 finds DiscriTune's most associated adjectives are colours.
COLOUR_WORDS = frozenset(
    "red green blue yellow orange purple pink brown black white gray grey cyan magenta violet turquoise "
    "beige teal maroon navy gold silver colorful colourful".split()
)


def words(caption):
    """Lower-cased word tokens of a caption."""
    return re.findall(r"[a-z]+", caption.lower())


def colour_rate(captions):
    """Share of captions that name at least one colour."""
    if not captions:
        return 0.0
    return sum(any(word in COLOUR_WORDS for word in words(c)) for c in captions) / len(captions)


def mean_length(captions):
    """Mean number of words per caption."""
    return sum(len(words(c)) for c in captions) / max(1, len(captions))


# ---------------------------------------------------------------------------------------------------------------
# Local mutual information between lemmas and caption types (paper section 5, Tables 7 and 14).
# ---------------------------------------------------------------------------------------------------------------

POS_TAGS = {"adjectives": "ADJ", "nouns": "NOUN"}
# Without a tagger, function words are left out so that content lemmas remain (spaCy's POS filter does that).
STOP_WORDS = frozenset("a an the of on in at and or to for with is are was be by it its this that your from as".split())


def fallback_lemma(word):
    """A lower-cased word with a plural ``-s``/``-es`` stripped (no dictionary, no part of speech)."""
    if len(word) > 4 and word.endswith(("ses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


class Lemmatizer:
    """Lemmas (and parts of speech) of captions: spaCy's English pipeline when one is installed, else a
    fallback without part-of-speech tags (``self.note`` then says so)."""

    PIPELINES = ("en_core_web_sm", "en_core_web_md", "en_core_web_lg", "en_core_web_trf")

    def __init__(self):
        self.nlp, self.note = None, None
        try:
            import spacy

            for name in self.PIPELINES:
                try:
                    self.nlp = spacy.load(name, disable=["ner", "parser"])
                    break
                except OSError:
                    continue
        except ImportError:
            pass
        if self.nlp is None:
            self.note = (
                "no spaCy English pipeline is installed: lemmas are lower-cased words with plural -s stripped, "
                "and adjectives and nouns are not told apart (install spaCy and en_core_web_sm for the paper's "
                "analysis)"
            )

    @property
    def has_pos(self):
        return self.nlp is not None

    def __call__(self, captions):
        """One list of ``(lemma, pos)`` per caption; ``pos`` is None without spaCy."""
        if self.nlp is None:
            return [[(fallback_lemma(w), None) for w in words(c) if w not in STOP_WORDS] for c in captions]
        return [
            [(t.lemma_.lower(), t.pos_) for t in doc if t.is_alpha]
            for doc in self.nlp.pipe(captions, batch_size=256)
        ]


def local_mutual_information(counts):
    """LMI of every (lemma, caption type) pair (Evert 2005): ``O * log2(O / E)``, with ``O`` the pair's count,
    ``E = R * C / N`` its expected count from the lemma's total ``R``, the type's total ``C`` and the grand total
    ``N``.  ``counts`` is ``{type: {lemma: count}}``; returns ``{type: {lemma: lmi}}`` (pairs with ``O > 0``)."""
    import math

    lemma_totals, type_totals = {}, {}
    for kind, lemmas in counts.items():
        type_totals[kind] = sum(lemmas.values())
        for lemma, count in lemmas.items():
            lemma_totals[lemma] = lemma_totals.get(lemma, 0) + count
    total = sum(type_totals.values())
    return {
        kind: {
            lemma: count * math.log2(count * total / (lemma_totals[lemma] * type_totals[kind]))
            for lemma, count in lemmas.items()
            if count > 0
        }
        for kind, lemmas in counts.items()
    }


def lemma_counts(corpora, lemmatizer, pos=None):
    """``{type: {lemma: count}}`` over ``corpora`` (``{type: [caption, ...]}``), keeping only the spaCy ``pos``
    tag when given and the lemmatizer has tags."""
    from collections import Counter

    counts = {}
    for kind, captions in corpora.items():
        counts[kind] = Counter(
            lemma
            for tokens in lemmatizer(captions)
            for lemma, tag in tokens
            if pos is None or not lemmatizer.has_pos or tag == pos
        )
    return counts


def top_lemmas(corpora, lemmatizer=None, k=10):
    """The ``k`` lemmas most associated with each caption type by LMI, per part of speech (the paper's
    adjectives and nouns), or over all lemmas when no tagger is installed.

    Returns ``{"note": str|None, "tables": {"adjectives"|"nouns"|"lemmas": {type: [[lemma, lmi], ...]}}}``.
    """
    lemmatizer = lemmatizer or Lemmatizer()
    parts = POS_TAGS if lemmatizer.has_pos else {"lemmas": None}
    tables = {}
    for part, tag in parts.items():
        lmi = local_mutual_information(lemma_counts(corpora, lemmatizer, tag))
        tables[part] = {
            kind: [[lemma, round(value, 3)] for lemma, value in sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:k]]
            for kind, scores in lmi.items()
        }
    return {"note": lemmatizer.note, "tables": tables}
