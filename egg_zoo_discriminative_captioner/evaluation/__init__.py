"""Evaluation: retrieval P@1 among candidates, and caption analysis."""

from .analysis import COLOUR_WORDS, colour_rate, mean_length
from .retrieval import generate_captions, retrieval_accuracy

__all__ = ["COLOUR_WORDS", "colour_rate", "generate_captions", "mean_length", "retrieval_accuracy"]
