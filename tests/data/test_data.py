"""The real data sets' readers, the frozen-feature cache and hard distractors, on tiny fixtures written in the
published formats (tests/data_fixtures.py)."""

import json
import os

import numpy as np
import pytest
import torch

from egg.zoo.discriminative_captioner import train
from egg.zoo.discriminative_captioner.data import DATASETS, load_dataset
from egg.zoo.discriminative_captioner.data.base import ImageSplit
from egg.zoo.discriminative_captioner.data.feature_cache import CacheKey, cache_status
from egg.zoo.discriminative_captioner.data.feature_cache_build import build_cache
from egg.zoo.discriminative_captioner.data.hard_distractors import nearest_neighbours
from egg.zoo.discriminative_captioner.data.images import IMAGE_ERRORS
from egg.zoo.discriminative_captioner.options.parse import get_opts
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

from ..data_fixtures import EXPECTED, GOOD, WRITERS, write_conceptual_tsv
from ..paths import ROOT

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory):
    """One fixture directory per data set."""
    roots = {}
    for name, write in WRITERS.items():
        roots[name] = str(tmp_path_factory.mktemp(name))
        write(roots[name])
    return roots


def read(name, root):
    return load_dataset(get_opts(["--dataset", name, "--data_root", root]))


def readable(split):
    """Indices of the images that decode (what the feature cache build finds)."""
    good = []
    for i in range(len(split)):
        try:
            split.images[i]
            good.append(i)
        except IMAGE_ERRORS:
            pass
    return good


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_each_reader_finds_every_listed_image_counts_absent_ones_and_keeps_all_references(name, data_roots):
    dataset = read(name, data_roots[name])
    for split_name in SPLITS:
        split = dataset.split(split_name)
        listed, missing, unreadable = EXPECTED[name][split_name]
        assert split.name == split_name
        assert (len(split) + split.missing, split.missing) == (listed, missing)
        assert len(split.ids) == len(set(split.ids)) == len(split.references) == len(split.sources)
        assert len(readable(split)) == listed - missing - unreadable
        assert all(image.mode == "RGB" for image in (split.images[i] for i in readable(split)))


def test_karpathy_coco_train_is_train_plus_restval_with_all_five_references(data_roots):
    with open(os.path.join(data_roots["coco"], "dataset_coco.json")) as f:
        images = json.load(f)["images"]
    split = read("coco", data_roots["coco"]).split("train")
    expected = {str(image["cocoid"]): [s["raw"] for s in image["sentences"]] for image in images
                if image["split"] in ("train", "restval")}  # fmt: skip
    assert set(split.ids) <= set(expected) and len(expected) - len(split.ids) == split.missing
    for image_id, references in zip(split.ids, split.references):
        assert references == expected[image_id] and len(references) == 5
    assert {os.path.basename(os.path.dirname(path)) for path in split.sources} == {"train2014"}


def test_nocaps_splits_by_domain_and_gathers_ten_captions_per_image(data_roots):
    near = read("nocaps_near", data_roots["nocaps_near"]).split("test")
    out = read("nocaps_out", data_roots["nocaps_out"]).split("test")
    assert not set(near.ids) & set(out.ids)
    assert all(refs == [f"near-domain {j}" for j in range(10)] for refs in near.references)
    assert all(refs == [f"out-domain {j}" for j in range(10)] for refs in out.references)


def test_concadia_reference_is_the_caption_or_the_description(data_roots):
    captions = read("concadia_captions", data_roots["concadia_captions"]).split("test")
    descriptions = read("concadia_descriptions", data_roots["concadia_descriptions"]).split("test")
    assert captions.ids == descriptions.ids
    for image_id, caption, description in zip(captions.ids, captions.references, descriptions.references):
        assert caption == [f"caption of {image_id}.jpg"] and description == [f"description of {image_id}.jpg"]


