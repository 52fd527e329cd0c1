"""Where ``evaluate`` writes: never over an earlier evaluation unless ``--overwrite``, and never half-way.

The outputs are written into a staging directory beside ``--output_dir`` and moved in once all are complete;
``--overwrite`` first removes what an earlier evaluation wrote there (the names below) and leaves other files.
"""

import contextlib
import fnmatch
import os
import shutil
import tempfile

from ..runtime.errors import UsageError

OUTPUTS = ("results.json", "summary.json", "tables.md", "captions.jsonl", "p_at_1.png", "training_*.png",
           "stimuli_*")  # fmt: skip


def earlier_outputs(directory):
    """The names in ``directory`` that an evaluation writes."""
    if not os.path.isdir(directory):
        return []
    return sorted(name for name in os.listdir(directory) if any(fnmatch.fnmatch(name, p) for p in OUTPUTS))


def check_output_dir(directory, overwrite):
    """``--output_dir`` must be new or empty, unless ``--overwrite`` (checked before any model loads)."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"--output_dir {directory} is a file")
    if not os.path.isdir(directory) or not os.listdir(directory) or overwrite:
        return
    earlier = earlier_outputs(directory)
    what = f"the results of an earlier evaluation ({', '.join(earlier[:4])}{', ...' if len(earlier) > 4 else ''})"
    raise UsageError(f"--output_dir {directory} holds {what if earlier else 'other files'}: choose another "
                     "--output_dir, or pass --overwrite to replace an earlier evaluation's files")  # fmt: skip


@contextlib.contextmanager
def staged(directory):
    """Yields a staging directory beside ``directory``; on success its files replace the earlier outputs there."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".partial-evaluation-", dir=parent)
    try:
        yield staging
        os.makedirs(directory, exist_ok=True)
        for name in earlier_outputs(directory):
            path = os.path.join(directory, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(directory, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def per_dataset_table(records, columns, cells, human_row, human_cells):
    """A tables.md table: per data set (in the records' order) a bold row, each model's ``cells(record)``, then
    ``human_row`` with ``human_cells(the data set's first record)`` (each a " | "-joined string)."""
    lines = [f"| Model | {' | '.join(columns)} |", "|" + "---|" * (len(columns) + 1)]
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        rows = [r for r in records if r["dataset"] == dataset]
        lines.append(f"| **{dataset}** |" + " |" * len(columns))
        lines += [f"| {r['model']} | {cells(r)} |" for r in rows]
        lines.append(f"| {human_row} | {human_cells(rows[0])} |")
    return lines
