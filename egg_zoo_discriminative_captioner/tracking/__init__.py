"""Watching a run: trackers (``--report_to``), the update-by-update log and caption tables (``RunTracker``)."""

from .backends import build_trackers
from .callback import RunTracker

__all__ = ["RunTracker", "build_trackers", "run_tracker"]


def run_tracker(opts, game, train_set, validation_set, updates=0):
    """The leader's ``RunTracker`` of a training run (``updates``: optimizer updates before this launch)."""
    directory = opts.checkpoint_dir
    trackers = build_trackers([name for name in opts.report_to if name != "none"], directory, opts.tracker_project)
    context = opts.distributed_context
    return RunTracker(trackers, opts.saved_values(), directory, game, train_set.split, validation_set,
                      log_every=opts.log_every, captions_every=opts.log_captions_every,
                      table_images=opts.caption_table_images, update_freq=opts.update_freq,
                      per_image=opts.rollouts_per_image, world_size=context.world_size, updates=updates,
                      run_name=opts.run_name)  # fmt: skip
