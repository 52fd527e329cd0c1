"""The data: readers, samplers, the frozen-feature cache, hard distractors, the data scripts, held-out validation."""
