"""Per-batch logs of a game and what to keep in them, compatible with ``egg.core.interaction``."""

from dataclasses import dataclass, fields
from typing import Dict, Iterable, List, Optional

import torch
import torch.distributed as dist

from .distributed import gather_tensor

# The fields that hold one tensor each, in the order upstream uses to find an interaction's size.
_SIZED_FIELDS = ("sender_input", "receiver_input", "labels", "message", "receiver_output", "message_length")
_MIXED_LOGS = "Appending empty and non-empty interactions logs. Normally this shouldn't happen!"


def _cat_or_none(values: List[Optional[torch.Tensor]]) -> Optional[torch.Tensor]:
    """Concatenate along the batch dimension; None when every value is None, an error when only some are."""
    present = [value is not None for value in values]
    if not any(present):
        return None
    if not all(present):
        raise RuntimeError(_MIXED_LOGS)
    return torch.cat(values, dim=0)


def _gather_or_none(value: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Every rank's ``value`` concatenated along the batch dimension, on the CPU; None stays None."""
    return None if value is None else gather_tensor(value).cpu()


@dataclass
class LoggingStrategy:
    """Which inputs and outputs a game keeps in its Interaction; ``aux`` is always kept."""

    store_sender_input: bool = True
    store_receiver_input: bool = True
    store_labels: bool = True
    store_aux_input: bool = True
    store_message: bool = True
    store_receiver_output: bool = True
    store_message_length: bool = True

    def filtered_interaction(
        self,
        sender_input: Optional[torch.Tensor],
        receiver_input: Optional[torch.Tensor],
        labels: Optional[torch.Tensor],
        aux_input: Optional[Dict[str, torch.Tensor]],
        message: Optional[torch.Tensor],
        receiver_output: Optional[torch.Tensor],
        message_length: Optional[torch.Tensor],
        aux: Dict[str, torch.Tensor],
    ) -> "Interaction":
        """Build an Interaction with every field this strategy does not store set to None."""
        return Interaction(
            sender_input=sender_input if self.store_sender_input else None,
            receiver_input=receiver_input if self.store_receiver_input else None,
            labels=labels if self.store_labels else None,
            aux_input=aux_input if self.store_aux_input else None,
            message=message if self.store_message else None,
            receiver_output=receiver_output if self.store_receiver_output else None,
            message_length=message_length if self.store_message_length else None,
            aux=aux,
        )

    @classmethod
    def minimal(cls) -> "LoggingStrategy":
        """Store nothing but ``aux``."""
        return cls(**{field.name: False for field in fields(cls)})

    @classmethod
    def maximal(cls) -> "LoggingStrategy":
        """Store everything."""
        return cls()


@dataclass
class Interaction:
    """What one batch of a game saw and produced; the field order is upstream's positional order."""

    # incoming data
    sender_input: Optional[torch.Tensor]
    receiver_input: Optional[torch.Tensor]
    labels: Optional[torch.Tensor]
    aux_input: Optional[Dict[str, torch.Tensor]]
    # what the agents produce
    message: Optional[torch.Tensor]
    receiver_output: Optional[torch.Tensor]
    # auxiliary info
    message_length: Optional[torch.Tensor]
    aux: Dict[str, torch.Tensor]

    @property
    def size(self) -> int:
        """Batch size, read from the first stored tensor field (``aux`` does not count)."""
        for name in _SIZED_FIELDS:
            value = getattr(self, name)
            if value is not None:
                return value.size(0)
        raise RuntimeError("Cannot determine interaction log size; it is empty.")

    def to(self, *args, **kwargs) -> "Interaction":
        """Move every tensor (including those in ``aux_input`` and ``aux``) and return this Interaction."""

        def _to(value):
            return value.to(*args, **kwargs) if torch.is_tensor(value) else value

        for name in _SIZED_FIELDS:
            setattr(self, name, _to(getattr(self, name)))
        if self.aux_input:
            self.aux_input = {key: _to(value) for key, value in self.aux_input.items()}
        if self.aux:
            self.aux = {key: _to(value) for key, value in self.aux.items()}
        return self

    def _is_empty(self) -> bool:
        """True for what ``Interaction.empty()`` builds: nothing logged at all."""
        return all(getattr(self, name) is None for name in _SIZED_FIELDS) and self.aux_input == {} and self.aux == {}

    @staticmethod
    def from_iterable(interactions: Iterable["Interaction"]) -> "Interaction":
        """Concatenate per-batch interactions along the batch dimension.

        Empty interactions are skipped.  Every interaction must log the same fields and the same number of
        ``aux`` / ``aux_input`` keys.
        """
        interactions = [x for x in interactions if not x._is_empty()]
        if not interactions:
            print("No interactions to concatenate, be sure to set the logging strategy properly.")
            return Interaction.empty()

        first = interactions[0]
        has_aux_input = first.aux_input is not None
        # AssertionError, not ValueError, so callers catch the same exception type as with upstream EGG.
        for x in interactions:
            if len(x.aux) != len(first.aux):
                raise AssertionError("found two interactions with a different number of aux keys")
            if has_aux_input and len(x.aux_input) != len(first.aux_input):
                raise AssertionError("found two interactions of different aux_info size")
            if not has_aux_input and x.aux_input:
                raise AssertionError("some aux_info are defined some are not, this should not happen")

        aux_input = None
        if has_aux_input:
            aux_input = {key: _cat_or_none([x.aux_input[key] for x in interactions]) for key in first.aux_input}
        aux = {key: _cat_or_none([x.aux[key] for x in interactions]) for key in first.aux}
        return Interaction(
            aux_input=aux_input,
            aux=aux,
            **{name: _cat_or_none([getattr(x, name) for x in interactions]) for name in _SIZED_FIELDS},
        )

    @staticmethod
    def empty() -> "Interaction":
        """An Interaction with nothing logged."""
        return Interaction(None, None, None, {}, None, None, None, {})

    @staticmethod
    def gather_distributed_interactions(log: "Interaction") -> "Interaction":
        """Every rank's ``log`` concatenated in rank order (each rank must log the same shapes)."""
        if not dist.is_initialized():
            raise RuntimeError("torch.distributed must be initialized beforehand")

        def _gather(values):
            return None if values is None else {key: _gather_or_none(value) for key, value in values.items()}

        return Interaction(
            aux_input=_gather(log.aux_input),
            aux=_gather(log.aux),
            **{name: _gather_or_none(getattr(log, name)) for name in _SIZED_FIELDS},
        )

    def __add__(self, other: "Interaction") -> "Interaction":
        """Concatenate two interactions; unlike ``from_iterable``, their dict keys may differ."""

        def _merge(left, right):
            # A missing dict counts as an empty one; upstream would fail on None here.
            if left is None and right is None:
                return None
            merged = dict(left or {})
            for key, value in (right or {}).items():
                merged[key] = torch.cat((merged[key], value)) if key in merged else value
            return merged

        return Interaction(
            aux_input=_merge(self.aux_input, other.aux_input),
            aux=_merge(self.aux, other.aux),
            **{name: _cat_or_none([getattr(self, name), getattr(other, name)]) for name in _SIZED_FIELDS},
        )
