"""Finds ``egg.zoo.discriminative_captioner`` in site-packages when another ``egg`` package owns ``egg.zoo``.

Installed next to facebookresearch EGG from a checkout (``pip install -e``), ``egg`` is EGG's regular package, whose
``egg.zoo`` only looks inside the checkout, so the plugin installed in site-packages' ``egg/zoo/`` would not be
found.  A ``.pth`` file imports this module at start-up; the finder it appends to ``sys.meta_path`` is asked only
after the usual ones found nothing, and looks for the plugin beside this file.
"""

import importlib.machinery
import os
import sys

PLUGIN = "egg.zoo.discriminative_captioner"
LOCATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "egg", "zoo")


class PluginFinder:
    """A meta path finder for the plugin package only (its subpackages are found through its ``__path__``)."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != PLUGIN:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [LOCATION])


if not any(finder is PluginFinder or getattr(finder, "__name__", "") == "PluginFinder" for finder in sys.meta_path):
    sys.meta_path.append(PluginFinder)
