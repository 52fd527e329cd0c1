"""``ImageSplit``: one split of a data set as its readers return it (no torch needed to read a data set's files)."""

from dataclasses import dataclass
from typing import List, Optional, Sequence

from .images import ImageSubset


@dataclass
class ImageSplit:
    """One split of a data set: images (PIL images, by index), their reference captions and their ids.

    ``sources`` names where each image is read from (a file path, or ``shard.tar:key``; default: its id), for the
    feature cache's record of what it encoded; ``missing`` counts listed images whose file is absent (already
    left out of the split).
    """

    name: str
    images: Sequence  # images[i] -> PIL.Image
    references: List[List[str]]
    ids: Optional[List[str]] = None  # the data set's own image ids (file names, COCO ids); default: "<index>"
    sources: Optional[List[str]] = None
    missing: int = 0

    def __post_init__(self):
        if self.ids is None:
            self.ids = [str(i) for i in range(len(self.references))]
        if self.sources is None:
            self.sources = self.ids
        if not len(self.ids) == len(self.sources) == len(self.references):
            raise ValueError(f"split '{self.name}': {len(self.ids)} ids for {len(self.references)} images")

    def __len__(self):
        return len(self.references)

    def subset(self, indices):
        """The split restricted to the images at ``indices`` (in that order)."""
        indices = list(indices)
        return ImageSplit(
            self.name,
            ImageSubset(self.images, indices),
            [self.references[i] for i in indices],
            [self.ids[i] for i in indices],
            [self.sources[i] for i in indices],
            self.missing,
        )
