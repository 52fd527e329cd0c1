"""The study's design: which participant sees which set, in which condition, in which on-screen order.

Sets are shuffled (seeded) and cut into blocks of ``sets_per_participant``; within a block, set ``i`` belongs to
group ``i mod C`` (C conditions).  A *list* is a block with a rotation ``r``: group ``j`` is shown in condition
``(j + r) mod C`` (a Latin square), so each participant sees every set of their block once, in one condition
only, and about the same number of sets per condition.  Participant ``p`` gets rotation ``p mod C`` of block
``(p // C) mod n_blocks``: the first ``n_blocks * C`` participants cover every set in every condition exactly
once, and any C consecutive participants see each of their sets in every condition.

Attention checks (sets whose caption names the target exactly) are drawn per participant and shuffled in among
the trials.  Each trial shows its 10 images in a seeded random order, recorded in the design and with the answer.
"""

import hashlib
import json
import os
import re
import shutil

import numpy as np
from PIL import Image

from ..runtime.atomic import atomic_directory
from ..runtime.errors import UsageError
from .stimuli import N_IMAGES, read_json

FORMAT = "discritune-study/1"
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
PARTICIPANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def latin_square_lists(set_ids, n_conditions, sets_per_participant, rng):
    """All lists of the design: ``[(block, rotation, [(set_id, condition_index), ...])]``, rotation fastest."""
    shuffled = [set_ids[i] for i in rng.permutation(len(set_ids))]
    blocks = [shuffled[start : start + sets_per_participant] for start in range(0, len(shuffled), sets_per_participant)]
    return [
        (b, r, [(set_id, (i % n_conditions + r) % n_conditions) for i, set_id in enumerate(block)])
        for b, block in enumerate(blocks)
        for r in range(n_conditions)
    ]


def assign(set_ids, conditions, participant_ids, sets_per_participant, attention_ids=(), attention_per_participant=0,
           seed=0):  # fmt: skip
    """The participants of the study, each ``{"id", "list", "trials": [...]}``, from ``seed`` alone.

    A trial is ``{"set_id", "condition", "attention", "order"}``: ``order[k]`` is the index (in the stimuli's
    fixed order) of the image shown at position ``k``; attention trials have condition ``None``.
    """
    rng = np.random.default_rng(seed)
    lists = latin_square_lists(list(set_ids), len(conditions), sets_per_participant, rng)
    participants = []
    for number, participant_id in enumerate(participant_ids):
        block, rotation, items = lists[number % len(lists)]
        trials = [{"set_id": s, "condition": conditions[c], "attention": False} for s, c in items]
        if attention_per_participant:
            chosen = rng.choice(len(attention_ids), attention_per_participant, replace=False)
            trials += [{"set_id": attention_ids[i], "condition": None, "attention": True} for i in sorted(chosen)]
        trials = [trials[i] for i in rng.permutation(len(trials))]
        for trial in trials:
            trial["order"] = rng.permutation(N_IMAGES).tolist()
        participants.append({"id": participant_id, "list": f"b{block}r{rotation}", "trials": trials})
    return participants


def generated_ids(count, rng):
    """``count`` distinct participant ids such as ``P007-3f9a1c``."""
    return [f"P{n:03d}-{int(rng.integers(16**6)):06x}" for n in range(count)]


def read_participant_ids(path):
    """Participant ids from a text file, one per line (e.g. crowdsourcing worker ids)."""
    try:
        with open(path, encoding="utf-8") as f:
            ids = [line.strip() for line in f if line.strip()]
    except OSError as error:
        raise UsageError(f"cannot read participant ids from {path} ({error.strerror or error})") from None
    bad = [i for i in ids if not PARTICIPANT_ID.match(i)]
    if bad:
        raise UsageError(f"{path}: participant id {bad[0]!r} is not 1-64 letters, digits, '-' or '_'")
    if not ids or len(set(ids)) != len(ids):
        raise UsageError(f"{path}: participant ids must be non-empty and distinct")
    return ids


def _copy_image(source, images_dir, copied):
    """Copies ``source`` under a name derived from its content, which reveals nothing about the set."""
    if source in copied:
        return copied[source]
    extension = os.path.splitext(source)[1].lower()
    if extension not in IMAGE_TYPES:
        raise UsageError(f"image {source}: expected one of {', '.join(IMAGE_TYPES)}")
    try:
        with Image.open(source) as image:
            image.verify()
    except Exception as error:  # PIL raises many kinds of errors on a corrupted file
        raise UsageError(f"image {source} is corrupted or unreadable ({type(error).__name__})") from None
    with open(source, "rb") as f:
        name = hashlib.sha256(f.read()).hexdigest()[:24] + extension
    shutil.copyfile(source, os.path.join(images_dir, name))
    copied[source] = name
    return name


