"""The one place that decides which EGG core the plugin runs on.

facebookresearch EGG is used whenever ``egg.core`` imports.  Otherwise the plugin falls back to ``egg_compat``,
its own small core with the same names, signatures, console output and checkpoint files for exactly the parts
the plugin uses.  Every other module imports EGG through here (``from .core import core``), so nothing else
knows which core is active.
"""

import importlib.util
import logging
import warnings

import torch

try:
    from egg import core
    from egg.core.baselines import MeanBaseline, NoBaseline
    from egg.core.callbacks import Checkpoint

    USING_EGG = True
except ImportError as error:  # EGG absent, or present without its import-time dependencies (wandb, rich)
    if importlib.util.find_spec("egg.core") is not None:
        warnings.warn(
            f"egg.core is installed but does not import ({error}); using the bundled EGG-compatible core", stacklevel=2
        )
    from . import egg_compat as core
    from .egg_compat.baselines import MeanBaseline, NoBaseline
    from .egg_compat.callbacks import Checkpoint

    USING_EGG = False

from .egg_compat.callbacks import Checkpoint as CompatCheckpoint  # noqa: E402

# torch >= 2.6 loads with weights_only=True, which refuses EGG's Checkpoint NamedTuple unless it is allowed.
# Both cores' classes are allowed, so a checkpoint written on either core loads on the other; without EGG, a file
# that names egg.core's class is read into the bundled one (same fields), where torch can map names (>= 2.5).
torch.serialization.add_safe_globals([Checkpoint, CompatCheckpoint])
if not USING_EGG and tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 5):
    torch.serialization.add_safe_globals([(CompatCheckpoint, "egg.core.callbacks.Checkpoint")])

logging.getLogger(__name__).debug("EGG core: %s", "facebookresearch EGG" if USING_EGG else "bundled egg_compat")

__all__ = ["core", "Checkpoint", "MeanBaseline", "NoBaseline", "USING_EGG"]
