"""What each tracker wrote, read back from its own files with nothing of the plugin's: TensorBoard's event files
(TensorBoard's own reader), an offline wandb run (its record log, read here; wandb ships no reader) and trackio's
local store (its SQLite database)."""

import glob
import json
import os
import sqlite3
import struct


def tensorboard_scalars(directory):
    """``{tag: {step: value}}`` of the event files in ``directory``."""
    accumulator = _accumulator(directory)
    return {tag: {event.step: event.value for event in accumulator.Scalars(tag)}
            for tag in accumulator.Tags()["scalars"]}  # fmt: skip


def tensorboard_texts(directory):
    """``{tag: {step: text}}`` of the text summaries in ``directory``."""
    accumulator = _accumulator(directory)
    return {tag: {event.step: event.tensor_proto.string_val[0].decode() for event in accumulator.Tensors(tag)}
            for tag in accumulator.Tags()["tensors"]}  # fmt: skip


def tensorboard_image_counts(directory):
    """``{tag: {step: images}}`` of the image summaries in ``directory``."""
    accumulator = _accumulator(directory)
    counts = {}
    for tag in accumulator.Tags()["images"]:
        for event in accumulator.Images(tag):
            counts.setdefault(tag, {})[event.step] = counts.get(tag, {}).get(event.step, 0) + 1
    return counts


def _accumulator(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(directory, size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    accumulator.Reload()
    return accumulator


BLOCK = 32768  # wandb's record log is LevelDB's log format: 32 KiB blocks of (crc32, length, type) records
HEADER = 7


def wandb_records(path):
    """The protobuf ``Record`` messages of a ``run-<id>.wandb`` file."""
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B", f"{path} is not a wandb record log"
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < HEADER:  # a block's tail too short for a record header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        chunk = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind in (1, 2):  # full, first
            pending = chunk
        elif kind in (3, 4):  # middle, last
            pending += chunk
        if kind in (1, 4) and pending:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def wandb_runs(directory):
    """``[(run_id, history rows, config)]`` of each offline run under ``directory/wandb``, in time order."""
    runs = []
    for path in sorted(glob.glob(os.path.join(directory, "wandb", "offline-run-*", "run-*.wandb"))):
        history, config = [], {}
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.history.item})  # fmt: skip
            elif kind == "config":
                config.update({item.key: json.loads(item.value_json) for item in record.config.update})
            elif kind == "run":
                run_id = record.run.run_id
                config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        runs.append((run_id, history, config))
    return runs


def wandb_tables(directory):
    """``{file name: table}`` of the tables the offline runs under ``directory/wandb`` logged."""
    tables = {}
    pattern = os.path.join(directory, "wandb", "offline-run-*", "files", "media", "table", "**", "*.table.json")
    for path in glob.glob(pattern, recursive=True):
        with open(path) as f:
            tables[os.path.relpath(path, directory)] = json.load(f)
    return tables


def trackio_metrics(store, project):
    """``[(run_id, run_name, step, metrics)]`` of a trackio project's local database, in the order logged."""
    with sqlite3.connect(os.path.join(store, f"{project}.db")) as db:
        rows = db.execute("SELECT run_id, run_name, step, metrics FROM metrics ORDER BY id").fetchall()
    return [(run_id, name, step, json.loads(metrics)) for run_id, name, step, metrics in rows]


def trackio_configs(store, project):
    with sqlite3.connect(os.path.join(store, f"{project}.db")) as db:
        return {name: json.loads(config) for name, config in db.execute("SELECT run_name, config FROM configs")}
