"""Renders a run's caption tables (``RUN/captions/epoch_<e>.jsonl``) as a PNG picture, with the images.

    python docs/scripts/caption_table.py RUN OUTPUT.png [--update U] [--dataset synthetic ...]

The training table at update ``U`` (default: the last one logged), and the validation images' greedy captions
before training (epoch 0) and after the last epoch.  The images are looked up by id in the run's data set (the
data options after the paths, as the run was given them).
"""

import argparse
import glob
import json
import os
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from egg.zoo.discriminative_captioner.data import load_dataset  # noqa: E402
from egg.zoo.discriminative_captioner.options.parse import config_of  # noqa: E402


def rows_of(run):
    rows = []
    for path in sorted(glob.glob(os.path.join(run, "captions", "epoch_*.jsonl"))):
        with open(path) as f:
            rows += [json.loads(line) for line in f]
    return rows


def image_of(splits, image_id):
    for split in splits:
        if image_id in split.index:
            return split.images[split.index[image_id]]
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("output")
    parser.add_argument("--update", type=int, default=None)
    args, data_options = parser.parse_known_args()
    dataset = load_dataset(config_of(data_options))
    splits = [dataset.split(name) for name in ("train", "validation")]
    for split in splits:
        split.index = {image_id: i for i, image_id in enumerate(split.ids)}
    rows = rows_of(args.run)
    train = [row for row in rows if row["table"] == "train"]
    update = args.update if args.update is not None else max(row["update"] for row in train)
    train = [row for row in train if row["update"] == update]
    validation = [row for row in rows if row["table"] == "validation"]
    last = max(row["epoch"] for row in validation)
    before = {row["image_id"]: row["caption"] for row in validation if row["epoch"] == 0}
    after = [row for row in validation if row["epoch"] == last]

    n = len(train) + len(after)
    fig = plt.figure(figsize=(11, 1.15 * n + 0.9))
    grid = fig.add_gridspec(n + 2, 6, width_ratios=[1, 5.2, 1.2, 1.2, 1, 0.9], hspace=0.35)

    def text(row, column, value, **kwargs):
        ax = fig.add_subplot(grid[row, column])
        ax.axis("off")
        ax.text(0, 0.5, value, va="center", fontsize=9, **kwargs)

    def picture(row, column, image_id):
        ax = fig.add_subplot(grid[row, column])
        ax.axis("off")
        image = image_of(splits, image_id)
        if image is not None:
            ax.imshow(image)

    text(0, 0, f"training, update {update}: sampled captions", fontweight="bold")
    for i, header in enumerate(["caption", "reward", "advantage", "ranked first", "target rank"], start=1):
        text(0, i, header, fontweight="bold") if i != 1 else None
    for i, row in enumerate(train, start=1):
        picture(i, 0, row["image_id"])
        text(i, 1, "\n".join(textwrap.wrap(row["caption"], 48)))
        text(i, 2, f"{row['reward']:.2f}")
        text(i, 3, f"{row['advantage']:+.2f}")
        picture(i, 4, row["ranked_first_id"])
        text(i, 5, str(row["target_rank"]))
    top = len(train) + 1
    text(top, 0, f"validation: greedy captions, epoch 0 -> epoch {last}", fontweight="bold")
    for i, row in enumerate(after, start=top + 1):
        picture(i, 0, row["image_id"])
        text(i, 1, "\n".join(textwrap.wrap(f"{before.get(row['image_id'], '')}  ->  {row['caption']}", 56)))
    fig.savefig(args.output, dpi=90, bbox_inches="tight")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
