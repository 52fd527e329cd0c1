"""Baselines of the game's own, beside EGG's ``MeanBaseline`` and ``NoBaseline``: the greedy caption's cost
(self-critical) and the other rollouts of the same image (RLOO, GRPO's group mean).  Each has EGG's baseline
interface, ``update(loss)`` and ``predict(loss)``."""


class GreedyBaseline:
    """Self-critical baseline: the cost of the greedy caption of the same image, computed by the game per batch."""

    def __init__(self):
        self.cost = None

    def update(self, loss):
        """Nothing to accumulate: the baseline is recomputed for every batch."""

    def predict(self, loss):
        return self.cost


class GroupBaseline:
    """Each rollout's baseline from the other rollouts of its image (``rollouts_per_image`` K > 1; image i's are
    rows i*K ... i*K + K - 1): the mean cost of the other K - 1 (``leave_one_out``, RLOO / "new self-critical")
    or of all K (the group mean of GRPO).  Nothing is accumulated across batches."""

    def __init__(self, leave_one_out=True):
        self.leave_one_out = leave_one_out
        self.group_size = 2  # set by the game

    def update(self, loss):
        """Nothing to accumulate: the baseline comes from the batch itself."""

    def predict(self, loss):
        groups = loss.view(-1, self.group_size)  # [B, K]
        if self.leave_one_out:
            baseline = (groups.sum(1, keepdim=True) - groups) / (self.group_size - 1)
        else:
            baseline = groups.mean(1, keepdim=True).expand_as(groups)
        return baseline.reshape(-1)  # [B * K]