def test_imagecode_orders_video_frames_by_number_and_attaches_descriptions_to_targets(data_roots):
    split = read("imagecode", data_roots["imagecode"]).split("test")
    by_id = dict(zip(split.ids, zip(split.sources, split.references)))
    assert by_id["MSR-VTT-video7/1"] == (os.path.join(data_roots["imagecode"], "image-sets", "MSR-VTT-video7",
                                                      "img12.jpg"), ["the man starts to turn"])  # fmt: skip
    assert by_id["open-images-1234/2"][1] == ["the one with a red hat"] and by_id["open-images-1234/0"][1] == []


def test_an_absent_imagecode_image_moves_no_other_image(data_roots, capsys):
    split = read("imagecode", data_roots["imagecode"]).split("test")
    by_id = dict(zip(split.ids, zip(split.sources, split.references)))
    static = os.path.join(data_roots["imagecode"], "image-sets", "open-images-1234")
    assert "open-images-1234/3" not in by_id  # img3.jpg was never downloaded
    assert by_id["open-images-1234/4"] == (os.path.join(static, "img4.jpg"), ["a dog to the left"])
    assert all(by_id[f"open-images-1234/{i}"][0] == os.path.join(static, f"img{i}.jpg") for i in (0, 1, 2, 5, 9))
    # a video set missing a frame cannot be re-indexed: all its images are left out, counted, and named once
    assert not any(image_id.startswith("video-storytelling-video9/") for image_id in split.ids)
    assert split.missing == 1 + 10
    report = [line for line in capsys.readouterr().out.splitlines() if "video-storytelling-video9" in line]
    assert len(report) == 1 and "1 video sets without all 10 frames left out" in report[0]


def test_conceptual_reads_shards_and_the_tsv_layout_alike(data_roots, tmp_path):
    shards = read("conceptual", data_roots["conceptual"])
    train = shards.split("train")
    assert train.references[0] == ["caption of train sample 0"] and train.ids[0] == "000000000"
    assert shards.split("test").ids == shards.split("validation").ids  # the paper tests on the validation file
    write_conceptual_tsv(str(tmp_path))
    tsv = read("conceptual", str(tmp_path)).split("train")
    assert tsv.ids[:2] == ["00000000", "00000001"] and tsv.references[1] == ["caption 1 of the train set"]
    assert tsv.missing == 1 and len(readable(tsv)) == GOOD


@pytest.mark.parametrize("layout", ["shards", "tsv"])
def test_conceptual_reads_clipcaps_val_directory_and_says_which_it_read(layout, data_roots, tmp_path, capsys):
    import shutil

    from egg.zoo.discriminative_captioner.runtime.preflight import data_missing

    root = tmp_path / "cc"
    if layout == "shards":
        shutil.copytree(data_roots["conceptual"], root)
    else:
        root.mkdir()
        write_conceptual_tsv(str(root))
    expected = read("conceptual", str(root)).split("test")
    os.rename(root / "validation", root / "val")  # ClipCap's parse_conceptual.py: <root>/val/{i:08d}.jpg
    capsys.readouterr()
    opts = get_opts(["--dataset", "conceptual", "--data_root", str(root)])
    assert data_missing(opts, "conceptual") == []  # the pre-flight check accepts val/ too
    split = load_dataset(opts).split("test")
    assert (split.ids, split.references, split.missing) == (expected.ids, expected.references, expected.missing)
    assert split.sources[0].startswith(str(root / "val")) and len(readable(split)) == GOOD
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("conceptual validation:")]
    assert len(lines) == 1 and lines[0].endswith(f"in {root / 'val'}/")


