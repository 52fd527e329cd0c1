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
