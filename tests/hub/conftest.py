"""Two tiny finished runs (ClipCap, pushed by ``train --push_to_hub``; a ``--captioner hf`` ViT-GPT-2) and a stand-in
for the Hub: ``HfApi`` is an autospec of the real class (a call it would refuse fails here too), whose
``upload_folder`` keeps each commit's files as the repository, and ``snapshot_download`` hands them back."""

import os
import shutil
from pathlib import Path
from unittest.mock import create_autospec

import huggingface_hub
import pytest

from egg.zoo.discriminative_captioner import train
from egg.zoo.discriminative_captioner.synthetic import pretrain_hf, world_directory


class FakeHub:
    """Repositories as folders under ``root``; ``api`` records every call."""

    def __init__(self, root):
        self.root = Path(root)
        self.api = create_autospec(huggingface_hub.HfApi, instance=True)
        self.api.create_repo.side_effect = lambda repo_id, **kwargs: f"https://huggingface.co/{repo_id}"
        self.api.upload_folder.side_effect = self.upload
        self.downloads = []

    def upload(self, *, repo_id, folder_path, **kwargs):
        target = self.root / repo_id
        if kwargs.get("delete_patterns") == "*" and target.exists():  # the commit replaces the repository's files
            shutil.rmtree(target)
        shutil.copytree(folder_path, target, dirs_exist_ok=True)

    def files(self, repo_id):
        folder = self.root / repo_id
        return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}

    def snapshot_download(self, repo_id, **kwargs):
        self.downloads.append(repo_id)
        return str(self.root / repo_id)

    def patch(self, monkeypatch):
        monkeypatch.setattr(huggingface_hub, "HfApi", lambda *args, **kwargs: self.api)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", self.snapshot_download)


def tiny_args(cache):
    return ["--synthetic_world", "tiny", "--cache_dir", cache, "--n_epochs", "1", "--batch_size", "50",
            "--max_len", "6", "--num_beams", "2"]  # fmt: skip


@pytest.fixture(scope="package")
def hub(tmp_path_factory):
    return FakeHub(tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="package")
def clipcap_run(world_cache, tmp_path_factory, hub):
    """A tiny ClipCap run to its end, pushed to ``me/tiny-clipcap`` by ``train --push_to_hub``."""
    run = tmp_path_factory.mktemp("clipcap") / "run"
    with pytest.MonkeyPatch.context() as patch:
        hub.patch(patch)
        train.main(tiny_args(world_cache) + ["--checkpoint_dir", str(run), "--push_to_hub", "me/tiny-clipcap"])
    return run


@pytest.fixture(scope="package")
def hf_run(world_cache, tmp_path_factory):
    """A tiny ``--captioner hf`` run to its end: the world's ViT-GPT-2, pretrained for a few steps (in a copy of
    the world's cache, so that nothing is added to the session's)."""
    root = tmp_path_factory.mktemp("hf")
    source = world_directory(world_cache, "tiny")
    shutil.copytree(source, root / "cache" / os.path.basename(source))
    pretrained = root / "ved"
    pretrain_hf.main(["--preset", "tiny", "--cache_dir", str(root / "cache"), "--output_dir", str(pretrained),
                      "--steps", "10", "--no_progress"])  # fmt: skip
    run = root / "run"
    train.main(tiny_args(str(root / "cache")) + ["--captioner", "hf", "--hf_model", str(pretrained),
                                                 "--checkpoint_dir", str(run)])  # fmt: skip
    return run
