"""The names the command line offers, importable without torch (so that ``--help`` answers at once).

The modules that implement them import them from here; the registries of captioners, retrievers and data sets
live in their packages (``captioners/__init__.py``, ...), which load an implementation only when it is chosen.
"""

REWARDS = ("logprob", "accuracy", "cosine")
BASELINES = ("mean", "none", "greedy", "rloo", "group")
GROUP_BASELINES = ("rloo", "group")  # need --rollouts_per_image > 1
PRECISIONS = ("fp32", "fp16", "bf16")
CLIPCAP_MAPPING_TYPES = ("mlp", "transformer")
DECODINGS = ("auto", "static", "compiled", "generate")  # --decoding (captioners/static_decoding.py)
BLIP_PROMPT = "a picture of"  # LAVIS's BLIP captioning prompt
