"""The plugin with and without facebookresearch EGG: the package layout, the bundled core, callbacks."""
