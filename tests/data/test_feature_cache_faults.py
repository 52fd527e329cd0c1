"""The frozen-feature cache under faults: builds killed with SIGKILL at many points, truncated and altered shards.

The kill test runs this file as a script (``python -m tests.data.test_feature_cache_faults ROOT``): one process
imports torch once, then forks a child per build, which a profile hook kills with SIGKILL at its k-th function call
in the cache's code (``feature_cache.py``, ``feature_cache_build.py``, ``runtime/atomic.py``, ``shutil``): between
any two of its writes, in the middle of a shard's write, while it removes a stale cache, before the manifest.
Another forked child resumes each killed build; the test compares every resumed directory with a cache built in
one go, file by file and byte by byte.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import traceback

import pytest
import torch

from egg.zoo.discriminative_captioner.data import feature_cache, feature_cache_build
from egg.zoo.discriminative_captioner.data.feature_cache import FeatureCache, verify_cache
from egg.zoo.discriminative_captioner.runtime import atomic
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

from ..paths import ROOT
from ..tiny_cache import N_IMAGES, OTHER_KEY, build, files_of

# --- the driver: builds killed at the k-th call, run as a script -------------------------------------------------

TRACED = {feature_cache.__file__, feature_cache_build.__file__, atomic.__file__, shutil.__file__}


def _profile(kill_at=None, labels=None):
    """Counts the calls made in the cache's code (``labels`` records them); SIGKILLs this process at the
    ``kill_at``-th."""
    count = 0

    def hook(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call") and frame.f_code.co_filename in TRACED:
            count += 1
            if labels is not None:
                labels.append(frame.f_code.co_name if event == "call" else "c:" + getattr(arg, "__name__", "?"))
            if count == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    sys.setprofile(hook)


def _in_child(work, *args, **kwargs):
    """Runs ``work(*args, **kwargs)`` in a forked child; returns how it ended: ``"exit 0"``, ``"exit 1"`` or
    ``"signal N"``."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            work(*args, **kwargs)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.setprofile(None)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"


def _build_traced(directory, template=None, rebuild=False, kill_at=None, labels=None):
    """A build into ``directory`` (a copy of ``template`` first, not traced), killed at its ``kill_at``-th call."""
    if template is not None:
        shutil.copytree(template, directory)
    _profile(kill_at, labels)
    build(directory, rebuild=rebuild)
    sys.setprofile(None)


def _count_calls(root, scenario, template):
    """The labels of a build's calls in the cache's code, in order (counted in a child, as they are killed)."""
    labels_file = os.path.join(root, f"labels-{scenario}.json")

    def work():
        labels = []
        _build_traced(os.path.join(root, f"counting-{scenario}"), template, scenario == "rebuild", labels=labels)
        with open(labels_file, "w") as f:
            json.dump(labels, f)

    assert _in_child(work) == "exit 0"
    with open(labels_file) as f:
        return json.load(f)


