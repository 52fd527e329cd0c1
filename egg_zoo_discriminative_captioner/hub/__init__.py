"""Sharing a finetuned captioner: model cards and the Hugging Face Hub.

Every finished run writes a model card (``RUN/README.md``, and the same card in a transformers captioner's folder)
with its base captioner, data set, method, options and final test metrics as a model-index (``card.py``).
``train --push_to_hub REPO_ID``, or ``python -m egg.zoo.discriminative_captioner.hub RUN_DIR REPO_ID`` for a
finished run, uploads what makes the captioner loadable, with its card (``push.py``); ``evaluate --models
hf:REPO_ID`` and ``caption --model hf:REPO_ID`` read it back (``layout.py``).  Nothing here imports torch.
"""