def test_a_damaged_shard_contributes_the_samples_before_the_damage(data_roots, tmp_path, capsys):
    os.makedirs(tmp_path / "train")
    whole = os.path.join(data_roots["conceptual"], "train", "00000.tar")
    data = open(whole, "rb").read()
    (tmp_path / "train" / "00000.tar").write_bytes(data[: len(data) // 2])
    split = read("conceptual", str(tmp_path)).split("train")
    assert 0 < len(split) < GOOD // 2 and "damaged shards" in capsys.readouterr().out


def test_missing_data_is_a_one_line_error(tmp_path):
    with pytest.raises(UsageError, match="data directory .* not found"):
        read("coco", str(tmp_path / "nowhere"))
    with pytest.raises(UsageError, match="dataset_coco.json not found"):
        read("coco", str(tmp_path))
    (tmp_path / "dataset_coco.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="not a Karpathy split file"):
        read("coco", str(tmp_path)).split("train")


def test_every_dataset_is_registered():
    assert set(WRITERS) | {"synthetic", "synthetic_descriptive", "hf"} == set(DATASETS)  # hf: test_hf_datasets.py


# --- the feature cache ----------------------------------------------------------------------------------------


class CountingEncoder:
    """A deterministic encoder (mean colour per channel, tiled) that counts the images it encodes."""

    def __init__(self, fail_after=None):
        self.encoded = 0
        self.fail_after = fail_after

    def __call__(self, pixels):
        if self.fail_after is not None and self.encoded >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.encoded += len(pixels)
        return pixels.mean(dim=(2, 3)).repeat(1, 2)  # [b, 6]


def to_pixels(image):
    return torch.from_numpy(np.asarray(image.resize((8, 8)), dtype=np.float32)).permute(2, 0, 1) / 255


def test_feature_cache_counts_broken_images_resumes_after_an_interruption_and_detects_staleness(data_roots, tmp_path):
    split = read("concadia_captions", data_roots["concadia_captions"]).split("train")
    key = CacheKey.of(split, "mean-colour", "resize 8", shard_size=3)
    reference = build_cache(str(tmp_path / "whole"), split, CountingEncoder(), to_pixels, key, batch_size=2)
    assert len(reference.unreadable) == 2 and len(reference) == len(split)
    good = [i for i in range(len(split)) if i not in reference.unreadable]
    expected = torch.stack([CountingEncoder()(to_pixels(split.images[i])[None])[0] for i in good])
    assert torch.allclose(reference.rows(good), expected.half().float())
    assert reference.shards[0].dtype == np.float16 and isinstance(reference.shards[0], np.memmap)

    directory = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        build_cache(directory, split, CountingEncoder(fail_after=4), to_pixels, key, batch_size=2)
    assert cache_status(directory, key) == "partial" and not os.path.exists(os.path.join(directory, "manifest.json"))
    done = sorted(name for name in os.listdir(directory) if name.startswith("features-"))
    resuming = CountingEncoder()
    resumed = build_cache(directory, split, resuming, to_pixels, key, batch_size=2)
    assert done and resuming.encoded < len(good)  # the finished shards were not encoded again
    assert torch.equal(resumed[:], reference[:]) and resumed.unreadable == reference.unreadable
    assert cache_status(directory, key) == "ok"

    renamed = CacheKey.of(split, "another-model", "resize 8", shard_size=3)
    assert cache_status(directory, renamed) == "stale: model differs"
    rebuilding = CountingEncoder()
    build_cache(directory, split, rebuilding, to_pixels, renamed, batch_size=2)
    assert rebuilding.encoded == len(good) and cache_status(directory, renamed) == "ok"
    subset = ImageSplit("train", split.images, split.references[:-1] + [["x"]], split.ids, split.sources)
    assert cache_status(directory, CacheKey.of(subset, "another-model", "resize 8", 3)) == "ok"  # refs not keyed
    other_ids = ImageSplit("train", split.images, split.references, split.ids[::-1], split.sources)
    other_key = CacheKey.of(other_ids, "another-model", "resize 8", 3)
    assert cache_status(directory, other_key) == "stale: ids_sha256 differs"


# --- hard distractors -----------------------------------------------------------------------------------------


def test_nearest_neighbours_are_the_brute_force_ones():
    features = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -np.inf)
    true = np.argsort(-cosine, axis=1)[:, :4]
    assert (np.sort(nearest_neighbours(features, 4), axis=1) == np.sort(true, axis=1)).all()


# --- runs through train.main ----------------------------------------------------------------------------------


def tiny_model_args(tiny_files, root, cache, captioner="clipcap", command="train"):
    """The tiny models' files and small sizes: ClipCap's files for a ClipCap run, training's options for train."""
    args = ["--data_root", root, "--feature_cache_dir", cache, "--clip_model", tiny_files["clip"], "--eval_candidates",
            "4", "--max_len", "4", "--num_beams", "1"]  # fmt: skip
    if captioner == "clipcap":
        args += ["--clipcap_checkpoint", tiny_files["clipcap_mlp"], "--language_model", tiny_files["language_model"],
                 "--captioner_clip_model", tiny_files["clip"]]  # fmt: skip
    if command == "train":
        args += ["--n_epochs", "1", "--batch_size", "4", "--lr", "1e-4", "--checkpoint_dir", ""]
    return args


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_one_epoch_of_train_on_each_dataset_prints_the_broken_image_counts(name, data_roots, tiny_files, tmp_path,
                                                                           capsys):  # fmt: skip
    run = tmp_path / "run"
    args = ["--dataset", name] + tiny_model_args(tiny_files, data_roots[name], str(tmp_path / "features"))
    results = train.main(args + ["--checkpoint_dir", str(run)])
    out = capsys.readouterr().out
    counts = json.loads((run / "data_counts.json").read_text())
    for split in SPLITS:
        listed, missing, unreadable = EXPECTED[name][split]
        line = f"data {name} {split}: {listed - missing - unreadable} images used of {listed} listed " \
               f"({missing} missing, {unreadable} unreadable)"  # fmt: skip
        assert line in out
        assert counts[split] == {"listed": listed, "missing": missing, "unreadable": unreadable,
                                 "used": listed - missing - unreadable}  # fmt: skip
    assert out.index("data ") < out.index('"mode": "train"') and 0 <= results["acc"] <= 1


def test_with_a_matching_cache_a_training_step_decodes_no_image_and_runs_no_clip_image_forward(
    data_roots, tiny_files, tmp_path, monkeypatch, capsys
):
    from egg.zoo.discriminative_captioner.captioners.clipcap import ClipImageEncoder
    from egg.zoo.discriminative_captioner.data import images
    from egg.zoo.discriminative_captioner.retrievers.clip import ClipRetriever

    args = ["--dataset", "conceptual"] + tiny_model_args(tiny_files, data_roots["conceptual"], str(tmp_path / "f"))
    train.main(args)  # builds the caches
    calls = []

    def forbidden(what):
        def record(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"{what} called with a matching feature cache")

        return record

    monkeypatch.setattr(images, "decode_image", forbidden("decode_image"))
    monkeypatch.setattr(ClipImageEncoder, "forward", forbidden("ClipCap's CLIP image forward"))
    monkeypatch.setattr(ClipRetriever, "encode_images", forbidden("the retriever's CLIP image forward"))
    results = train.main(args + ["--hard_distractors", "1"])
    assert calls == [] and 0 <= results["acc"] <= 1


def test_a_missing_released_checkpoint_stops_before_any_data_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("DISCRITUNE_MODELS", str(tmp_path / "models"))
    with pytest.raises(UsageError) as error:
        train.main(["--dataset", "conceptual", "--data_root", str(tmp_path / "no-data")])
    listed = str(error.value)  # both are missing: both are named, in one error
    assert f"looked for: {tmp_path / 'no-data'} (not found)" in listed and "pass a path with: --data_root" in listed
    assert f"{tmp_path / 'models' / 'conceptual_weights.pt'}" in listed and "drive.google.com" in listed
    opts = get_opts(["--game", "blip_coco"])
    assert (opts.dataset, opts.captioner, opts.n_epochs, opts.lr, opts.random_seed) == ("coco", "blip", 1, 1e-7, 111)
    opts = get_opts(["--dataset", "coco"])
    settings = (opts.clipcap_checkpoint, opts.n_epochs, opts.batch_size, opts.greedy_rollouts, opts.max_len,
                opts.num_beams, opts.baseline, opts.reward)  # fmt: skip
    assert settings == ("coco_weights.pt", 20, 100, True, 40, 5, "mean", "logprob")


def test_a_dataset_with_nothing_readable_is_an_error(tiny_files, tmp_path):
    root = tmp_path / "flickr"
    (root / "Images").mkdir(parents=True)
    (root / "Images" / "1.jpg").write_bytes(b"not an image")
    images = [{"filename": "1.jpg", "imgid": 0, "split": split, "sentences": [{"raw": "x"}]}
              for split in ("train", "val", "test")]  # fmt: skip
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images}))
    with pytest.raises(UsageError, match="no readable image"):
        train.main(["--dataset", "flickr"] + tiny_model_args(tiny_files, str(root), str(tmp_path / "f")))


