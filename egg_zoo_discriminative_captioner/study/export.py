"""Results of a study: the answers as CSV, accuracy per condition with bootstrap confidence intervals, a bar chart.

Participants who made more than ``max_attention_errors`` mistakes on the attention checks are excluded (the paper
excluded those with more than one).  The confidence interval resamples participants and sets together (a
two-way bootstrap): each replicate draws participants and sets with replacement and weights each answer by how
many times its participant and its set were drawn, so both sources of variation widen the interval.
"""

import csv
import io
import json
import os
from collections import Counter
from datetime import datetime, timezone

import numpy as np

from ..checkpointing import atomic_path, atomic_write_text
from ..errors import UsageError
from .design import load_design
from .store import read_answers

CHANCE = 10.0  # percent: one target among 10 images


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


def plot(summary, path):
    """A bar chart of accuracy per condition with its confidence interval and the chance level (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["conditions"] if r["accuracy"] is not None]
    names = [r["condition"] for r in rows]
    values = np.array([r["accuracy"] for r in rows])
    errors = np.array([values - [r["ci_low"] for r in rows], [r["ci_high"] for r in rows] - values])  # [2, C]
    figure, axis = plt.subplots(figsize=(1.6 + 1.3 * len(rows), 3.6), dpi=150)
    bars = axis.bar(names, values, yerr=errors, capsize=6, color="#4c78a8", edgecolor="#2f4b6e")
    axis.axhline(CHANCE, color="#888888", linestyle="--", linewidth=1)
    axis.text(len(rows) - 0.5, CHANCE, "chance", ha="right", va="bottom", fontsize=8, color="#666666")
    axis.bar_label(bars, labels=[f"{v:.1f}" for v in values], padding=3, fontsize=9)
    axis.set_ylabel(f"accuracy (%), {round(100 * summary['confidence'])}% CI")
    axis.set_ylim(0, 100)
    axis.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def export(study_dir, output_dir=None, max_attention_errors=1, n_bootstrap=2000, seed=0, confidence=0.95):
    """Writes answers.csv, accuracy.csv, accuracy.md, accuracy.json and accuracy.png; returns the summary."""
    if n_bootstrap < 1 or not 0 < confidence < 1:
        raise UsageError("--bootstrap must be positive and --confidence between 0 and 1")
    design = load_design(study_dir)
    answers = read_answers(study_dir)
    summary = summarise(design, answers, max_attention_errors, n_bootstrap, seed, confidence)
    output_dir = output_dir or os.path.join(study_dir, "results")
    os.makedirs(output_dir, exist_ok=True)
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

