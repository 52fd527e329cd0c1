"""``--dataset hf``: Hugging Face data sets (save_to_disk directories, parquet files, image file columns) read as
the Karpathy reader reads the same images and captions; the feature cache named by the data set's fingerprints;
every failure in one line; a training and an evaluation run through ``main``."""

import hashlib
import json
import os
import shutil
import sys

import numpy as np
import pytest

from egg.zoo.discriminative_captioner import caption, evaluate, train
from egg.zoo.discriminative_captioner.data import load_dataset
from egg.zoo.discriminative_captioner.data.images import IMAGE_ERRORS
from egg.zoo.discriminative_captioner.experiment import dataset_cache_name
from egg.zoo.discriminative_captioner.options.parse import config_of

from ..data_fixtures import EXPECTED, GOOD, write_karpathy
from ..refusals import refused
from .test_data import tiny_model_args

datasets = pytest.importorskip("datasets", reason='the optional extra: pip install ".[datasets]"')

SPLITS = ("train", "validation", "test")
KARPATHY = ["--hf_splits", "train=train+restval", "validation=val", "--id_column", "cocoid"]  # Karpathy's splits
FEATURES = datasets.Features({
    "image": datasets.Image(), "sentences": datasets.Sequence(datasets.Value("string")),
    "cocoid": datasets.Value("int64"), "file": datasets.Value("string"), "url": datasets.Value("string"),
})  # fmt: skip


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """An empty ``datasets`` cache per test (what load_dataset prepares from parquet files lands there)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """The Karpathy COCO fixture (with its corrupted, truncated and absent images)."""
    root = str(tmp_path_factory.mktemp("coco"))
    write_karpathy(root, "coco")
    return root


def karpathy_rows(root):
    """``{Karpathy split: [row]}``: each listed image's bytes (None where its file is absent), its captions, COCO
    id, file under ``root`` and COCO URL, from the fixture's own files."""
    with open(os.path.join(root, "dataset_coco.json")) as f:
        images = json.load(f)["images"]
    rows = {}
    for image in images:
        relative = f"{image['filepath']}/{image['filename']}"
        path = os.path.join(root, relative)
        data = open(path, "rb").read() if os.path.isfile(path) else None
        rows.setdefault(image["split"], []).append({
            "image": {"bytes": data, "path": None} if data is not None else None,
            "sentences": [sentence["raw"] for sentence in image["sentences"]], "cocoid": image["cocoid"],
            "file": relative, "url": f"http://images.cocodataset.org/{relative}",
        })  # fmt: skip
    return rows


def dataset_dict(rows):
    return datasets.DatasetDict({split: datasets.Dataset.from_list(part, features=FEATURES)
                                 for split, part in rows.items()})  # fmt: skip


def one_row_per_caption(rows):
    """The same data with one row per caption (a string), as some hub copies of COCO hold it."""
    return {split: [{**row, "caption": sentence} for row in part for sentence in row["sentences"]]
            for split, part in rows.items()}  # fmt: skip


def write_parquet(directory, rows, features):
    """The hub's layout: ``data/<split>-00000-of-00001.parquet``."""
    os.makedirs(os.path.join(directory, "data"), exist_ok=True)
    for split, part in rows.items():
        path = os.path.join(directory, "data", f"{split}-00000-of-00001.parquet")
        datasets.Dataset.from_list(part, features=features).to_parquet(path)


def hf_args(directory, *extra):
    return ["--dataset", "hf", "--hf_dataset", str(directory), *KARPATHY, *extra]


def read(args):
    opts = config_of(args)
    return opts, load_dataset(opts)


def decoded(split, index):
    try:
        return np.asarray(split.images[index])
    except IMAGE_ERRORS:
        return None


