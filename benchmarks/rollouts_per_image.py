"""Validation P@1 per update and per second on the built-in world, for one rollout per image with the running-mean
baseline against K rollouts per image with the leave-one-out baseline, at the same images per batch.

    python benchmarks/rollouts_per_image.py [--k 4] [--n_epochs 3] [--output rollouts_per_image.png]

Both runs go through the real command line (``games/synthetic.json`` otherwise), in a subprocess each, one after
the other.  A validation line's time is when the run printed it, counted from its epoch-0 validation (so loading
the world and models is left out); each epoch is 200 updates.  Prints both curves and plots them side by side.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time


def timed_run(extra, directory):
    """``[(updates, seconds, validation P@1)]`` of one train run, and its final test P@1."""
    command = [sys.executable, "-m", "egg.zoo.discriminative_captioner.train", "--checkpoint_dir", directory, *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    points, start, final = [], None, None
    for line in process.stdout:
        if not line.startswith("{"):
            continue
        now, record = time.perf_counter(), json.loads(line)
        if record["mode"] == "test":
            start = now if start is None else start
            points.append((record["epoch"], now - start, record["acc"]))
        elif record["mode"] == "final":
            final = record["acc"]
    if process.wait():
        raise SystemExit(f"train failed: {' '.join(command)}")
    with open(f"{directory}/opts.json") as f, open(f"{directory}/data_counts.json") as g:
        updates_per_epoch = json.load(g)["train"]["used"] // json.load(f)["batch_size"]
    return [(epoch * updates_per_epoch, seconds, acc) for epoch, seconds, acc in points], final


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=4, help="rollouts per image of the second run")
    parser.add_argument("--n_epochs", type=int, default=3)
    parser.add_argument("--output", default="rollouts_per_image.png", help="the plot")
    args = parser.parse_args()
    runs = {
        "K = 1, running mean": ["--n_epochs", str(args.n_epochs)],
        f"K = {args.k}, rloo": ["--n_epochs", str(args.n_epochs), "--rollouts_per_image", str(args.k),
                                "--baseline", "rloo"],  # fmt: skip
    }
    curves = {}
    with tempfile.TemporaryDirectory() as root:
        for index, (name, extra) in enumerate(runs.items()):
            curves[name] = timed_run(extra, f"{root}/run{index}")
            points, final = curves[name]
            print(f"{name}: " + ", ".join(f"{u} updates {s:.0f} s P@1 {a:.3f}" for u, s, a in points)
                  + f"; final test P@1 {final:.3f}", flush=True)  # fmt: skip

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for name, (points, _) in curves.items():
        updates, seconds, accuracy = zip(*points)
        axes[0].plot(updates, [100 * a for a in accuracy], marker="o", label=name)
        axes[1].plot(seconds, [100 * a for a in accuracy], marker="o", label=name)
    axes[0].set_xlabel("optimizer updates (batch of 100 images)")
    axes[1].set_xlabel("seconds of training (2-core CPU)")
    axes[0].set_ylabel("validation P@1 among 100 (%)")
    axes[0].legend()
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(args.output, dpi=120)
    print(f"plot: {args.output}")


if __name__ == "__main__":
    main()
