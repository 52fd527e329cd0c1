"""Runs and what keeps them safe: training end to end, resume, preemption, locks, failed writes, data-parallel runs,
host memory."""
