"""Sharing a finetuned captioner: model cards, pushing to the Hub (against a stand-in for it), reading it back."""
