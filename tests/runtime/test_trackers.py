"""Trackers and caption tables: what TensorBoard, an offline wandb run and trackio's local store hold, read back
from their own files, equals the run's own logs (``log.jsonl``, ``updates.jsonl``, ``captions/``); a resumed run
continues the same tracker runs; the caption tables' ranks against a hand count; refusals in one line."""

import importlib.util
import json
import os

import pytest
import torch
from PIL import Image

from egg.zoo.discriminative_captioner import train
from egg.zoo.discriminative_captioner.game import Rollouts
from egg.zoo.discriminative_captioner.tracking.tables import training_table

from .. import train_runs
from ..egg_layouts import EGG_SOURCES, egg_tree
from ..refusals import refused as refused_call
from ..tracker_readers import (
    tensorboard_image_counts,
    tensorboard_scalars,
    tensorboard_texts,
    trackio_configs,
    trackio_metrics,
    wandb_runs,
    wandb_tables,
)

PROJECT = "tracked"
NOT_LOGGED = ("mode", "update", "epoch", "split")


def tracker_env(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WANDB_", "TRACKIO_"))}
    env.update(TRACKIO_DIR=str(tmp_path / "trackio"), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
               WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"), WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
               HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")  # fmt: skip
    return env


def run_args(tiny_run_args, run_dir, *extra):
    args = [arg if arg != "" else str(run_dir) for arg in tiny_run_args]  # --checkpoint_dir "" -> the run's
    return args + ["--n_epochs", "2", "--report_to", "tensorboard", "wandb", "trackio", "--tracker_project",
                   PROJECT, "--log_every", "1", "--log_captions_every", "2", "--caption_table_images", "2", *extra]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, world_cache):
    """One tiny two-epoch run logged to all three trackers: (run directory, trackio store, stderr)."""
    tmp_path = tmp_path_factory.mktemp("tracked")
    tiny = ["--synthetic_world", "tiny", "--cache_dir", world_cache, "--batch_size", "50", "--max_len", "6",
            "--num_beams", "2", "--checkpoint_dir", ""]  # fmt: skip
    run_dir = tmp_path / "run"
    done = train_runs.run(run_args(tiny, run_dir), tracker_env(tmp_path), cwd=tmp_path)
    return run_dir, tmp_path / "trackio", done.stderr


def expected_values(run_dir):
    """``{(tracker key, step): value}`` of the run's own logs: every update line, every epoch's and validation's
    line (at the updates done by then) and the final test's."""
    updates = lines(run_dir / "updates.jsonl")
    per_epoch = max(line["update"] for line in updates if line["epoch"] == 1)
    expected = {}
    for line in updates:
        step = line["update"]
        expected.update({(f"step/{key}", step): value for key, value in line.items() if key not in NOT_LOGGED})
    for line in lines(run_dir / "log.jsonl"):
        prefix = {"train": "train", "test": "validation", "final": "test"}[line["mode"]]
        step = line["epoch"] * per_epoch
        expected.update({(f"{prefix}/{key}", step): value for key, value in line.items() if key not in NOT_LOGGED})
    return expected


def caption_rows(run_dir, table):
    rows = []
    for path in sorted((run_dir / "captions").glob("epoch_*.jsonl")):
        rows += [row for row in lines(path) if row["table"] == table]
    return rows


def test_tensorboard_holds_the_logged_values_and_caption_tables(tracked_run):
    run_dir, _, _ = tracked_run
    scalars = tensorboard_scalars(str(run_dir / "tensorboard"))
    expected = expected_values(run_dir)
    assert {"step/grad_norm", "step/lr", "step/images_per_s", "train/acc", "validation/acc", "test/acc"} <= set(scalars)
    for (key, step), value in expected.items():
        assert scalars[key][step] == pytest.approx(value, rel=1e-6, abs=1e-7), (key, step)  # stored as float32
    assert sum(len(steps) for steps in scalars.values()) == len(expected)
    texts = tensorboard_texts(str(run_dir / "tensorboard"))
    images = tensorboard_image_counts(str(run_dir / "tensorboard"))
    for table in ("train", "validation"):
        rows = caption_rows(run_dir, table)
        assert rows
        for row in rows:
            assert f"| {row['image_id']} | {row['caption']} |" in texts[f"{table}/captions/text_summary"][row["update"]]
            assert images[f"{table}/captions/image"][row["update"]] == 1


def test_the_caption_tables_hold_what_the_run_logged(tracked_run):
    run_dir, _, _ = tracked_run
    train_rows = caption_rows(run_dir, "train")
    updates = sorted({row["update"] for row in train_rows})
    assert updates == list(range(2, updates[-1] + 1, 2)) and all(updates)  # every --log_captions_every 2
    assert all(len([row for row in train_rows if row["update"] == update]) == 2 for update in updates)
    assert all(row["target_rank"] >= 1 and isinstance(row["caption"], str) for row in train_rows)
    validation = caption_rows(run_dir, "validation")
    per_epoch = {}
    for row in validation:
        per_epoch.setdefault(row["epoch"], []).append(row["image_id"])
    assert sorted(per_epoch) == [0, 1, 2]  # before training and after each epoch
    assert per_epoch[0] == per_epoch[1] == per_epoch[2] and len(per_epoch[0]) == 2  # the same images each time


def test_the_offline_wandb_run_holds_the_logged_values_and_tables(tracked_run):
    run_dir, _, stderr = tracked_run
    assert "wandb: offline (no API key): the run is written to" in stderr
    [(run_id, history, config)] = wandb_runs(str(run_dir))
    assert json.loads((run_dir / "trackers.json").read_text())["wandb"] == run_id
    logged = {}
    for row in history:
        logged.update({(key, row["_step"]): value for key, value in row.items() if not key.startswith("_")})
    for (key, step), value in expected_values(run_dir).items():
        assert logged[(key, step)] == pytest.approx(value, rel=1e-12), (key, step)
    opts = json.loads((run_dir / "opts.json").read_text())
    assert config["dataset"] == "synthetic" and config["clip_model"] == opts["clip_model"]  # the resolved options
    tables = wandb_tables(str(run_dir))
    logged_captions = {row[table["columns"].index("caption")] for table in tables.values() for row in table["data"]}
    run_captions = {row["caption"] for table in ("train", "validation") for row in caption_rows(run_dir, table)}
    assert logged_captions == run_captions


def test_trackio_holds_the_logged_values_and_tables(tracked_run):
    run_dir, store, _ = tracked_run
    rows = trackio_metrics(str(store), PROJECT)
    assert len({run_id for run_id, *_ in rows}) == 1
    logged, captions = {}, set()
    for _, _, step, metrics in rows:
        for key, value in metrics.items():
            if isinstance(value, dict) and value.get("_type") == "trackio.table":
                captions |= {row["caption"] for row in value["_value"]}
            elif key != "timestamp":
                logged[(key, step)] = value
    for (key, step), value in expected_values(run_dir).items():
        assert logged[(key, step)] == pytest.approx(value, rel=1e-12), (key, step)
    assert captions == {row["caption"] for table in ("train", "validation") for row in caption_rows(run_dir, table)}
    [config] = trackio_configs(str(store), PROJECT).values()
    assert config["dataset"] == "synthetic"


def test_a_resumed_run_continues_the_same_tracker_runs(tmp_path, tiny_run_args):
    run_dir, env = tmp_path / "run", tracker_env(tmp_path)
    args = run_args(tiny_run_args, run_dir)
    code, _, stderr = train_runs.interrupt_mid_epoch(args, run_dir, env, cwd=tmp_path)
    assert code == 128 + 15, stderr[-2000:]
    ids = json.loads((run_dir / "trackers.json").read_text())
    stopped_at = max(line["update"] for line in lines(run_dir / "updates.jsonl"))
    train_runs.run(args + ["--load_from_checkpoint", str(run_dir / "latest.tar")], env, cwd=tmp_path)
    assert json.loads((run_dir / "trackers.json").read_text()) == ids
    runs = wandb_runs(str(run_dir))
    assert len(runs) == 2 and runs[0][0] == runs[1][0] == ids["wandb"]  # one wandb run, two launches
    resumed_steps = sorted({row["_step"] for row in runs[1][1]})
    assert resumed_steps[0] >= stopped_at - 1  # the second launch goes on from the checkpoint's updates
    metrics = trackio_metrics(str(tmp_path / "trackio"), PROJECT)
    assert {name for _, name, _, _ in metrics} == {ids["trackio"]}
    scalars = tensorboard_scalars(str(run_dir / "tensorboard"))
    total = max(line["update"] for line in lines(run_dir / "updates.jsonl"))
    assert set(scalars["step/reward"]) == set(range(1, total + 1))  # every update once, over both launches


def test_caption_table_ranks_and_ranked_first_images_against_a_hand_count():
    class Split:
        images = [Image.new("RGB", (200, 100), (25 * i, 0, 0)) for i in range(10)]
        ids = [f"img{i}" for i in range(10)]

    # two images (split indices 4 and 7), K = 2 captions each; columns: the batch's images 4, 7, then each
    # caption's own hard distractor (neighbour_index)
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.1], [0.3, 0.6, 0.7], [0.1, 0.2, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    aux = {"image_index": torch.tensor([4, 4, 7, 7]), "candidate_index": torch.tensor([4, 7]),
           "neighbour_index": torch.tensor([[2], [2], [9], [9]])}  # fmt: skip
    step = Rollouts(["a", "b", "c", "d"], labels, scores, torch.tensor([-1.0, -2.0, -3.0, -4.0]),
                    torch.tensor([0.5, -0.5, 0.5, -0.5]), aux)  # fmt: skip
    table = training_table(step, Split(), n_images=2, per_image=2)
    records = table.records()
    assert [r["target_rank"] for r in records] == [1, 2, 2, 2]  # 1 + the candidates scoring above the target
    assert [r["ranked_first_id"] for r in records] == ["img4", "img7", "img9", "img9"]
    assert [r["image_id"] for r in records] == ["img4", "img4", "img7", "img7"]
    assert [r["advantage"] for r in records] == [0.5, -0.5, 0.5, -0.5]
    assert len(training_table(step, Split(), n_images=1, per_image=2).records()) == 2
    ranked_first = table.images("ranked_first")
    assert ranked_first[2].size == (96, 48) and ranked_first[2].getpixel((0, 0)) == (225, 0, 0)  # img9's thumbnail


def refused(args, *fragments):
    return refused_call(lambda: train.main(args), *fragments)


def test_tracker_options_that_cannot_work_are_refused_in_one_line(tiny_run_args, monkeypatch):
    refused(tiny_run_args + ["--report_to", "tensorboard"], "--report_to tensorboard", "--checkpoint_dir")
    refused(tiny_run_args + ["--report_to", "none", "wandb"], "--report_to none")
    refused(tiny_run_args + ["--log_every", "-1"], "--log_every")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else
                        real_find_spec(name, *a))  # fmt: skip
    refused(tiny_run_args + ["--report_to", "trackio"], "needs the trackio package", 'pip install ".[tracking]"')


@pytest.mark.parametrize(
    "egg_source",
    [pytest.param(p.values[0], id=p.id, marks=p.marks) for p in EGG_SOURCES if p.id == "EGG_SOURCE"],
)
def test_tensorboard_tracker_on_facebookresearch_egg(egg_source, tmp_path, tiny_run_args):
    root = egg_tree(tmp_path / "site", egg_source)
    env = {**tracker_env(tmp_path), "PYTHONPATH": str(root)}
    run_dir = tmp_path / "run"
    args = [arg if arg != "" else str(run_dir) for arg in tiny_run_args]
    train_runs.run(args + ["--report_to", "tensorboard", "--log_every", "1", "--n_epochs", "2"], env, cwd=tmp_path)
    scalars = tensorboard_scalars(str(run_dir / "tensorboard"))
    for (key, step), value in expected_values(run_dir).items():
        assert scalars[key][step] == pytest.approx(value, rel=1e-6, abs=1e-7), (key, step)