def build_study(stimuli, study_dir, sets_per_participant, participant_ids=None, n_participants=None,
                conditions=None, attention=None, attention_condition=None, attention_per_participant=5,
                seed=0):  # fmt: skip
    """Writes ``study_dir``: ``study.json`` (the design), ``images/`` and ``participants.csv``; returns the design.

    ``attention`` is a second stimuli directory whose sets serve as attention checks, with the captions of its
    ``attention_condition`` (default: its first condition), which should name the target exactly.
    """
    conditions = conditions or stimuli.conditions
    unknown = [c for c in conditions if c not in stimuli.conditions]
    if unknown:
        raise UsageError(f"unknown condition {unknown[0]!r}; the stimuli have {stimuli.conditions}")
    if sets_per_participant < 1:
        raise UsageError("--sets_per_participant must be at least 1")
    if attention is None:
        attention_per_participant = 0
    elif not 0 <= attention_per_participant <= len(attention.sets):
        raise UsageError(
            f"--attention_per_participant {attention_per_participant}: the attention stimuli have "
            f"{len(attention.sets)} sets"
        )
    attention_condition = attention_condition or (attention.conditions[0] if attention else None)
    if attention is not None and attention_condition not in attention.conditions:
        raise UsageError(f"--attention_condition {attention_condition!r} is not in {attention.conditions}")
    set_ids = [s.set_id for s in stimuli.sets]
    n_lists = -(-len(set_ids) // sets_per_participant) * len(conditions)
    rng = np.random.default_rng([seed, 1])  # participant ids; the assignment has its own stream
    if participant_ids is None:
        participant_ids = generated_ids(n_participants or n_lists, rng)
    elif n_participants is not None:
        raise UsageError("give either --participants or --participant_ids, not both")
    if os.path.exists(study_dir) and os.listdir(study_dir):
        raise UsageError(f"{study_dir} already exists and is not empty; choose a new directory for a new study")

    with atomic_directory(study_dir) as staging:
        images_dir = os.path.join(staging, "images")
        os.makedirs(images_dir)
        copied = {}

        def entry(stimulus, captions):
            images = [_copy_image(path, images_dir, copied) for path in stimulus.images]
            return {"images": images, "image_ids": stimulus.image_ids, "target": stimulus.target, "captions": captions}

        design = {
            "format": FORMAT,
            "seed": seed,
            "stimuli": {"directory": stimuli.directory, **stimuli.meta},
            "conditions": list(conditions),
            "sets_per_participant": sets_per_participant,
            "lists": n_lists,
            "sets": {s.set_id: entry(s, {c: s.captions[c] for c in conditions}) for s in stimuli.sets},
            "attention_sets": {
                s.set_id: entry(s, {"attention": s.captions[attention_condition]})
                for s in (attention.sets if attention else [])
            },
            "participants": assign(
                set_ids,
                conditions,
                participant_ids,
                sets_per_participant,
                [s.set_id for s in attention.sets] if attention else [],
                attention_per_participant,
                seed,
            ),
        }
        with open(os.path.join(staging, "study.json"), "w", encoding="utf-8") as f:
            json.dump(design, f, indent=1)
        with open(os.path.join(staging, "participants.csv"), "w", encoding="utf-8") as f:
            f.write("participant_id,list,trials,link\n")
            for p in design["participants"]:
                f.write(f"{p['id']},{p['list']},{len(p['trials'])},/p/{p['id']}\n")
    return design


def load_design(study_dir):
    """The design of a built study (``study.json``)."""
    hint = f"build the study first with `study build STIMULI_DIR {study_dir}`"
    design = read_json(os.path.join(study_dir, "study.json"), FORMAT, hint)
    return design


def trial_set(design, trial):
    """``(caption, images, target)`` of a trial, images and target in the stimuli's fixed order."""
    if trial["attention"]:
        entry = design["attention_sets"][trial["set_id"]]
        return entry["captions"]["attention"], entry["images"], entry["target"]
    entry = design["sets"][trial["set_id"]]
    return entry["captions"][trial["condition"]], entry["images"], entry["target"]