def _kill_points(labels, rng, evenly=4, writes=3):
    """Calls to kill at: spread over the whole build, a few writes, and the points between its phases."""
    n = len(labels)
    at = {label: [k for k, name in enumerate(labels, 1) if name == label] for label in set(labels)}
    renames = at["c:replace"]  # ids.txt, sources.txt, building.json, then each shard's record and shard, manifest
    points = {1 + round(i * (n - 1) / (evenly - 1)) for i in range(evenly)}
    points |= set(rng.sample(at.get("write", []) + at["c:write"], writes))  # mid-write, shards and records
    points |= {renames[0], renames[2], renames[2] + 1}  # the start: before ids.txt, before and after building.json
    if at.get("c:unlink"):  # removing the cache that was there
        points.add(at["c:unlink"][len(at["c:unlink"]) // 2])
    manifest_write = max(k for k in at["c:write"] if k < renames[-1])
    points |= {renames[-2] + 1, manifest_write, renames[-1], renames[-1] + 1}  # every shard done, the manifest
    return sorted(points)


def drive(root, seed=0):
    """Kills builds in three scenarios (an empty directory; a stale cache to replace; ``rebuild`` over a complete
    cache), resumes each, and writes ``results.json`` describing every run."""
    torch.set_num_threads(1)  # no thread pool in the parent of the forks
    rng = random.Random(seed)
    assert _in_child(build, os.path.join(root, "whole")) == "exit 0"
    assert _in_child(build, os.path.join(root, "stale"), OTHER_KEY) == "exit 0"
    templates = {"empty": None, "stale": os.path.join(root, "stale"), "rebuild": os.path.join(root, "whole")}
    results = []
    for scenario, template in templates.items():
        labels = _count_calls(root, scenario, template)
        for k in _kill_points(labels, rng):
            directory = os.path.join(root, f"{scenario}-{k}")
            ended = _in_child(_build_traced, directory, template, scenario == "rebuild", kill_at=k)
            after_kill = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
            second = None
            if k % 4 == 0:  # the resumed build killed too, at a random point of its own
                second = rng.randrange(1, len(labels))
                second = [second, _in_child(_build_traced, directory, kill_at=second)]
            resumed = _in_child(build, directory)
            results.append({"directory": directory, "scenario": scenario, "k": k, "of": len(labels),
                            "label": labels[k - 1], "ended": ended, "after_kill": after_kill,
                            "second_kill": second, "resumed": resumed})  # fmt: skip
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


def test_a_build_killed_at_any_point_resumes_to_the_bytes_of_a_build_in_one_go(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tests.data.test_feature_cache_faults", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "results.json") as f:
        runs = json.load(f)
    reference = files_of(tmp_path / "whole")
    assert "manifest.json" in reference and sum(name.startswith("features-") for name in reference) == 10
    for run in runs:
        what = f"{run['scenario']} build killed at call {run['k']} of {run['of']} ({run['label']})"
        assert run["ended"] == f"signal {signal.SIGKILL}", what
        assert run["resumed"] == "exit 0", what
        resumed = files_of(run["directory"])
        assert sorted(resumed) == sorted(reference), what
        assert [name for name in reference if resumed[name] != reference[name]] == [], what
    # the kills landed at varied points: mid-write (a temporary file left behind), before the manifest, early
    assert len(runs) >= 30 and {run["scenario"] for run in runs} == {"empty", "stale", "rebuild"}
    assert any(name.startswith("partial-") for run in runs for name in run["after_kill"])
    assert any("features-00009.npy" in run["after_kill"] and "manifest.json" not in run["after_kill"] for run in runs)
    assert any(not any(name.startswith("features-") for name in run["after_kill"]) for run in runs)
    assert {"write", "c:write", "c:replace"} <= {run["label"] for run in runs}, [run["label"] for run in runs]
    assert any(run["second_kill"] and run["second_kill"][1] == f"signal {signal.SIGKILL}" for run in runs)


# --- damaged shards -----------------------------------------------------------------------------------------------


def check_data(argv, capsys):
    """``check_data.py``'s exit status and printed lines."""
    import runpy

    main = runpy.run_path(os.path.join(ROOT, "data_scripts", "check_data.py"))["main"]
    with pytest.raises(SystemExit) as status:
        main(argv)
    return status.value.code, capsys.readouterr().out.splitlines()


@pytest.fixture
def caches(tmp_path):
    """Two healthy caches under a feature cache root, laid out as ``<dataset>/<split>/<role>``."""
    root = tmp_path / "features"
    directories = [str(root / "tiny-0123456789" / "train" / role) for role in ("captioner", "retriever")]
    for directory in directories:
        build(directory)
    return str(root), directories


def test_a_healthy_cache_verifies_ok(caches, capsys):
    root, directories = caches
    status, lines = check_data(["--verify_cache", root], capsys)
    assert status == 0 and verify_cache(directories[0]) == "ok"
    assert [line.split() for line in lines[:2]] == [["tiny-0123456789/train/captioner", "ok"],
                                                    ["tiny-0123456789/train/retriever", "ok"]]  # fmt: skip
    assert lines[2].startswith(f"2 feature caches under {root}: ")


def test_a_truncated_shard_is_refused_when_the_cache_opens_in_one_line_with_the_rebuild_command(caches, capsys):
    root, (directory, healthy) = caches
    shard = os.path.join(directory, "features-00002.npy")
    size = os.path.getsize(shard)
    os.truncate(shard, size - 100)
    with pytest.raises(UsageError) as error:
        build(directory)  # a run finding its cache: the manifest matches, the shard's size does not
    message = str(error.value)
    assert "\n" not in message and "features-00002.npy" in message
    assert f"has {size - 100} bytes, the manifest records {size}" in message
    assert "--rebuild" in message and f"rm -r {directory}" in message
    with pytest.raises(UsageError, match="features-00002.npy"):
        FeatureCache(directory)
    status, lines = check_data(["--verify_cache", root], capsys)
    assert status == 1 and lines[0].split()[:2] == ["tiny-0123456789/train/captioner", "damaged:"]
    assert "features-00002.npy" in lines[0] and "--rebuild" in lines[0] and lines[1].split()[1] == "ok"
    build(directory, rebuild=True)
    assert files_of(directory) == files_of(healthy)


def test_a_changed_byte_passes_the_open_and_is_found_by_verify_cache(caches, capsys):
    root, (directory, healthy) = caches
    shard = os.path.join(directory, "features-00004.npy")
    with open(shard, "r+b") as f:
        f.seek(os.path.getsize(shard) - 7)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x10]))
    cache = build(directory)  # same size: opening it stays instant and does not notice
    assert len(cache) == N_IMAGES
    status, lines = check_data(["--verify_cache", root], capsys)
    assert status == 1 and "damaged: features-00004.npy has sha256" in lines[0]
    assert "--rebuild" in lines[0] and f"rm -r {directory}" in lines[0] and lines[1].endswith(" ok")
    build(directory, rebuild=True)
    assert check_data(["--verify_cache", root], capsys)[0] == 0


def test_partial_and_older_caches_are_reported_without_failing(caches, tmp_path, capsys):
    root, (partial, older) = caches
    os.remove(os.path.join(partial, "manifest.json"))
    manifest = json.loads(open(os.path.join(older, "manifest.json")).read())
    manifest["key"]["format_version"] = 1
    del manifest["files"]
    with open(os.path.join(older, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    status, lines = check_data(["--verify_cache", root], capsys)
    assert status == 0
    assert "partial (10 of 10 shards built; the next run resumes it)" in lines[0]
    assert "stale: format version 1" in lines[1]
    assert check_data(["--verify_cache", str(tmp_path / "nothing")], capsys) == (0, [
        f"no feature cache under {tmp_path / 'nothing'}"])  # fmt: skip


if __name__ == "__main__":
    drive(sys.argv[1])
