"""Times the default ``train`` run on the built-in synthetic world: first use (building the cached world) and
with the cache, against this project's budgets for the default run on a 2-core CPU: 6 minutes on first use, 3
with the cache.

    python benchmarks/default_run.py [--keep DIR]

Both runs go through the real command line in a subprocess; the printed ratios are run time / budget (below 1
meets the budget) and cached / first use.  The two runs must also log the same final test score.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

BUDGETS = {"first use": 360.0, "cached": 180.0}


def timed_run(cache_dir, run_dir):
    command = [sys.executable, "-m", "egg.zoo.discriminative_captioner.train", "--cache_dir", cache_dir,
               "--checkpoint_dir", run_dir]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    final = [json.loads(line) for line in result.stdout.splitlines() if '"mode": "final"' in line][-1]
    return seconds, final


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", default=None, help="directory to keep the cache and runs in (default: a temp dir)")
    args = parser.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="discritune-bench-")
    cache_dir = os.path.join(root, "cache")
    results = {}
    for name in BUDGETS:
        results[name] = timed_run(cache_dir, os.path.join(root, name.replace(" ", "_")))
    for name, (seconds, final) in results.items():
        print(f"{name:>9}: {seconds:6.1f} s  ratio to the {BUDGETS[name]:.0f} s budget {seconds / BUDGETS[name]:.2f}"
              f"  final test P@1 {final['acc']:.4f}")  # fmt: skip
    first, cached = results["first use"], results["cached"]
    print(f"cached / first use: {cached[0] / first[0]:.2f}")
    print("same final score with and without the cache:", first[1]["acc"] == cached[1]["acc"])


if __name__ == "__main__":
    main()
