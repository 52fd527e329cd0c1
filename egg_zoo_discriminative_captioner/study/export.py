"""Results of a study: the answers as CSV, accuracy per condition with bootstrap confidence intervals, a bar chart.

Participants who made more than ``max_attention_errors`` mistakes on the attention checks are excluded (the paper
excluded those with more than one).  The confidence interval resamples participants and sets together (a
two-way bootstrap): each replicate draws participants and sets with replacement and weights each answer by how
many times its participant and its set were drawn, so both sources of variation widen the interval.
"""

import contextlib
import csv
import io
import json
import os
from collections import Counter
from datetime import datetime, timezone

import numpy as np

from ..runtime.atomic import atomic_path, atomic_write_text
from ..runtime.errors import UsageError
from .design import load_design
from .store import read_answers

CHANCE = 10.0  # percent: one target among 10 images
RESULT_FILES = ("answers.csv", "accuracy.csv", "accuracy.md", "accuracy.json", "accuracy.png")


def bootstrap_accuracy(participants, sets, correct, groups, n_groups, n_bootstrap, rng, confidence=0.95):
    """Accuracy (%) per group and its percentile interval, resampling participants and sets.

    ``participants``, ``sets``, ``groups`` are integer codes per answer ``[T]`` and ``correct`` is 0/1 ``[T]``.
    Returns ``(accuracy [G], low [G], high [G])``.
    """
    participants, sets, correct, groups = map(np.asarray, (participants, sets, correct, groups))
    onehot = np.eye(n_groups)[groups]  # [T, G]
    accuracy = 100.0 * (correct @ onehot) / np.maximum(onehot.sum(0), 1)
    n_p, n_s = participants.max() + 1, sets.max() + 1
    draws_p = rng.multinomial(n_p, np.full(n_p, 1.0 / n_p), size=n_bootstrap)  # [B, P] times each was drawn
    draws_s = rng.multinomial(n_s, np.full(n_s, 1.0 / n_s), size=n_bootstrap)  # [B, S]
    weights = draws_p[:, participants] * draws_s[:, sets]  # [B, T]
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = 100.0 * ((weights * correct) @ onehot) / (weights @ onehot)  # [B, G], NaN if a group is empty
    tail = 100.0 * (1 - confidence) / 2
    low, high = np.nanpercentile(replicates, [tail, 100 - tail], axis=0)
    return accuracy, low, high


def _codes(values):
    index = {v: i for i, v in enumerate(dict.fromkeys(values))}
    return np.array([index[v] for v in values], dtype=int)


def summarise(design, answers, max_attention_errors=1, n_bootstrap=2000, seed=0, confidence=0.95):
    """The accuracy table (a list of rows, one per condition) and the excluded participants."""
    errors = Counter(a["participant_id"] for a in answers if a["attention"] and not a["correct"])
    excluded = sorted(p for p, n in errors.items() if n > max_attention_errors)
    kept = [a for a in answers if not a["attention"] and a["participant_id"] not in excluded]
    if not kept:
        raise UsageError("no answers to summarise (none stored yet, or every participant failed the attention checks)")
    conditions = design["conditions"]
    accuracy, low, high = bootstrap_accuracy(
        _codes([a["participant_id"] for a in kept]),
        _codes([a["set_id"] for a in kept]),
        np.array([a["correct"] for a in kept], dtype=float),
        np.array([conditions.index(a["condition"]) for a in kept]),
        len(conditions),
        n_bootstrap,
        np.random.default_rng(seed),
        confidence,
    )
    rows = []
    for c, condition in enumerate(conditions):
        mine = [a for a in kept if a["condition"] == condition]
        rows.append({
            "condition": condition,
            "accuracy": round(float(accuracy[c]), 4) if mine else None,
            "ci_low": round(float(low[c]), 4) if mine else None,
            "ci_high": round(float(high[c]), 4) if mine else None,
            "answers": len(mine),
            "participants": len({a["participant_id"] for a in mine}),
            "sets": len({a["set_id"] for a in mine}),
        })  # fmt: skip
    checks = [a for a in answers if a["attention"]]
    return {
        "conditions": rows,
        "confidence": confidence,
        "bootstrap": n_bootstrap,
        "seed": seed,
        "max_attention_errors": max_attention_errors,
        "participants_answering": len({a["participant_id"] for a in answers}),
        "excluded_participants": excluded,
        "attention_checks": {"answers": len(checks), "correct": sum(a["correct"] for a in checks)},
    }


