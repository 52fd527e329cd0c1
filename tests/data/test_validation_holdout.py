"""``--validation_images N``: validation on N seeded held-out training images that training never sees, and the
warning when a data set's validation split is its test split (Conceptual Captions)."""

import os
import signal

import numpy as np
import pytest
import torch

from egg.zoo.discriminative_captioner import train
from egg.zoo.discriminative_captioner.data import EncodedSplit, ImageSplit, load_dataset
from egg.zoo.discriminative_captioner.data.feature_cache import CachedRows
from egg.zoo.discriminative_captioner.experiment import hold_out, validation_is_test
from egg.zoo.discriminative_captioner.options.parse import get_opts
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

from ..data_fixtures import GOOD, WRITERS
from ..train_runs import captioner_state, final_line, interrupt_mid_epoch, run
from .test_data import readable, tiny_model_args

WARNING = "validation split is its test split"


def encoded_split(n):
    """An encoded split of ``n`` images whose features are their own index (row i holds i)."""
    rows = torch.arange(n, dtype=torch.float32).view(n, 1).repeat(1, 2)  # [n, 2]
    split = ImageSplit("train", [None] * n, [[f"caption {i}"] for i in range(n)], ids=[f"id{i}" for i in range(n)])
    encoded = EncodedSplit(split, rows, rows.clone())
    encoded.counts = {"listed": n + 2, "missing": 2, "unreadable": 0, "used": n}
    return encoded


def test_the_hold_out_is_a_seeded_part_of_the_training_split_left_out_of_training():
    full = encoded_split(50)
    training, validation = hold_out(full, 10, seed=0)
    assert (training.split.name, validation.split.name, len(training), len(validation)) == ("train", "validation",
                                                                                            40, 10)  # fmt: skip
    assert not set(training.split.ids) & set(validation.split.ids)
    assert sorted(training.split.ids + validation.split.ids) == sorted(full.split.ids)
    for part in (training, validation):  # ids, references and both inputs move together
        index = [int(image_id[2:]) for image_id in part.split.ids]
        assert part.split.references == [[f"caption {i}"] for i in index]
        assert part.sender_inputs[:, 0].tolist() == part.receiver_inputs[:, 0].tolist() == index
    assert training.counts["used"] == 40 and validation.counts["used"] == 10
    assert hold_out(full, 10, seed=0)[1].split.ids == validation.split.ids  # a function of the options only
    assert hold_out(full, 10, seed=1)[1].split.ids != validation.split.ids
    with pytest.raises(UsageError, match="--validation_images 50"):
        hold_out(full, 50, seed=0)


def test_the_warning_concerns_data_sets_whose_validation_split_is_their_test_split(tmp_path):
    same = {}
    for name in ("conceptual", "coco", "imagecode"):
        root = tmp_path / name
        root.mkdir()
        WRITERS[name](str(root))
        same[name] = validation_is_test(load_dataset(get_opts(["--dataset", name, "--data_root", str(root)])))
    assert same == {"conceptual": True, "coco": False, "imagecode": True}


@pytest.fixture(scope="module")
def conceptual_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("conceptual"))
    WRITERS["conceptual"](root)
    return root


def test_training_never_sees_the_held_out_images_whose_features_come_from_the_training_cache(
    conceptual_root, tiny_files, tmp_path, monkeypatch, capsys
):
    loaders = {}
    real_build_trainer = train.build_trainer

    def build_trainer(opts, game, optimizer, train_loader, validation_loader, *rest):
        loaders.update(train=train_loader, validation=validation_loader)
        return real_build_trainer(opts, game, optimizer, train_loader, validation_loader, *rest)

    monkeypatch.setattr(train, "build_trainer", build_trainer)
    args = ["--dataset", "conceptual"] + tiny_model_args(tiny_files, conceptual_root, str(tmp_path / "features"))
    train.main(args + ["--validation_images", "4", "--batch_size", "2"])
    out, err = capsys.readouterr()
    assert WARNING not in err and "data conceptual validation: 4 training images held out" in out

    training, validation = loaders["train"].dataset, loaders["validation"].dataset.dataset
    seen = {int(i) for batch in loaders["train"] for i in batch[3]["image_index"]}  # every image the epoch drew
    assert seen == set(range(len(training))) and len(training) == GOOD - 4
    trained_ids = {training.split.ids[i] for i in seen}
    assert not trained_ids & set(validation.split.ids)
    whole = load_dataset(get_opts(["--dataset", "conceptual", "--data_root", conceptual_root])).split("train")
    assert trained_ids | set(validation.split.ids) == {whole.ids[i] for i in readable(whole)}
    for rows in (validation.receiver_inputs, validation.sender_inputs):  # rows of the training split's caches
        assert isinstance(rows, CachedRows) and os.path.basename(os.path.dirname(rows.cache.directory)) == "train"

    train.main(args)  # no hold-out: the per-epoch validation reads the test images, and says so once
    assert capsys.readouterr().err.count(WARNING) == 1


def test_a_run_with_held_out_validation_images_resumes_exactly(tiny_run_args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = tiny_run_args + ["--n_epochs", "2", "--random_seed", "3", "--validation_images", "100"]
    straight_dir, interrupted_dir = tmp_path / "straight", tmp_path / "interrupted"
    straight = run(args + ["--checkpoint_dir", str(straight_dir)], env, tmp_path)
    assert "100 training images held out" in straight.stdout
    code, _, stderr = interrupt_mid_epoch(args + ["--checkpoint_dir", str(interrupted_dir)], interrupted_dir,
                                          env, tmp_path)  # fmt: skip
    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    state = torch.load(interrupted_dir / "latest.resume.pt", weights_only=True)
    assert state["epoch"] == 1 and 0 < state["batches_done"] < 10  # mid-epoch: 500 training images, batches of 50
    resumed = run(args + ["--checkpoint_dir", str(interrupted_dir), "--load_from_checkpoint",
                          str(interrupted_dir / "latest.tar")], env, tmp_path)  # fmt: skip
    expected, actual = captioner_state(straight_dir), captioner_state(interrupted_dir)
    assert all(torch.equal(expected[key], actual[key]) for key in expected)  # bitwise
    assert final_line(resumed.stdout) == final_line(straight.stdout)
    assert np.isfinite(final_line(resumed.stdout)["loss"])
