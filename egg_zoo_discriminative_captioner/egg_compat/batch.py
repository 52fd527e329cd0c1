"""The batch container the Trainer hands to the game, compatible with ``egg.core.batch``."""

from typing import Any, Dict, Iterator, Optional

import torch

from .util import move_to


class Batch:
    """The four game inputs in EGG's positional order: sender_input, labels, receiver_input, aux_input."""

    def __init__(
        self,
        sender_input: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        receiver_input: Optional[torch.Tensor] = None,
        aux_input: Optional[Dict[Any, Any]] = None,
    ):
        self.sender_input = sender_input
        self.labels = labels
        self.receiver_input = receiver_input
        self.aux_input = aux_input

    def _fields(self) -> tuple:
        return self.sender_input, self.labels, self.receiver_input, self.aux_input

    def __getitem__(self, idx: int) -> Any:
        """The idx-th input; only 0..3 are valid (no negative indices, as upstream)."""
        if not isinstance(idx, int) or not 0 <= idx < 4:
            raise IndexError("Trying to access a wrong index in the batch")
        return self._fields()[idx]

    def __iter__(self) -> Iterator[Any]:
        """Iterate in the order the game's ``forward`` takes them, so ``game(*batch)`` works."""
        return iter(self._fields())

    def to(self, device: torch.device) -> "Batch":
        """Move every (nested) tensor to ``device`` in place and return this batch, as upstream does."""
        self.sender_input = move_to(self.sender_input, device)
        self.labels = move_to(self.labels, device)
        self.receiver_input = move_to(self.receiver_input, device)
        self.aux_input = move_to(self.aux_input, device)
        return self
