"""PNG plots (matplotlib, no display needed): P@1 per data set per model, and training curves from EGG logs."""

import json
import math
import os

from ..runtime.atomic import atomic_path


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only, also on machines without a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    with atomic_path(path) as staging:
        fig.savefig(staging, format="png", dpi=120, bbox_inches="tight")


LABEL_BOX = {"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none"}


def _percent(fraction):
    return math.nan if fraction is None else 100 * fraction


def p_at_1_plot(records, path):
    """Grouped bars: P@1 (%) per data set, one bar per model plus the human (reference) captions, and the chance
    level (100 / candidates %) as a dashed line.  Returns the (closed) figure."""
    plt = _figure()
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    models = list(dict.fromkeys(r["model"] for r in records))
    by_key = {(r["model"], r["dataset"]): r for r in records}
    series = {m: [_percent(by_key[m, d]["p_at_1"]) for d in datasets] for m in models}
    # a data set without any reference has no human P@1 (None): no bar
    series["human captions"] = [_percent(next(r for r in records if r["dataset"] == d)["p_at_1_references"])
                                for d in datasets]  # fmt: skip
    candidates = records[0]["candidates"]
    fig, ax = plt.subplots(figsize=(2.5 + 1.6 * len(datasets) * len(series) / 3, 3.5), layout="constrained")
    width = 0.8 / len(series)
    handles = []
    for k, (label, values) in enumerate(series.items()):
        positions = [i + (k - (len(series) - 1) / 2) * width for i in range(len(datasets))]
        handles.append(ax.bar(positions, values, width, label=label))
        # an opaque box, so that the chance line passes behind the value of a bar near chance, not through it
        labels = ["" if math.isnan(v) else f"{v:.1f}" for v in values]
        ax.bar_label(handles[-1], labels=labels, fontsize=7, padding=2, bbox=LABEL_BOX)
    # behind the bars and their value labels (zorder 0.5 < patches' 1 < texts' 3); named in the legend
    handles.append(ax.axhline(100 / candidates, color="0.3", linestyle="--", linewidth=1, zorder=0.5,
                              label=f"chance ({100 / candidates:g}%)"))  # fmt: skip
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_ylabel(f"P@1 (%), {candidates} candidates")
    ax.set_ylim(0, 100)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    _save(fig, path)
    plt.close(fig)
    return fig


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


SERIES = {"train": ("train (in-batch distractors)", "o-"), "validation": ("validation", "s-"),
          "test": ("final test", "*")}  # fmt: skip


def log_series(line):
    """Which curve an EGG log line belongs to: "train", "validation" or "test" (the final test).

    This game's lines name their ``split``; EGG itself logs validation with ``"mode": "test"``, so a line without
    a split is validation unless it is the training one.
    """
    if line["mode"] == "train":
        return "train"
    return "test" if line.get("split") == "test" or line["mode"] == "final" else "validation"


def training_curves(log_path, path):
    """Reward of the sampled captions (train) and of the beam captions (validation, final test) per epoch, and
    their P@1.  Returns the (closed) figure."""
    plt = _figure()
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    lines = read_log(log_path)
    if not lines:
        raise ValueError(f"{log_path} holds no EGG log lines")
    fig, (reward_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    for series, (label, style) in SERIES.items():
        rows = [line for line in lines if log_series(line) == series]
        epochs = [row["epoch"] for row in rows]
        size = 11 if series == "test" else 6
        if rows and "reward" in rows[0]:
            reward_ax.plot(epochs, [row["reward"] for row in rows], style, label=label, markersize=size)
        if rows and "acc" in rows[0]:
            acc_ax.plot(epochs, [100 * row["acc"] for row in rows], style, label=label, markersize=size)
    reward_ax.set(xlabel="epoch", ylabel="mean reward", title="reward")
    acc_ax.set(xlabel="epoch", ylabel="P@1 (%)", title="P@1")
    for ax in (reward_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        formatter = ScalarFormatter(useOffset=False)
        formatter.set_scientific(False)
        ax.yaxis.set_major_formatter(formatter)
        ax.legend(fontsize=8)
    fig.suptitle(os.path.basename(log_path), fontsize=10)
    _save(fig, path)
    plt.close(fig)
    return fig
