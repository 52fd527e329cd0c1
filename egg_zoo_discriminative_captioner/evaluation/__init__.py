"""Evaluation: retrieval P@1 (random and hard distractors), reference-based caption metrics, caption analysis
and plots."""

from .analysis import COLOUR_WORDS, colour_rate, local_mutual_information, mean_length, top_lemmas
from .retrieval import PROTOCOL, encode_captions, generate_captions, precision_at_1, retrieval_accuracy

__all__ = [
    "COLOUR_WORDS",
    "PROTOCOL",
    "colour_rate",
    "encode_captions",
    "generate_captions",
    "local_mutual_information",
    "mean_length",
    "precision_at_1",
    "retrieval_accuracy",
    "top_lemmas",
]