# --- data scripts ---------------------------------------------------------------------------------------------

SCRIPTS = os.path.join(ROOT, "data_scripts")


@pytest.mark.parametrize("script", ["download.py", "download_conceptual.py", "check_data.py"])
def test_each_data_script_has_help(script):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, os.path.join(SCRIPTS, script), "--help"], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0 and "usage:" in result.stdout


@pytest.mark.parametrize("name", ["conceptual", "imagecode", "coco"])
def test_check_data_reports_present_missing_and_unreadable_counts(name, data_roots, capsys):
    import runpy

    check_data = runpy.run_path(os.path.join(SCRIPTS, "check_data.py"))
    with pytest.raises(SystemExit) as status:
        check_data["main"]([name, "--data_root", data_roots[name]])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    rows = [row for row in rows if row[1] in SPLITS]  # the readers' notes (left-out sets, layout found) aside
    assert status.value.code == 0 and len(rows) == 3
    for row in rows:
        listed, missing, unreadable = EXPECTED[name][row[1]]
        assert row[0] == name and [int(x) for x in row[2:]] == [listed, listed - missing - unreadable, missing,
                                                                 unreadable]  # fmt: skip


def test_blip_trains_on_decoded_pixels_in_parallel_workers_without_the_broken_images(data_roots, tiny_files, tmp_path,
                                                                                      capsys):  # fmt: skip
    args = ["--dataset", "flickr"] + tiny_model_args(tiny_files, data_roots["flickr"], str(tmp_path / "f"), "blip")
    results = train.main(args + ["--captioner", "blip", "--blip_model", tiny_files["blip"], "--num_workers", "2"])
    assert f"data flickr train: {GOOD} images used" in capsys.readouterr().out and 0 <= results["acc"] <= 1
    cached = tmp_path / "f" / os.listdir(tmp_path / "f")[0] / "train"
    assert sorted(os.listdir(cached)) == ["retriever"]  # BLIP's pixels are not cached


