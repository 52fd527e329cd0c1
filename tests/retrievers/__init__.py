"""The retrievers: each backend, several rewarding one captioner, and evaluation under other retrievers."""
