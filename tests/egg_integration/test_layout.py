"""The package imports as egg.zoo.discriminative_captioner with and without facebookresearch EGG.

Without EGG, ``egg`` and ``egg.zoo`` are namespace packages and the bundled core runs.  With EGG, the plugin
sits inside EGG's ``egg/zoo/`` and uses ``egg.core``.  CI has no EGG, so the second layout is built from a
stand-in: an ``egg`` package whose ``egg.core`` is a copy of the bundled core.  Set ``EGG_SOURCE`` to an EGG
checkout (and run under a Python with EGG's dependencies) to check the real one instead.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from egg.zoo.discriminative_captioner import core as plugin_core

from ..egg_layouts import EGG_SOURCES, egg_tree


def test_without_egg_the_namespace_layout_uses_the_bundled_core():
    if importlib.util.find_spec("egg.core") is not None:
        pytest.skip("facebookresearch EGG is installed here")
    import egg

    assert getattr(egg, "__file__", None) is None  # a namespace package
    assert not plugin_core.USING_EGG
    assert plugin_core.core.__name__ == "egg.zoo.discriminative_captioner.egg_compat"


@pytest.mark.parametrize("egg_source", EGG_SOURCES)
def test_inside_egg_the_plugin_uses_egg_core_and_trains(egg_source, tmp_path, tiny_run_args):
    root = egg_tree(tmp_path / "site", egg_source)
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    check = "import egg.zoo.discriminative_captioner.core as c; print(c.USING_EGG, c.core.__file__, c.__file__)"
    out = subprocess.run([sys.executable, "-c", check], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    using_egg, core_file, plugin_file = out.stdout.split()
    assert using_egg == "True"
    assert core_file.startswith(str(root / "egg" / "core")) and plugin_file.startswith(str(root / "egg" / "zoo"))

    run = subprocess.run([sys.executable, "-m", "egg.zoo.discriminative_captioner.train", *tiny_run_args,
                          "--checkpoint_dir", str(tmp_path / "run")],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    modes = [json.loads(line)["mode"] for line in run.stdout.splitlines() if line.startswith("{")]
    assert modes == ["test", "train", "test", "final"]
    assert (tmp_path / "run" / "final.tar").exists()
