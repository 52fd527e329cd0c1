"""The run's options, importable without torch: parsed in layers, checked, and frozen into one typed config."""
