"""REINFORCE baselines, compatible with ``egg.core.baselines``."""

from abc import ABC, abstractmethod

import torch


class Baseline(ABC):
    """A control variate subtracted from the loss before it weights the log-probabilities."""

    @abstractmethod
    def update(self, loss: torch.Tensor) -> None:
        """Observe a batch of losses."""

    @abstractmethod
    def predict(self, loss: torch.Tensor) -> torch.Tensor:
        """The baseline for a batch of losses."""


class NoBaseline(Baseline):
    """A constant zero baseline."""

    def update(self, loss: torch.Tensor) -> None:
        """Nothing to learn."""

    def predict(self, loss: torch.Tensor) -> torch.Tensor:
        """Zero, shape (1,), on the loss device."""
        return torch.zeros(1, device=loss.device)


class MeanBaseline(Baseline):
    """Running arithmetic mean of batch-mean losses; every batch weighs the same, whatever its size."""

    def __init__(self):
        self.mean_baseline = torch.zeros(1)
        self.n_points = 0.0

    def update(self, loss: torch.Tensor) -> None:
        """Fold the batch mean of ``loss`` into the running mean."""
        self.n_points += 1
        self.mean_baseline = self.mean_baseline.to(loss.device)
        # Out of place: a tensor returned by an earlier predict() (e.g. logged in aux) keeps its value.
        self.mean_baseline = self.mean_baseline + (loss.detach().mean().item() - self.mean_baseline) / self.n_points

    def predict(self, loss: torch.Tensor) -> torch.Tensor:
        """The running mean, shape (1,), on the loss device; 0 before any update."""
        self.mean_baseline = self.mean_baseline.to(loss.device)
        return self.mean_baseline


class BuiltInBaseline(Baseline):
    """Leave-one-out baseline: each sample's baseline is the mean loss of the other samples in its batch."""

    def update(self, loss: torch.Tensor) -> None:
        """Nothing to learn: the baseline comes from the batch itself."""

    def predict(self, loss: torch.Tensor) -> torch.Tensor:
        """``(sum - loss_i) / (B - 1)`` per sample; the loss itself when there is no other sample."""
        if loss.dim() == 0 or loss.size(0) <= 1:
            return loss
        batch_size = loss.size(0)
        detached = loss.detach()
        return (detached.mean() * batch_size - detached) / (batch_size - 1.0)
