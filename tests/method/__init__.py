"""The training method: the game, rewards, baselines and advantages, the KL, micro-batches, schedules, ablations."""
