"""Caption tables: a few images with the captions the captioner gives them, as the trackers and the run directory
show them.

A training table (every ``--log_captions_every`` updates) holds the first images of the step's batch, each with
its sampled captions (``--rollouts_per_image``), each caption's reward and advantage, the image the retriever
ranked first for it and the target's rank (1: the retriever picked the target).  A validation table holds the
greedy captions of a fixed set of validation images, so that the same images' captions can be followed epoch
after epoch.  Both are also written to ``RUN/captions/epoch_<e>.jsonl``, thumbnails aside.
"""

import json
import os
from dataclasses import dataclass, field
from typing import List

import torch

THUMBNAIL = 96  # pixels on the longer side: enough to recognise an image in a table row


@dataclass
class CaptionTable:
    """Rows of cells (text, numbers, or PIL images for the ``image_columns``) under ``columns``."""

    columns: List[str]
    rows: List[list] = field(default_factory=list)
    image_columns: tuple = ()

    def records(self):
        """The rows as dictionaries without their images (what the run directory keeps)."""
        kept = [i for i, name in enumerate(self.columns) if name not in self.image_columns]
        return [{self.columns[i]: row[i] for i in kept} for row in self.rows]

    def markdown(self):
        """The table without its images, as a markdown table (TensorBoard's text)."""
        records = self.records()
        if not records:
            return ""
        names = list(records[0])
        lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        for record in records:
            lines.append("| " + " | ".join(_cell(record[name]) for name in names) + " |")
        return "\n".join(lines)

    def images(self, column):
        """The PIL images of ``column``, one per row (None where a row has none)."""
        return [row[self.columns.index(column)] for row in self.rows]


def _cell(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def thumbnail(images, index):
    """Image ``index`` of a split's images as a small RGB PIL image, or None when it cannot be read."""
    if index is None:
        return None
    try:
        image = images[index].convert("RGB")
    except (OSError, ValueError):
        return None
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    return image


TRAINING_COLUMNS = ["image", "image_id", "caption", "reward", "advantage", "ranked_first", "ranked_first_id",
                    "target_rank"]  # fmt: skip
VALIDATION_COLUMNS = ["image", "image_id", "caption", "reference"]


def training_table(step, split, n_images, per_image, with_images=True):
    """The caption table of a training step (``step``: the game's ``last_rollouts``): its first ``n_images``
    images, each with its ``per_image`` captions; None when the batch does not say which images it holds.
    ``with_images``: thumbnails of the target and of the image ranked first (else no image is read)."""
    if not step.aux_input or "image_index" not in step.aux_input:
        return None
    table = CaptionTable(TRAINING_COLUMNS, image_columns=("image", "ranked_first"))
    scores = step.scores.float()
    labels = step.labels
    target = scores.gather(1, labels.view(-1, 1))  # [N, 1]
    ranks = (scores > target).sum(dim=1) + 1  # [N]: 1 when no candidate scores above the target
    first = scores.argmax(dim=1)  # [N]
    image_index = step.aux_input["image_index"]  # [N]

    def picture(index):
        return thumbnail(split.images, index) if with_images else None

    for row in range(min(len(step.text), n_images * per_image)):
        target_index = int(image_index[row])
        ranked = candidate_image(step, row, int(first[row]))
        table.rows.append([
            picture(target_index), split.ids[target_index], step.text[row],
            float(step.reward[row]), float(step.advantage[row]), picture(ranked),
            split.ids[ranked] if ranked is not None else "(another process's image)", int(ranks[row]),
        ])  # fmt: skip
    return table


def candidate_image(step, row, column):
    """The split index of the image in column ``column`` of caption ``row``'s scores, None when it is not known
    here (another process's image in a data-parallel run).

    The columns are the batch's images (this process's first: ``candidate_index``), then, with hard distractors,
    the caption's own ``neighbour_index``."""
    aux = step.aux_input or {}
    neighbours = aux.get("neighbour_index")
    k = 0 if neighbours is None else neighbours.shape[1]
    n_batch = step.scores.shape[1] - k
    if column >= n_batch:
        return int(neighbours[row, column - n_batch])
    candidates = aux.get("candidate_index")  # [B] this process's images, first among the columns
    if candidates is None or column >= len(candidates):
        return None
    return int(candidates[column])


def validation_table(split, indices, captions, with_images=True):
    """The greedy ``captions`` of the validation images at ``indices`` (with each one's first reference, and its
    thumbnail ``with_images``)."""
    table = CaptionTable(VALIDATION_COLUMNS, image_columns=("image",))
    for index, caption in zip(indices, captions):
        references = split.references[index]
        image = thumbnail(split.images, index) if with_images else None
        table.rows.append([image, split.ids[index], caption,
                           references[0] if references else ""])  # fmt: skip
    return table


def fixed_images(n_images, size):
    """The validation images every validation table shows: ``n_images`` spread evenly over the split."""
    n = min(n_images, size)
    return sorted({int(i) for i in torch.linspace(0, size - 1, n).round().tolist()}) if n else []


def append_records(directory, caption_table, fields):
    """Appends the table's rows, each with ``fields`` (its ``epoch`` among them), to
    ``directory/epoch_<epoch>.jsonl``."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"epoch_{fields['epoch']}.jsonl"), "a") as f:
        for record in caption_table.records():
            f.write(json.dumps({**fields, **record}) + "\n")
