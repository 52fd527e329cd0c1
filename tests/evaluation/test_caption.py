"""``caption`` end to end on the tiny synthetic world: files, folders and globs; unreadable images skipped."""

import json

import numpy as np
import pytest
from PIL import Image

from egg.zoo.discriminative_captioner import caption
from egg.zoo.discriminative_captioner.runtime.errors import UsageError


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg", "more/c.png"):
        Image.fromarray(rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.png").write_bytes(b"not an image")
    (tmp_path / "single.png").write_bytes((folder / "a.png").read_bytes())
    return tmp_path


def test_caption_files_folders_and_globs_skipping_unreadable_images(tiny_world_args, images, capsys):
    out = images / "captions.jsonl"
    rows = caption.main(tiny_world_args + [str(images / "photos"), str(images / "*.png"), str(images / "missing.png"),
                                         "--batch_size", "2", "--output", str(out)])  # fmt: skip
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == rows
    expected = ("photos/a.png", "photos/b.jpg", "photos/more/c.png", "single.png")
    assert [r["image"] for r in rows] == [str(images / p) for p in expected]
    assert all(isinstance(r["caption"], str) for r in rows)
    err = capsys.readouterr().err
    assert "skipped " + str(images / "photos/broken.png") in err and "missing.png" in err
    assert "captioned 4 images, skipped 2" in err


def test_caption_prints_without_output_and_matches_batch_size_one(tiny_world_args, images, capsys):
    rows = caption.main(tiny_world_args + [str(images / "single.png"), str(images / "photos/b.jpg")])
    printed = [line.split("\t") for line in capsys.readouterr().out.splitlines() if "\t" in line]
    assert printed == [[r["image"], r["caption"]] for r in rows]
    one_by_one = caption.main(tiny_world_args + [str(images / "single.png"), str(images / "photos/b.jpg"),
                                               "--batch_size", "1"])  # fmt: skip
    assert [r["caption"] for r in one_by_one] == [r["caption"] for r in rows]


def test_no_images_is_a_one_line_error(tiny_world_args, tmp_path):
    with pytest.raises(UsageError, match="no image files"):
        caption.main(tiny_world_args + [str(tmp_path / "nothing*.png")])
