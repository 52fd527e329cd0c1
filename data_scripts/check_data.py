"""Reports, per data set and split, how many listed images are present, missing or unreadable.

    python data_scripts/check_data.py                        # every data set in its default place
    python data_scripts/check_data.py coco --data_root /data/coco --num_workers 8

"present" images decode; "missing" ones are listed in the annotations but have no file (dead Conceptual
Captions URLs, unpacked archives); "unreadable" ones have a file that does not decode (corrupted, truncated).
A data set whose directory or annotation file is absent is reported as such, in one line.  Exits with status
1 when a requested data set has no readable image.
"""

import argparse
import sys

from egg.zoo.discriminative_captioner.data import DATASETS, load_dataset
from egg.zoo.discriminative_captioner.data.images import unreadable_images
from egg.zoo.discriminative_captioner.errors import UsageError

SPLITS = ("train", "validation", "test")
REAL = sorted(name for name in DATASETS if name != "synthetic")


def check(dataset_name, data_root=None, num_workers=0):
    """``{split: {"listed", "present", "missing", "unreadable"}}`` of one data set (splits sharing images once)."""
    dataset = load_dataset(argparse.Namespace(dataset=dataset_name, data_root=data_root))
    report, seen = {}, {}
    for split in SPLITS:
        source = dataset.cache_split(split)
        if source not in seen:
            images = dataset.split(split)
            unreadable = len(unreadable_images(images.images, num_workers, desc=f"{dataset_name} {split}"))
            seen[source] = {"listed": len(images) + images.missing, "present": len(images) - unreadable,
                            "missing": images.missing, "unreadable": unreadable}  # fmt: skip
        report[split] = seen[source]
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "datasets", nargs="*", metavar="DATASET", help=f"data sets to check: {', '.join(REAL)} (default: all)"
    )
    parser.add_argument("--data_root", default=None, help="directory of the data set (only with one data set)")
    parser.add_argument("--num_workers", type=int, default=0, help="processes decoding images")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.datasets) - set(REAL))
    if unknown:
        parser.error(f"unknown data set {', '.join(unknown)}; choose from {', '.join(REAL)}")
    args.datasets = args.datasets or REAL
    if args.data_root and len(args.datasets) != 1:
        parser.error("--data_root needs exactly one data set")
    failed = False
    print(f"{'data set':<22} {'split':<11} {'listed':>9} {'present':>9} {'missing':>9} {'unreadable':>10}")
    for name in args.datasets:
        try:
            report = check(name, args.data_root, args.num_workers)
        except UsageError as error:
            print(f"{name:<22} not available: {error}")
            failed = failed or bool(args.data_root)
            continue
        for split, counts in report.items():
            print(f"{name:<22} {split:<11} {counts['listed']:>9} {counts['present']:>9} {counts['missing']:>9} "
                  f"{counts['unreadable']:>10}")  # fmt: skip
        failed = failed or not any(counts["present"] for counts in report.values())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
