"""DiscriTune's reward for other reinforcement-learning trainers.

``DiscriminativeReward`` is a reward function of TRL's ``GRPOTrainer`` and ``RLOOTrainer`` (``reward_funcs=[...]``):
each call scores every completion against the call's distinct images with the game's own receiver and loss, so its
rewards are the game's.  ``verl_reward`` wraps it in verl's batch reward interface.  Nothing here imports TRL or
verl; the classes load on first use (PEP 562), so importing the package costs nothing.
"""

from ..runtime.lazy import exports

_EXPORTS = {"DiscriminativeReward": ".discriminative", "Distractors": ".distractors", "verl_reward": ".verl"}

__getattr__ = exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