def test_imagecode_sets_are_the_complete_sets_with_one_trial_per_description():
    from egg.zoo.discriminative_captioner.data.imagecode import image_sets

    ids = [f"a/{i}" for i in range(10)] + [f"b/{i}" for i in range(10) if i != 4]  # b lost an unreadable image
    references = [["the third"] if image_id in ("a/3", "a/7", "b/2") else [] for image_id in ids]
    split = ImageSplit("test", [None] * len(ids), references, ids=ids)
    assert image_sets(split) == [(list(range(10)), 3), (list(range(10)), 7)]


def test_evaluate_runs_on_the_imagecode_fixture_with_undescribed_images(data_roots, tiny_files, tmp_path):
    from egg.zoo.discriminative_captioner import evaluate

    args = tiny_model_args(tiny_files, data_roots["imagecode"], str(tmp_path / "features"), command="evaluate")
    evaluate.main(args + ["--dataset", "imagecode", "--models", "pretrained", "--output_dir", str(tmp_path / "ev"),
                          "--no-spice", "--hard_sets", "0"])  # fmt: skip
    [record] = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert record["dataset"] == "imagecode" and 0 <= record["p_at_1"] <= 1 and record["bleu4"] is not None
    # human P@1: the 3 described images of the 15 readable ones are the targets (the others only candidates)
    assert (record["n_images"], record["n_images_references"]) == (15, 3)
    assert 3 * record["p_at_1_references"] == pytest.approx(round(3 * record["p_at_1_references"]))  # k of 3 hits
    assert "(3 of 15 images described)" in (tmp_path / "ev" / "tables.md").read_text()
