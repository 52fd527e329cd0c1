"""The package imports as egg.zoo.discriminative_captioner with and without facebookresearch EGG.

Without EGG, ``egg`` and ``egg.zoo`` are namespace packages and the bundled core runs.  With EGG, the plugin
sits inside EGG's ``egg/zoo/`` and uses ``egg.core``.  CI has no EGG, so the second layout is built from a
stand-in: an ``egg`` package whose ``egg.core`` is a copy of the bundled core.  Set ``EGG_SOURCE`` to an EGG
checkout (and run under a Python with EGG's dependencies) to check the real one instead.
"""

import importlib.resources
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import egg.zoo.discriminative_captioner as plugin
from egg.zoo.discriminative_captioner import core as plugin_core

PLUGIN_SOURCE = Path(plugin.__file__).parent
GAMES = importlib.resources.files("egg.zoo.discriminative_captioner.game_files")  # the repository's games/


def test_without_egg_the_namespace_layout_uses_the_bundled_core():
    if importlib.util.find_spec("egg.core") is not None:
        pytest.skip("facebookresearch EGG is installed here")
    import egg

    assert getattr(egg, "__file__", None) is None  # a namespace package
    assert not plugin_core.USING_EGG
    assert plugin_core.core.__name__ == "egg.zoo.discriminative_captioner.egg_compat"


def egg_tree(root, egg_source):
    """An ``egg`` package with the plugin inside ``egg/zoo/``, as installing it next to EGG gives."""
    if egg_source:
        shutil.copytree(Path(egg_source) / "egg", root / "egg", dirs_exist_ok=True)
    else:
        (root / "egg" / "zoo").mkdir(parents=True)
        (root / "egg" / "__init__.py").write_text("")
        (root / "egg" / "zoo" / "__init__.py").write_text("")
        shutil.copytree(PLUGIN_SOURCE / "egg_compat", root / "egg" / "core")  # stand-in for egg.core
    target = root / "egg" / "zoo" / "discriminative_captioner"
    shutil.copytree(PLUGIN_SOURCE, target, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(str(GAMES), target / "game_files", ignore=shutil.ignore_patterns("__pycache__"),
                    dirs_exist_ok=True)  # fmt: skip
    return root


EGG_SOURCES = [
    pytest.param(None, id="stand-in"),
    pytest.param(
        os.environ.get("EGG_SOURCE"),
        id="EGG_SOURCE",
        marks=pytest.mark.skipif(not os.environ.get("EGG_SOURCE"), reason="EGG_SOURCE (an EGG checkout) is not set"),
    ),
]


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
