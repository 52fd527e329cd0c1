"""The reward in verl's batch reward interface (``reward_model.reward_manager=batch``).

verl's ``BatchRewardManager`` calls ``compute_score(data_sources, solution_strs, ground_truths, extra_infos,
**reward_kwargs)`` once per training batch.  It does not hand over the batch's images (its ``multi_modal_data``
stays in the batch), but it hands over each row's ``extra_info``, a dictionary column of the data set: the image
travels there, as a file path or as the ``{"bytes": ...}`` of a ``datasets.Image``.  verl repeats each prompt's
``rollout.n`` responses one after another, as TRL does, so a row's responses share one target.
"""

from ..runtime.errors import UsageError
from .calls import read_call
from .discriminative import DiscriminativeReward


def verl_reward(reward_function=None, image_key="image", **options):
    """A verl batch ``compute_score`` over ``DiscriminativeReward(**options)`` (or a built ``reward_function``),
    reading each response's image from ``extra_info[image_key]``; it returns one ``{"score": reward, "p_at_1":
    hit}`` per response (verl logs the extra keys).  In a file named by ``custom_reward_function.path``::

        compute_score = verl_reward(retriever="ViT-B/32")
    """
    reward = reward_function if reward_function is not None else DiscriminativeReward(**options)

    def compute_score(data_sources=None, solution_strs=None, ground_truths=None, extra_infos=None, **kwargs):
        if solution_strs is None or extra_infos is None:
            raise UsageError("verl's batch reward manager passes solution_strs and extra_infos")
        missing = [i for i, info in enumerate(extra_infos) if not isinstance(info, dict) or image_key not in info]
        if missing:
            raise UsageError(f"the reward reads each response's image from extra_info[{image_key!r}] of the data "
                             f"set, which {len(missing)} of {len(extra_infos)} rows lack (the first: row "
                             f"{missing[0]})")  # fmt: skip
        call = read_call(list(solution_strs), [info[image_key] for info in extra_infos])
        rewards, hits = reward.score(call.texts, call.images, call.targets)
        return [{"score": float(r), "p_at_1": float(h)} for r, h in zip(rewards, hits[0])]

    compute_score.reward = reward
    return compute_score
