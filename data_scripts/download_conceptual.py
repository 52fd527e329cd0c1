"""Downloads the Conceptual Captions images with img2dataset into webdataset shards, as ``--dataset conceptual``
reads them.

    pip install img2dataset
    python data_scripts/download_conceptual.py --data_root ~/data/conceptual_captions [--processes 16]
    python data_scripts/download_conceptual.py --dry_run      # print the steps, run nothing

Expects the two released TSVs (caption <TAB> URL, no header) in --data_root: Train_GCC-training.tsv and
Validation_GCC-1.1.0-Validation.tsv (https://ai.google.com/research/ConceptualCaptions/download).  Steps, per
split:
  1. write <data_root>/<split>_urls_with_header.tsv, a copy of the TSV with the caption<TAB>url header
     img2dataset needs (atomically; rewritten from the TSV each time, so it is never stale);
  2. img2dataset writes <data_root>/<split>/{00000..}.tar, each sample a {key}.jpg, {key}.txt (the caption) and
     {key}.json (URL, status); dead URLs (about 15%) are skipped and simply absent.
Running it again resumes an interrupted download (img2dataset --incremental_mode incremental: finished shards are
kept, the others fetched); keep the same --image_size, or the shards mix two sizes.  --dry_run checks that the
TSVs are there and prints both steps as shell commands (step 1 as this script with --url_lists_only), runnable
as printed.  About 3.3M URLs: hours, tens of GB at --image_size 256.
"""

import argparse
import csv
import os
import shlex
import shutil
import subprocess
import sys

from egg.zoo.discriminative_captioner.data.conceptual import TSV_FILES
from egg.zoo.discriminative_captioner.data.files import default_data_root
from egg.zoo.discriminative_captioner.runtime.atomic import atomic_path

TSV_SOURCE = "https://ai.google.com/research/ConceptualCaptions/download"


def url_list_path(data_root, split):
    """The copy of a split's TSV with a header, which img2dataset reads."""
    return os.path.join(data_root, f"{split}_urls_with_header.tsv")


def with_header(tsv, output):
    """Writes a copy of a released TSV with the ``caption<TAB>url`` header img2dataset needs, atomically."""
    with atomic_path(output) as staging:
        with open(tsv, encoding="utf-8", newline="") as source, open(staging, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
            writer.writerow(["caption", "url"])
            for row in csv.reader(source, delimiter="\t", quoting=csv.QUOTE_NONE):
                if len(row) >= 2:
                    writer.writerow(row[:2])


def img2dataset_command(url_list, output_folder, args):
    """The img2dataset command line that fetches one split into webdataset shards (resuming)."""
    return ["img2dataset", "--url_list", url_list, "--input_format", "tsv", "--url_col", "url",
            "--caption_col", "caption", "--output_format", "webdataset", "--output_folder", output_folder,
            "--processes_count", str(args.processes), "--thread_count", str(args.threads),
            "--image_size", str(args.image_size), "--resize_mode", "keep_ratio", "--resize_only_if_bigger", "True",
            "--incremental_mode", "incremental", "--number_sample_per_shard", "10000"]  # fmt: skip


def url_lists_command(args):
    """This script's own command line that writes the header copies (step 1) and stops."""
    return [sys.executable, os.path.abspath(__file__), "--data_root", args.data_root, "--splits", *args.splits,
            "--url_lists_only"]  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.replace("``", ""),  # reST quotes, not for a terminal
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data_root", default=default_data_root("conceptual"), help="where the TSVs are (and the shards go)"
    )
    parser.add_argument("--splits", nargs="+", choices=sorted(TSV_FILES), default=sorted(TSV_FILES))
    parser.add_argument("--processes", type=int, default=16, help="img2dataset --processes_count (default: 16)")
    parser.add_argument("--threads", type=int, default=64, help="img2dataset --thread_count (default: 64)")
    parser.add_argument(
        "--image_size", type=int, default=256, help="shorter side after resizing, bigger images only (default: 256)"
    )
    parser.add_argument("--dry_run", action="store_true", help="check the TSVs and print the steps, run nothing")
    parser.add_argument("--url_lists_only", action="store_true", help="write the header copies (step 1) and stop")
    args = parser.parse_args(argv)
    for split in args.splits:
        tsv = os.path.join(args.data_root, TSV_FILES[split])
        if not os.path.isfile(tsv):
            sys.exit(f"error: {tsv} not found: download {TSV_FILES[split]} from {TSV_SOURCE} into {args.data_root}")
    commands = [img2dataset_command(url_list_path(args.data_root, split), os.path.join(args.data_root, split), args)
                for split in args.splits]  # fmt: skip
    if args.dry_run:
        print(f"# 1. the TSVs with a header, img2dataset's input\n{shlex.join(url_lists_command(args))}")
        print("# 2. the images, as webdataset shards (rerun to resume)")
        print("\n".join(shlex.join(command) for command in commands))
        return
    if not args.url_lists_only and shutil.which("img2dataset") is None:
        sys.exit("error: img2dataset is not installed: pip install img2dataset (or use --dry_run)")
    for split in args.splits:
        with_header(os.path.join(args.data_root, TSV_FILES[split]), url_list_path(args.data_root, split))
        print(f"wrote {url_list_path(args.data_root, split)}")
    if args.url_lists_only:
        return
    for split, command in zip(args.splits, commands):
        status = subprocess.run(command).returncode
        if status:
            sys.exit(f"error: img2dataset stopped with status {status} on the {split} split; rerun to resume")


if __name__ == "__main__":
    main()
