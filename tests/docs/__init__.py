"""The documentation site and the README."""
