"""Early stopping on a logged metric, compatible with ``egg.core.early_stopping``."""

from typing import List, Tuple

from .callbacks import Callback
from .interaction import Interaction


class EarlyStopper(Callback):
    """Keeps each epoch's (loss, logs), of validation or of training, and sets ``trainer.should_stop``."""

    def __init__(self, validation: bool = True):
        self.train_stats: List[Tuple[float, Interaction]] = []
        self.validation_stats: List[Tuple[float, Interaction]] = []
        self.epoch = 0
        self.validation = validation

    def on_epoch_end(self, loss: float, logs: Interaction, epoch: int):
        """On training statistics: record them and decide."""
        if self.validation:
            return
        self.epoch = epoch
        self.train_stats.append((loss, logs))
        self.trainer.should_stop = self.should_stop()

    def on_validation_end(self, loss: float, logs: Interaction, epoch: int):
        """On validation statistics: record them and decide."""
        if not self.validation:
            return
        self.validation_stats.append((loss, logs))
        self.trainer.should_stop = self.should_stop()

    def should_stop(self) -> bool:
        """Whether training should stop now."""
        raise NotImplementedError()


class EarlyStopperAccuracy(EarlyStopper):
    """Stops once the epoch mean of ``aux[field_name]`` reaches ``threshold`` (on validation by default)."""

    def __init__(self, threshold: float, field_name: str = "acc", validation: bool = True):
        super().__init__(validation)
        self.threshold = threshold
        self.field_name = field_name

    def should_stop(self) -> bool:
        """The last recorded epoch's mean metric is at least the threshold."""
        stats = self.validation_stats if self.validation else self.train_stats
        if not stats:
            raise RuntimeError(f"EarlyStopperAccuracy: no {'validation' if self.validation else 'training'} logs yet")
        _, logs = stats[-1]
        return bool(logs.aux[self.field_name].mean() >= self.threshold)