def answers_csv(design, answers, excluded):
    """The answers, one row each, with the caption and the image ids they refer to."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["participant_id", "trial", "set_id", "condition", "attention", "caption", "target", "choice",
                     "chosen", "correct", "target_image_id", "chosen_image_id", "image_order", "answered_at",
                     "excluded"])  # fmt: skip
    for a in answers:
        entry = design["attention_sets" if a["attention"] else "sets"][a["set_id"]]
        caption = entry["captions"]["attention" if a["attention"] else a["condition"]]
        answered_at = datetime.fromtimestamp(a["answered_at"], timezone.utc).isoformat(timespec="seconds")
        order = " ".join(map(str, json.loads(a["image_order"])))
        writer.writerow([a["participant_id"], a["trial"], a["set_id"], a["condition"] or "", a["attention"], caption,
                         a["target"], a["choice"], a["chosen"], a["correct"], entry["image_ids"][a["target"]],
                         entry["image_ids"][a["chosen"]], order, answered_at,
                         int(a["participant_id"] in excluded)])  # fmt: skip
    return out.getvalue()


def markdown_table(summary):
    """The Table-6-style table: accuracy per caption type with its confidence interval."""
    level = round(100 * summary["confidence"])
    lines = [f"| captions | accuracy (%) | {level}% CI | answers | participants | sets |", "|---|---|---|---|---|---|"]
    for row in summary["conditions"]:
        if row["accuracy"] is None:
            lines.append(f"| {row['condition']} | – | – | 0 | 0 | 0 |")
        else:
            lines.append(f"| {row['condition']} | {row['accuracy']:.1f} | {row['ci_low']:.1f}–{row['ci_high']:.1f} | "
                         f"{row['answers']} | {row['participants']} | {row['sets']} |")  # fmt: skip
    excluded = summary["excluded_participants"]
    lines.append("")
    lines.append(f"{summary['participants_answering']} participants answered; {len(excluded)} excluded for more than "
                 f"{summary['max_attention_errors']} attention-check error(s). Chance: {CHANCE:.0f}%. CIs: "
                 f"{summary['bootstrap']} bootstrap replicates over participants and sets.")  # fmt: skip
    return "\n".join(lines) + "\n"


def chart(summary):
    """The bar chart of accuracy per condition: a matplotlib Figure (the caller closes it).

    Each value is written inside its bar near the base, where neither its whisker nor the chance line reaches it
    (the line runs behind the bars); a bar too short for that, or whose interval reaches down to the label, has
    its value above the whisker's cap instead.  The chance line ends right of the last bar, beside its label.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["conditions"] if r["accuracy"] is not None]
    x = np.arange(len(rows))
    values = np.array([r["accuracy"] for r in rows])
    low, high = np.array([r["ci_low"] for r in rows]), np.array([r["ci_high"] for r in rows])
    figure, axis = plt.subplots(figsize=(2.2 + 1.3 * len(rows), 3.6), dpi=150)
    axis.bar(x, values, width=0.6, color="#4c78a8", zorder=2)
    axis.errorbar(x, values, yerr=[values - low, high - values], fmt="none", ecolor="#1f2933", elinewidth=1.2,
                  capsize=5, capthick=1.2, zorder=3)  # fmt: skip
    line_end = len(rows) - 0.5
    axis.hlines(CHANCE, -0.5, line_end, colors="#7b8794", linestyles="--", linewidth=1, zorder=1)
    axis.annotate(f"chance\n{CHANCE:.0f}%", (line_end, CHANCE), xytext=(4, 0), textcoords="offset points",
                  ha="left", va="center", fontsize=8, color="#52606d", linespacing=1.1)  # fmt: skip
    axis.set_xticks(x, [r["condition"] for r in rows])
    axis.set_xlim(-0.5, line_end + 0.55)
    axis.set_ylim(0, 100)
    axis.set_ylabel(f"accuracy (%), {round(100 * summary['confidence'])}% CI")
    axis.spines[["top", "right"]].set_visible(False)
    axis.tick_params(axis="x", length=0)
    figure.tight_layout()
    renderer = figure.canvas.get_renderer()
    to_pixels = axis.transData.transform
    clearance = 3 * figure.dpi / 72  # 3 pt between a value and its bar's top or its whisker's lower end
    for position, value, bottom, top in zip(x, values, low, high):
        label = axis.annotate(f"{value:.1f}", (position, 0), xytext=(0, 3), textcoords="offset points",
                              ha="center", va="bottom", fontsize=9, fontweight="bold", color="white",
                              zorder=4)  # fmt: skip
        if label.get_window_extent(renderer).y1 + clearance > to_pixels((position, min(value, bottom)))[1]:
            label.xy, label.xyann = (position, top), (0, 4)  # no room inside: above the whisker's cap
            label.set_color("#1f2933")
            label.set_annotation_clip(False)
    return figure


def plot(summary, path):
    """Writes ``chart(summary)`` as a PNG to ``path`` (atomically)."""
    import matplotlib.pyplot as plt

    figure = chart(summary)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def export(
    study_dir, output_dir=None, max_attention_errors=1, n_bootstrap=2000, seed=0, confidence=0.95, overwrite=False
):
    """Writes RESULT_FILES to ``output_dir`` (default ``STUDY_DIR/results``); returns the summary.

    A directory that is not empty is refused unless ``overwrite``, which first removes the files an earlier export
    wrote (only those), so that no earlier result is left beside the new ones if this export stops half-way.
    """
    if n_bootstrap < 1 or not 0 < confidence < 1:
        raise UsageError("--bootstrap must be positive and --confidence between 0 and 1")
    output_dir = output_dir or os.path.join(study_dir, "results")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(f"{output_dir} is a file: choose a directory with --output_dir")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise UsageError(f"{output_dir} is not empty (an earlier export?): pass --overwrite to replace its results, "
                         "or choose another --output_dir")  # fmt: skip
    design = load_design(study_dir)
    answers = read_answers(study_dir)
    summary = summarise(design, answers, max_attention_errors, n_bootstrap, seed, confidence)
    os.makedirs(output_dir, exist_ok=True)
    for name in RESULT_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(output_dir, name))
    atomic_write_text(answers_csv(design, answers, set(summary["excluded_participants"])),
                      os.path.join(output_dir, "answers.csv"))  # fmt: skip
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(summary["conditions"][0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary["conditions"])
    atomic_write_text(table.getvalue(), os.path.join(output_dir, "accuracy.csv"))
    atomic_write_text(markdown_table(summary), os.path.join(output_dir, "accuracy.md"))
    atomic_write_text(json.dumps(summary, indent=2) + "\n", os.path.join(output_dir, "accuracy.json"))
    plot(summary, os.path.join(output_dir, "accuracy.png"))
    return summary
