"""The repository's root, for the tests that run its scripts, benchmarks and game files, or read its documents."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(*path):
    """A script of the repository (``path`` under ROOT) loaded as a module, so that a test can call or replace
    its functions."""
    import importlib.util

    name = os.path.splitext(path[-1])[0]
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, *path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
