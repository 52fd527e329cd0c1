"""PNG plots (matplotlib, no display needed): P@1 per data set per model, and training curves from EGG logs."""

import json
import os

from ..checkpointing import atomic_path


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only, also on machines without a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    with atomic_path(path) as staging:
        fig.savefig(staging, format="png", dpi=120, bbox_inches="tight")


def p_at_1_plot(records, path):
    """Grouped bars: P@1 (%) per data set, one bar per model plus the human (reference) captions."""
    plt = _figure()
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    models = list(dict.fromkeys(r["model"] for r in records))
    by_key = {(r["model"], r["dataset"]): r for r in records}
    series = {m: [100 * by_key[m, d]["p_at_1"] for d in datasets] for m in models}
    series["human captions"] = [100 * next(r for r in records if r["dataset"] == d)["p_at_1_references"]
                                for d in datasets]  # fmt: skip
    fig, ax = plt.subplots(figsize=(1.5 + 1.6 * len(datasets) * len(series) / 3, 3.5))
    width = 0.8 / len(series)
    for k, (label, values) in enumerate(series.items()):
        positions = [i + (k - (len(series) - 1) / 2) * width for i in range(len(datasets))]
        bars = ax.bar(positions, values, width, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_ylabel(f"P@1 (%), {records[0]['candidates']} candidates")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def read_log(path):
    """EGG ConsoleLogger JSON lines (``{"mode": ..., "epoch": ...}``) of a log file; other lines are skipped."""
    lines = []
    with open(path, errors="replace") as f:
        for text in f:
            text = text.strip()
            if text.startswith("{"):
                try:
                    line = json.loads(text)
                except ValueError:
                    continue
                if isinstance(line, dict) and "mode" in line and "epoch" in line:
                    lines.append(line)
    return lines


def training_curves(log_path, path):
    """Reward of the sampled captions (train) and P@1 of the beam captions (validation/test) per epoch."""
    plt = _figure()
    lines = read_log(log_path)
    if not lines:
        raise ValueError(f"{log_path} holds no EGG log lines")
    fig, (reward_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    for mode, style in (("train", "o-"), ("test", "s-"), ("validation", "s-")):
        rows = [line for line in lines if line["mode"] == mode]
        if not rows:
            continue
        epochs = [row["epoch"] for row in rows]
        if "reward" in rows[0]:
            reward_ax.plot(epochs, [row["reward"] for row in rows], style, label=mode)
        if "acc" in rows[0]:
            acc_ax.plot(epochs, [100 * row["acc"] for row in rows], style, label=mode)
    reward_ax.set(xlabel="epoch", ylabel="mean reward", title="reward")
    acc_ax.set(xlabel="epoch", ylabel="P@1 (%)", title="P@1 (train: in batch; test: 100 candidates)")
    for ax in (reward_ax, acc_ax):
        ax.legend(fontsize=8)
    fig.suptitle(os.path.basename(log_path))
    _save(fig, path)
    plt.close(fig)