def assert_same_splits(hf, karpathy):
    """Split by split: the same ids, references, missing counts, and images pixel for pixel (broken in both)."""
    for name in SPLITS:
        ours, theirs = hf.split(name), karpathy.split(name)
        assert (ours.name, ours.ids, ours.references, ours.missing) == (name, theirs.ids, theirs.references,
                                                                        theirs.missing)  # fmt: skip
        broken = 0
        for i in range(len(theirs)):
            a, b = decoded(ours, i), decoded(theirs, i)
            assert (a is None) == (b is None) and (a is None or np.array_equal(a, b)), (name, i)
            broken += a is None
        listed, missing, unreadable = EXPECTED["coco"][name]
        assert (len(ours) + ours.missing, ours.missing, broken) == (listed, missing, unreadable)


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet, one row per caption", "file paths", "urls"])
def test_the_hf_reader_gives_the_karpathy_readers_images_captions_and_ids(layout, coco, tmp_path):
    rows = karpathy_rows(coco)
    directory, extra = tmp_path / "hf", []
    if layout == "save_to_disk":
        dataset_dict(rows).save_to_disk(str(directory))
    elif layout.startswith("parquet"):
        features = datasets.Features({**FEATURES, "caption": datasets.Value("string")})
        write_parquet(str(directory), one_row_per_caption(rows), features)
        extra = ["--caption_column", "caption"]
    else:  # no image bytes: files under --data_root, named by a path or by COCO's URL
        dataset_dict({split: [{**row, "image": None} for row in part] for split, part in rows.items()}).save_to_disk(
            str(directory))
        extra = ["--image_column", "file" if layout == "file paths" else "url", "--data_root", coco]
    _, hf = read(hf_args(directory, *extra))
    _, karpathy = read(["--dataset", "coco", "--data_root", coco])
    assert_same_splits(hf, karpathy)


def test_splits_sharing_a_source_share_their_images_and_captions_default_to_the_first_caption_column(coco, tmp_path):
    rows = karpathy_rows(coco)
    dataset_dict({"train": rows["train"], "validation": rows["val"], "test": rows["test"]}).save_to_disk(
        str(tmp_path / "hf"))
    _, hf = read(["--dataset", "hf", "--hf_dataset", str(tmp_path / "hf"), "--hf_splits", "validation=test"])
    assert hf.cache_split("validation") == hf.cache_split("test") != hf.cache_split("train")  # read, cached once
    test = hf.split("test")
    assert test.references == [row["sentences"] for row in rows["test"] if row["image"] is not None]
    assert test.ids == [f"test/{row}" for row, value in enumerate(rows["test"]) if value["image"] is not None]
    assert hf.split("validation").ids == test.ids


def test_the_feature_cache_is_named_by_the_fingerprints_and_other_data_sets_keep_their_names(coco, tmp_path):
    rows = karpathy_rows(coco)
    first = tmp_path / "first"
    dataset_dict(rows).save_to_disk(str(first))
    opts, dataset = read(hf_args(first))
    name = dataset_cache_name(opts, dataset)
    assert name.startswith("hf-") and name == dataset_cache_name(*read(hf_args(first)))  # loaded again
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    assert dataset_cache_name(*read(hf_args(copy))) == name  # the same data elsewhere: the same cache
    changed = {**rows, "test": [{**rows["test"][1], "image": rows["test"][0]["image"]}] + rows["test"][1:]}
    shutil.rmtree(first)
    dataset_dict(changed).save_to_disk(str(first))
    assert dataset_cache_name(*read(hf_args(first))) != name  # the same place, other data: another cache

    parquet = tmp_path / "parquet"
    write_parquet(str(parquet), rows, FEATURES)
    before = dataset_cache_name(*read(hf_args(parquet)))
    assert dataset_cache_name(*read(hf_args(parquet))) == before
    write_parquet(str(parquet), changed, FEATURES)
    assert dataset_cache_name(*read(hf_args(parquet))) != before

    opts, karpathy = read(["--dataset", "coco", "--data_root", coco])
    assert dataset_cache_name(opts, karpathy) == f"coco-{hashlib.sha256(os.path.abspath(coco).encode()).hexdigest()[:10]}"


