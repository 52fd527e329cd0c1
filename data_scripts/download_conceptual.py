"""Downloads the Conceptual Captions images with img2dataset into webdataset shards, as ``--dataset conceptual``
reads them.

    pip install img2dataset
    python data_scripts/download_conceptual.py --data_root ~/data/conceptual_captions [--processes 16]

Expects the two released TSVs (caption <TAB> URL, no header) in --data_root: Train_GCC-training.tsv and
Validation_GCC-1.1.0-Validation.tsv (https://ai.google.com/research/ConceptualCaptions/download).  Writes
<data_root>/train/{00000..}.tar and <data_root>/validation/*.tar, each sample a {key}.jpg, {key}.txt (the
caption) and {key}.json (URL, status); dead URLs (about 15%) are skipped by img2dataset and simply absent.
img2dataset resumes an interrupted download (--incremental_mode incremental) when run again.  --dry_run prints
the img2dataset commands without running them.  About 3.3M URLs: hours, tens of GB at --image_size 256.
"""

import argparse
import csv
import os
import shutil
import subprocess
import sys

from egg.zoo.discriminative_captioner.data.conceptual import TSV_FILES
from egg.zoo.discriminative_captioner.data.files import default_data_root


TSV_SOURCE = "https://ai.google.com/research/ConceptualCaptions/download"


def with_header(tsv, output):
    """A copy of a released TSV with the ``caption<TAB>url`` header img2dataset needs."""
    with open(tsv, encoding="utf-8", newline="") as source, open(output, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["caption", "url"])
        for row in csv.reader(source, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 2:
                writer.writerow(row[:2])


def img2dataset_command(url_list, output_folder, args):
    return ["img2dataset", "--url_list", url_list, "--input_format", "tsv", "--url_col", "url",
            "--caption_col", "caption", "--output_format", "webdataset", "--output_folder", output_folder,
            "--processes_count", str(args.processes), "--thread_count", str(args.threads),
            "--image_size", str(args.image_size), "--resize_mode", "keep_ratio", "--resize_only_if_bigger", "True",
            "--incremental_mode", "incremental", "--number_sample_per_shard", "10000"]  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data_root", default=default_data_root("conceptual"), help="where the TSVs are (and the shards go)"
    )
    parser.add_argument("--splits", nargs="+", choices=sorted(TSV_FILES), default=sorted(TSV_FILES))
    parser.add_argument("--processes", type=int, default=16, help="img2dataset --processes_count")
    parser.add_argument("--threads", type=int, default=64, help="img2dataset --thread_count")
    parser.add_argument("--image_size", type=int, default=256, help="shorter side after resizing (bigger images only)")
    parser.add_argument("--dry_run", action="store_true", help="print the commands instead of running them")
    args = parser.parse_args(argv)
    if not args.dry_run and shutil.which("img2dataset") is None:
        sys.exit("error: img2dataset is not installed: pip install img2dataset (or use --dry_run)")
    for split in args.splits:
        tsv = os.path.join(args.data_root, TSV_FILES[split])
        url_list = os.path.join(args.data_root, f"{split}_urls_with_header.tsv")
        command = img2dataset_command(url_list, os.path.join(args.data_root, split), args)
        if args.dry_run:
            print(" ".join(command))
            continue
        if not os.path.isfile(tsv):
            sys.exit(f"error: {tsv} not found: download it from {TSV_SOURCE}")
        with_header(tsv, url_list)
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
