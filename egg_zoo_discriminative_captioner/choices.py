"""The names the command line offers, importable without torch (so that ``--help`` answers at once).

The modules that implement them import them from here; the registries of captioners, retrievers and data sets
live in their packages (``captioners/__init__.py``, ...), which load an implementation only when it is chosen.
"""

REWARDS = ("logprob", "accuracy", "cosine")
BASELINES = ("mean", "none", "greedy", "rloo", "group")
GROUP_BASELINES = ("rloo", "group")  # need --rollouts_per_image > 1
PRECISIONS = ("fp32", "fp16", "bf16")
CLIPCAP_MAPPING_TYPES = ("mlp", "transformer")
ROLLOUTS = ("sample", "greedy", "beam")  # --rollouts: how training captions are drawn
DECODERS = ("auto", "static", "compiled", "generate")  # --decoder: what decodes them (captioners/static_decoding.py)
KL_REFERENCES = ("captioner", "language_model")
KL_ESTIMATORS = ("sampled", "exact")
LOG_PROB_NORMALIZATIONS = ("sum", "mean")
BLIP_PROMPT = "a picture of"  # LAVIS's BLIP captioning prompt
