"""Names that load their module on first use, so that the option parser reads the registries without torch.

The registries (``captioners.CAPTIONERS``, ``retrievers.CLIP_BACKENDS``, ``data.DATASETS``) map a name to
``(module, function)``; ``load`` imports it when it is chosen.  ``exports`` gives a package a PEP 562
``__getattr__`` that imports each public class from its module when it is first asked for.
"""

import importlib


def load(package, entry):
    """The function ``entry = (module, name)`` names, the module relative to ``package``."""
    module_name, name = entry
    return getattr(importlib.import_module(module_name, package=package), name)


def exports(package, names):
    """A module ``__getattr__`` for ``package``: ``names`` maps each name to the module that defines it."""

    def __getattr__(name):
        if name in names:
            return load(package, (names[name], name))
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
