"""EGG's common options (``egg.core.init``) and what they mean in this game; importable without torch.

``add_common_options`` (the bundled core's) adds upstream EGG's options with their exact names, types and defaults
(as upstream's ``egg/core/util.py`` defines them).  The bundled core's ``init`` adds them with it, and every
command adds them with it for its first, torch-free parse (``--help`` and bad options end there, in well under a
second); the run's own parse then goes through the active core's ``init``, upstream EGG's where it is installed.
"""

import argparse

from ..egg_compat.options import add_common_options  # noqa: F401 (upstream's options, without torch)

EGG_OPTIMIZERS = ("adam", "sgd", "adagrad")

# EGG's common options, which a game file may set as well.
EGG_OPTIONS = {
    "random_seed", "checkpoint_dir", "preemptable", "checkpoint_freq", "validation_freq", "n_epochs",
    "load_from_checkpoint", "no_cuda", "batch_size", "optimizer", "lr", "update_freq", "vocab_size", "max_len",
    "tensorboard", "tensorboard_dir", "distributed_port", "fp16",
}  # fmt: skip

# The plugin's values for EGG's options: the paper's (Adam at a constant 1e-7, batches of 100, captions of at
# most 40 tokens, 2 epochs as for Conceptual Captions), and a checkpoint every epoch.
PLUGIN_DEFAULTS = {
    "n_epochs": 2, "batch_size": 100, "optimizer": "adam", "lr": 1e-7, "max_len": 40, "checkpoint_freq": 1,
}  # fmt: skip

# What EGG's options mean in this game (train's wording; other commands override some in ``option_groups``).
# vocab_size is not used (captions use the captioner's tokenizer), so --help leaves it out.
EGG_HELP = {
    "random_seed": "seed of the run: model sampling, and each epoch's data order with the epoch number "
    "(unset: drawn at random and saved in opts.json)",
    "checkpoint_dir": "where checkpoints, opts.json and the finetuned captioner are written ('' for nowhere)",
    "preemptable": "resume from the newest checkpoint in --checkpoint_dir if there is one (for jobs that get "
    "preempted and requeued)",
    "checkpoint_freq": "write <epoch>.tar every k epochs (0: only final.tar)",
    "validation_freq": "validate every k epochs (0: never, not even before the first update)",
    "n_epochs": "epochs to train (in all, counting those of a resumed checkpoint)",
    "load_from_checkpoint": "resume from this checkpoint (.tar): parameters, optimizer, baseline, data order "
    "position and random state",
    "no_cuda": "run on the CPU even where CUDA is available",
    "batch_size": "images per training batch: each target with the other B - 1 as distractors",
    "optimizer": f"optimizer, one of {', '.join(EGG_OPTIMIZERS)} (constant learning rate)",
    "lr": "learning rate",
    "update_freq": "accumulate gradients over k batches per optimizer update",
    "vocab_size": argparse.SUPPRESS,
    "max_len": "maximum caption length in tokens (captions also stop at '.' or the end-of-text token)",
    "tensorboard": "log to TensorBoard (facebookresearch EGG only)",
    "tensorboard_dir": "TensorBoard log directory",
    "distributed_port": "port for SLURM-launched distributed runs (facebookresearch EGG)",
    "fp16": "mixed precision (CUDA autocast) for the game; the retriever's scores stay fp32",
}
