"""The run machinery: files written atomically, locks, checkpoints, processes, precision, memory, downloads."""
