"""Evaluation: retrieval P@1 (random and hard distractors), reference-based caption metrics, caption analysis
and plots; ``pipeline.py`` runs them for ``evaluate``.  Modules load on first use (``--help`` needs no torch)."""
