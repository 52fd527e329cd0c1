"""Reports, per data set and split, how many listed images are present, missing or unreadable.

    python data_scripts/check_data.py                        # every real data set in its default place
    python data_scripts/check_data.py coco --data_root /data/coco --num_workers 8
    python data_scripts/check_data.py --verify_cache [DIR]   # the frozen-feature caches' checksums

"present" images decode; "missing" ones are listed in the annotations but have no file (dead Conceptual
Captions URLs, unpacked archives); "unreadable" ones have a file that does not decode (corrupted, truncated).
Any data set that cannot be read (no directory, no or a malformed annotation file) is reported in one line.

--verify_cache reads every feature cache under DIR (default: the default --feature_cache_dir,
~/.cache/discriminative_captioner/features) and checks each file's size and sha256 against the cache's
manifest: one line per cache, ok / partial (the next run resumes it) / stale (the next run rebuilds it) /
damaged (which file, what differs, and how to rebuild it).

Exit status:
  with --verify_cache: 1 when any cache is damaged; else 0.
  with data sets named: 1 when any of them is absent, cannot be read or has no readable image; else 0.
  with none named (every real data set, in $DISCRITUNE_DATA/<directory>): data sets whose directory does not
  exist are reported as "not downloaded" and do not fail; 1 when one whose directory exists cannot be read
  or has no readable image, or when none is there at all; else 0.
"""

import argparse
import os
import sys

from egg.zoo.discriminative_captioner.data import DATASETS, load_dataset
from egg.zoo.discriminative_captioner.data.files import DEFAULT_DIRECTORIES, data_base, default_data_root
from egg.zoo.discriminative_captioner.data.images import unreadable_images
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

SPLITS = ("train", "validation", "test")
REAL = [name for name in DATASETS if name in DEFAULT_DIRECTORIES]  # the built-in synthetic worlds have no directory
ROW = "{:<22} {:<11} {:>9} {:>9} {:>9} {:>10}"


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


def one_line(error):
    """An exception as one line: a UsageError's message says how to fix it; anything else also names its type."""
    text = " ".join(str(error).split())
    return text if isinstance(error, UsageError) else f"{type(error).__name__}: {text}"


def report_dataset(name, data_root, num_workers, required):
    """Prints the rows of one data set; returns True when it counts as a failure.

    ``required`` (named on the command line) makes an absent data set a failure; otherwise an absent directory is
    only reported.
    """
    if not required and not os.path.isdir(default_data_root(name)):
        print(f"{name:<22} not downloaded: {default_data_root(name)} does not exist "
              f"(python data_scripts/download.py {name})")  # fmt: skip
        return False
    try:
        report = check(name, data_root, num_workers)
    except Exception as error:  # a broken data set must not hide the others behind a traceback
        print(f"{name:<22} not available: {one_line(error)}")
        return True
    for split, counts in report.items():
        print(ROW.format(name, split, *(counts[key] for key in ("listed", "present", "missing", "unreadable"))))
    if not any(counts["present"] for counts in report.values()):
        print(f"{name:<22} has no readable image")
        return True
    return False


def verify_caches(root=None):
    """Prints one line per feature cache under ``root`` (default: the default feature cache directory); returns
    True when any of them is damaged."""
    import time

    from egg.zoo.discriminative_captioner.data import feature_cache  # imports torch: only on this path

    root = root or feature_cache.default_feature_cache_dir()
    caches = []
    for directory, subdirectories, files in os.walk(root):
        if "manifest.json" in files or "building.json" in files:
            caches.append(directory)
            subdirectories.clear()  # a cache holds no other cache
    if not caches:
        print(f"no feature cache under {root}")
        return False
    damaged, size, started = False, 0, time.perf_counter()
    for directory in sorted(caches):
        status = feature_cache.verify_cache(directory)
        size += sum(entry.stat().st_size for entry in os.scandir(directory) if entry.is_file())
        if status.startswith("damaged"):
            damaged = True
            status += "; " + feature_cache.rebuild_advice(directory)
        print(f"{os.path.relpath(directory, root):<40} {status}", flush=True)
    seconds = time.perf_counter() - started
    print(f"{len(caches)} feature cache{'s' * (len(caches) > 1)} under {root}: {size / 1e6:.1f} MB read in "
          f"{seconds:.1f} s")  # fmt: skip
    return damaged


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.replace("``", ""),  # reST quotes, not for a terminal
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "datasets", nargs="*", metavar="DATASET", help=f"data sets to check: {', '.join(REAL)} (default: all)"
    )
    parser.add_argument("--data_root", default=None, help="directory of the data set (only with one data set)")
    parser.add_argument("--num_workers", type=int, default=0, help="processes decoding images (default: 0)")
    parser.add_argument(
        "--verify_cache",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="instead of the data sets, verify the checksums of every feature cache under DIR "
        "(default: ~/.cache/discriminative_captioner/features)",
    )
    args = parser.parse_args(argv)
    if args.verify_cache is not None:
        if args.datasets or args.data_root:
            parser.error("--verify_cache checks the feature caches only: name no data set and no --data_root")
        sys.exit(1 if verify_caches(args.verify_cache or None) else 0)
    unknown = sorted(set(args.datasets) - set(REAL))
    if unknown:
        parser.error(f"unknown data set {', '.join(unknown)}; choose from {', '.join(REAL)}")
    if args.data_root and len(args.datasets) != 1:
        parser.error("--data_root needs exactly one data set")
    required = bool(args.datasets)
    names = args.datasets or REAL
    print(ROW.format("data set", "split", "listed", "present", "missing", "unreadable"))
    failures = [name for name in names if report_dataset(name, args.data_root, args.num_workers, required)]
    if not required and all(not os.path.isdir(default_data_root(name)) for name in names):
        print(f"no data set found under {data_base()} ($DISCRITUNE_DATA): "
              f"python data_scripts/download.py all prints what to download")  # fmt: skip
        failures = names
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
