"""The plugin inside EGG's ``egg/zoo/``, as installing it next to EGG gives: ``egg_tree`` builds that layout over a
stand-in (an ``egg`` package whose ``egg.core`` is a copy of the bundled core) or over the EGG checkout that
``EGG_SOURCE`` names; ``EGG_SOURCES`` parametrises a test over both (the second skipped while it is unset)."""

import importlib.resources
import os
import shutil
from pathlib import Path

import pytest

import egg.zoo.discriminative_captioner as plugin

PLUGIN_SOURCE = Path(plugin.__file__).parent
GAMES = importlib.resources.files("egg.zoo.discriminative_captioner.game_files")  # the repository's games/


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
