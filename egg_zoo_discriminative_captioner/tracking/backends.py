"""The trackers of ``--report_to``: TensorBoard, Weights & Biases and trackio behind one small interface, so that
each gets the same values at the same steps (the run's optimizer updates).

Each tracker is imported when its run starts (none is needed to import this package).  ``start`` returns the id
that continues the same tracker run when the run resumes (saved in ``RUN/trackers.json``).
"""

import json
import netrc
import os
import socket
import sys
from urllib.parse import urlparse

import numpy as np


class TensorBoardTracker:
    """Event files in ``RUN/tensorboard``: scalars, the config and the caption tables as text, their images."""

    name = "tensorboard"

    def __init__(self, directory):
        self.directory = os.path.join(directory, "tensorboard")
        self.writer = None

    def start(self, config, run_name=None, run_id=None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=self.directory)
        if run_id is None:  # a resumed run's config is in its first launch's events
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)
        return "tensorboard"

    def log(self, values, step):
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_table(self, key, table, step):
        self.writer.add_text(key, table.markdown(), step)
        for column in table.image_columns:
            images = [image for image in table.images(column) if image is not None]
            if images:
                self.writer.add_images(f"{key}/{column}", _stacked(images), step, dataformats="NHWC")
        self.writer.flush()

    def finish(self):
        if self.writer is not None:
            self.writer.close()


def _stacked(images):
    """PIL images padded to one size, as one uint8 array ``[N, H, W, 3]``."""
    height, width = max(image.height for image in images), max(image.width for image in images)
    batch = np.zeros((len(images), height, width, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        batch[i, : image.height, : image.width] = np.asarray(image.convert("RGB"))
    return batch


class WandbTracker:
    """A Weights & Biases run, in ``RUN/wandb`` (offline when there is no network or no API key)."""

    name = "wandb"

    def __init__(self, directory, project):
        self.directory = directory
        self.project = os.environ.get("WANDB_PROJECT", project)
        self.run = None

    def start(self, config, run_name=None, run_id=None):
        import wandb

        mode = wandb_mode()
        if self.directory:
            os.makedirs(self.directory, exist_ok=True)
        self.run = wandb.init(project=self.project, name=run_name, id=run_id,
                              resume="allow", dir=self.directory, config=config, mode=mode)  # fmt: skip
        if mode == "offline":
            where = os.path.dirname(self.run.dir)  # .../wandb/offline-run-<time>-<id>
            print(f"wandb: offline ({_offline_reason()}): the run is written to {where}; upload it with: wandb sync "
                  f"{where}", file=sys.stderr, flush=True)  # fmt: skip
        return self.run.id

    def log(self, values, step):
        self.run.log(values, step=step)

    def log_table(self, key, table, step):
        import wandb

        images = set(table.image_columns)
        rows = [[wandb.Image(cell) if name in images and cell is not None else cell
                 for name, cell in zip(table.columns, row)] for row in table.rows]  # fmt: skip
        self.run.log({key: wandb.Table(columns=table.columns, data=rows)}, step=step)

    def finish(self):
        if self.run is not None:
            self.run.finish()


def _api_key():
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(_wandb_host()) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _wandb_host():
    return urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname


def _reachable(host, port=443, timeout=3.0):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _offline_reason():
    if os.environ.get("WANDB_MODE"):
        return f"WANDB_MODE={os.environ['WANDB_MODE']}"
    return "no API key" if not _api_key() else f"{_wandb_host()} cannot be reached"


def wandb_mode():
    """WANDB_MODE when set; otherwise online when an API key is known and the server can be reached, offline
    when not (an offline run waits for ``wandb sync`` instead of failing or retrying)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if _api_key() and _reachable(_wandb_host()) else "offline"


class TrackioTracker:
    """A trackio run in its local store (``TRACKIO_DIR``, default ``~/.cache/huggingface/trackio``), or in the
    Space that ``TRACKIO_SPACE_ID`` names."""

    name = "trackio"

    def __init__(self, project):
        self.project = project
        self.run = None

    def start(self, config, run_name=None, run_id=None):
        import trackio

        self.run = trackio.init(project=self.project, name=run_id or run_name, config=config,
                                resume="allow" if run_id else "never", embed=False)  # fmt: skip
        return self.run.name

    def log(self, values, step):
        import trackio

        trackio.log(values, step=step)

    def log_table(self, key, table, step):
        import trackio

        images = set(table.image_columns)
        rows = [[trackio.Image(np.asarray(cell)) if name in images and cell is not None else cell
                 for name, cell in zip(table.columns, row)] for row in table.rows]  # fmt: skip
        trackio.log({key: trackio.Table(columns=table.columns, data=rows)}, step=step)

    def finish(self):
        import trackio

        if self.run is not None:
            trackio.finish()


def build_trackers(names, directory, project):
    """The trackers ``names`` (``--report_to``; "none" is none) of a run in ``directory`` (None: no run
    directory; TensorBoard needs one, which the options check)."""
    trackers = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(directory))
        elif name == "wandb":
            trackers.append(WandbTracker(directory, project))
        elif name == "trackio":
            trackers.append(TrackioTracker(project))
    return trackers