def test_what_cannot_be_read_is_one_line_naming_the_fix(coco, tiny_files, tmp_path, monkeypatch):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    refused(lambda: read(["--dataset", "hf", "--hf_dataset", "someone/not-cached-anywhere"]),
            "'someone/not-cached-anywhere'", "HF_HUB_OFFLINE=1", "--hf_dataset DIR")  # fmt: skip
    dataset_dict(karpathy_rows(coco)).save_to_disk(str(tmp_path / "hf"))
    refused(lambda: read(hf_args(tmp_path / "hf", "--caption_column", "captions"))[1].split("train"),
            "no column 'captions' (--caption_column)", "its columns: image, sentences, cocoid, file, url")
    refused(lambda: read(hf_args(tmp_path / "hf", "--hf_splits", "test=testing")),
            "no split 'testing' (for test)", "its splits: train, restval, val, test", "--hf_splits test=NAME")
    refused(lambda: read(hf_args(tmp_path / "hf", "--image_column", "file"))[1].split("test"),
            "--image_column file holds image file names", "--data_root")  # fmt: skip
    nowhere = ["--dataset", "hf", "--hf_dataset", str(tmp_path / "nowhere")]
    refused(lambda: train.main(nowhere + tiny_model_args(tiny_files, coco, str(tmp_path / "features"))),
            "the hf data set is missing", str(tmp_path / "nowhere"), "--hf_dataset")  # fmt: skip
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the extra were not installed
    refused(lambda: read(hf_args(tmp_path / "hf")), "datasets package", "[datasets]")
    assert len(read(["--dataset", "coco", "--data_root", coco])[1].split("test")) == GOOD + 2  # others never need it


@pytest.mark.parametrize("command, args, fragments", [
    (train, ["--hf_dataset", "x"], ["--hf_dataset reads a Hugging Face data set", "--dataset hf",
                                    "this run reads synthetic"]),
    (train, ["--dataset", "coco", "--image_column", "url", "--hf_splits", "test=test"],
     ["--hf_splits, --image_column read a Hugging Face data set: they need --dataset hf"]),
    (train, ["--dataset", "hf"], ["--dataset hf needs --hf_dataset ID_OR_DIR"]),
    (evaluate, ["--dataset", "hf", "--hf_dataset", "x", "--hf_splits", "train"], ["--hf_splits train: give "
                                                                                   "SPLIT=SOURCE"]),
    (evaluate, ["--datasets", "coco", "--hf_dataset", "x"], ["--dataset hf (this run reads coco)"]),
    (caption, ["images/", "--hf_dataset", "x"], ["caption does not use --hf_dataset"]),
])  # fmt: skip
def test_options_that_cannot_apply_are_refused(command, args, fragments):
    refused(lambda: command.main(args), *fragments)


def test_train_and_evaluate_run_on_a_hub_data_set(coco, tiny_files, tmp_path, capsys):
    dataset_dict(karpathy_rows(coco)).save_to_disk(str(tmp_path / "hf"))
    features, run = tmp_path / "features", tmp_path / "run"
    results = train.main(hf_args(tmp_path / "hf") + tiny_model_args(tiny_files, coco, str(features))
                         + ["--checkpoint_dir", str(run)])  # fmt: skip
    out = capsys.readouterr().out
    for split in SPLITS:
        listed, missing, unreadable = EXPECTED["coco"][split]
        assert f"data hf {split}: {listed - missing - unreadable} images used of {listed} listed ({missing} " \
               f"missing, {unreadable} unreadable)" in out  # fmt: skip
    assert 0 <= results["acc"] <= 1
    opts, dataset = read(hf_args(tmp_path / "hf", "--data_root", coco))
    assert os.listdir(features) == [dataset_cache_name(opts, dataset)]

    args = tiny_model_args(tiny_files, coco, str(features), command="evaluate")
    evaluate.main(args + hf_args(tmp_path / "hf") + ["--models", "pretrained", "--output_dir", str(tmp_path / "ev"),
                                                     "--no-nlg", "--no-spice", "--hard_sets", "0"])  # fmt: skip
    [record] = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert (record["dataset"], record["n_images"]) == ("hf", GOOD) and 0 <= record["p_at_1"] <= 1
