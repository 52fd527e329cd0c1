"""Reading a stimuli directory (``discritune-stimuli/1``, written by ``evaluate`` for hard-distractor sets).

The format is described in docs/study.md: ``DIR/stimuli.json`` lists sets of 10 images (paths relative to DIR, in
a fixed order), the index of the target and one caption per condition, optionally with the retriever's
caption-image cosine per image.  Everything is checked here, so that a bad directory ends with one line.
"""

import json
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

from ..runtime.errors import UsageError

FORMAT = "discritune-stimuli/1"
N_IMAGES = 10


@dataclass
class StimulusSet:
    """One target with its 9 distractors (``images`` are absolute paths, in the stimuli's fixed order)."""

    set_id: str
    images: List[str]
    image_ids: List[str]
    target: int
    captions: Dict[str, str]
    retriever_scores: Optional[Dict[str, List[float]]] = None


@dataclass
class Stimuli:
    directory: str
    conditions: List[str]
    sets: List[StimulusSet]
    meta: dict  # dataset, split, source


def read_json(path, expected_format, hint):
    """A JSON object whose ``"format"`` is ``expected_format``; ``hint`` says what to do if the file is missing."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"{path} not found: {hint}") from None
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {path} ({error})") from None
    if not isinstance(data, dict) or data.get("format") != expected_format:
        raise UsageError(f"{path}: expected \"format\": \"{expected_format}\"")
    return data


def read_stimuli(directory):
    """The stimuli of ``directory``; raises a UsageError naming the first problem found."""
    path = os.path.join(directory, "stimuli.json")
    data = read_json(path, FORMAT, "pass a directory written by evaluate's stimuli export")
    conditions = data.get("conditions")
    if not _is_list_of(conditions, str) or not conditions or len(set(conditions)) != len(conditions):
        raise UsageError(f"{path}: \"conditions\" must be a non-empty list of distinct names")
    if not isinstance(data.get("sets"), list) or not data["sets"]:
        raise UsageError(f"{path}: \"sets\" must be a non-empty list")
    sets, seen = [], set()
    for number, entry in enumerate(data["sets"]):
        stimulus = _read_set(entry, number, conditions, directory, path)
        if stimulus.set_id in seen:
            raise UsageError(f"{path}: set id {stimulus.set_id!r} appears twice")
        seen.add(stimulus.set_id)
        sets.append(stimulus)
    meta = {key: data.get(key) for key in ("dataset", "split", "source")}
    return Stimuli(os.path.abspath(directory), list(conditions), sets, meta)


def _is_list_of(value, kind, length=None):
    return (
        isinstance(value, list)
        and all(isinstance(item, kind) and not isinstance(item, bool) for item in value)
        and (length is None or len(value) == length)
    )


def _read_set(entry, number, conditions, directory, path):
    where = f"{path}: set {number}"
    if not isinstance(entry, dict) or not isinstance(entry.get("set_id"), str) or not entry["set_id"]:
        raise UsageError(f"{where} has no \"set_id\"")
    where = f"{path}: set {entry['set_id']!r}"
    images = entry.get("images")
    if not _is_list_of(images, str, N_IMAGES):
        raise UsageError(f"{where}: \"images\" must list {N_IMAGES} paths")
    files = []
    root = os.path.abspath(directory)
    for image in images:
        file = os.path.normpath(os.path.join(root, image))  # lexical: images/ may be a link to elsewhere
        if os.path.isabs(image) or os.path.commonpath([root, file]) != root:
            raise UsageError(f"{where}: image path {image!r} is not inside {directory}")
        if not os.path.isfile(file):
            raise UsageError(f"{where}: image {image!r} not found")
        files.append(file)
    image_ids = entry.get("image_ids", [os.path.basename(image) for image in images])
    if not _is_list_of(image_ids, str, N_IMAGES):
        raise UsageError(f"{where}: \"image_ids\" must list {N_IMAGES} ids")
    target = entry.get("target")
    if not isinstance(target, int) or isinstance(target, bool) or not 0 <= target < N_IMAGES:
        raise UsageError(f"{where}: \"target\" must be an index from 0 to {N_IMAGES - 1}")
    captions = entry.get("captions")
    if not isinstance(captions, dict) or any(not isinstance(captions.get(c), str) for c in conditions):
        raise UsageError(f"{where}: \"captions\" needs a caption for each condition {conditions}")
    scores = entry.get("retriever_scores")
    if scores is not None:
        if not isinstance(scores, dict) or any(
            not _is_list_of(scores.get(c), (int, float), N_IMAGES) or not all(map(math.isfinite, scores[c]))
            for c in conditions
        ):
            raise UsageError(f"{where}: \"retriever_scores\" needs {N_IMAGES} finite numbers per condition")
    return StimulusSet(entry["set_id"], files, image_ids, target, {c: captions[c] for c in conditions}, scores)
