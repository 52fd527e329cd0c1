"""The installed plugin imports next to an EGG checkout installed in editable mode (``pip install -e``).

Such an ``egg`` is a regular package whose ``egg.zoo`` looks only inside the checkout, so the plugin installed in
site-packages' ``egg/zoo/`` needs the finder its ``.pth`` file registers.  The checkout is a stand-in (``egg.core`` a
copy of the bundled core), or the real one when ``EGG_SOURCE`` is set.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import egg.zoo.discriminative_captioner as plugin

from ..egg_layouts import EGG_SOURCES
from ..paths import ROOT


def egg_checkout(root, egg_source):
    """An EGG checkout without the plugin: what ``pip install -e`` puts on the path."""
    if egg_source:
        shutil.copytree(Path(egg_source) / "egg", root / "egg")
    else:
        (root / "egg" / "zoo").mkdir(parents=True)
        (root / "egg" / "__init__.py").write_text("")
        (root / "egg" / "zoo" / "__init__.py").write_text("")
        shutil.copytree(Path(plugin.__file__).parent / "egg_compat", root / "egg" / "core")
    return root


@pytest.mark.parametrize("egg_source", EGG_SOURCES)
def test_the_installed_plugin_imports_next_to_an_editable_egg(egg_source, tmp_path):
    site = tmp_path / "site-packages"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site)]
    install = subprocess.run(pip + [ROOT], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    assert (site / "egg_zoo_discriminative_captioner.pth").exists()
    checkout = egg_checkout(tmp_path / "EGG", egg_source)
    # The checkout first on the path (as its editable install puts it), then the fresh install's directory,
    # processed as a site directory; this development environment's own editable finder for the plugin is removed.
    check = ("import sys, site; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in "
             f"getattr(f, '__module__', '')]; site.addsitedir({str(site)!r}); "
             "import egg.zoo, egg.zoo.discriminative_captioner.core as c; "
             "print(c.USING_EGG, egg.zoo.__file__, c.__file__)")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(checkout), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", check], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    using_egg, zoo_file, plugin_file = done.stdout.split()
    # Found through a finder: the fresh install's, or, where the plugin is installed (not editable) in this
    # environment, as CI does, the finder of that install, which a .pth file registered first.
    installed = (str(site), sysconfig.get_paths()["purelib"])
    assert using_egg == "True" and zoo_file.startswith(str(checkout)) and plugin_file.startswith(installed)
