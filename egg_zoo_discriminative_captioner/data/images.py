"""Lazy image sources: files on disk, members of webdataset tar shards, and views of either.

Nothing here decodes an image until it is indexed.  ``images[i]`` returns an RGB ``PIL.Image`` or raises one of
``IMAGE_ERRORS`` for a missing, truncated or corrupted image; callers that must not stop (the feature cache
build, the decoding of BLIP's pixels) catch those and count the image as unreadable.
"""

import io
import os
import tarfile
from typing import List, NamedTuple, Sequence

from PIL import Image

# What a broken image raises: missing or unreadable files, truncated data, bad headers, decompression bombs.
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def decode_image(source):
    """An RGB image from a path or a binary file object, fully decoded (so a truncated file fails here)."""
    with Image.open(source) as image:
        return image.convert("RGB")


class ImageFiles:
    """Images stored as files: ``images[i]`` opens ``paths[i]``."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        return decode_image(self.paths[index])


class TarMember(NamedTuple):
    """Where one image's bytes sit inside a tar shard."""

    shard: str
    offset: int
    size: int


class TarImages:
    """Images stored inside tar shards (webdataset), read by seeking to each member's data: random access."""

    def __init__(self, members: Sequence[TarMember]):
        self.members = list(members)

    def __len__(self):
        return len(self.members)

    def __getitem__(self, index):
        member = self.members[index]
        data = read_member(member)
        if len(data) != member.size:
            raise OSError(f"{member.shard}: image data truncated")
        return decode_image(io.BytesIO(data))


class ImageSubset:
    """The images of ``images`` at ``indices`` (a split without its broken images)."""

    def __init__(self, images, indices: List[int]):
        self.images = images
        self.indices = list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.images[self.indices[index]]


def existing_files(directory):
    """The names of the files in ``directory`` (one directory listing instead of a ``stat`` per image)."""
    try:
        return {entry.name for entry in os.scandir(directory) if entry.is_file()}
    except OSError:
        return set()


def read_shard(path):
    """The samples of one webdataset tar shard: ``({key: {extension: TarMember}}, readable)``.

    A sample's key is its member name up to the first dot of the base name, as webdataset groups files; a
    truncated or corrupted shard yields the samples read before the damage and ``readable=False``.
    """
    samples = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                directory, base = os.path.split(info.name)
                key, _, extension = base.partition(".")
                samples.setdefault(os.path.join(directory, key), {})[extension.lower()] = TarMember(
                    path, info.offset_data, info.size
                )
        return samples, True
    except (tarfile.TarError, OSError, EOFError):
        return samples, False


def read_member(member: TarMember):
    """The bytes of a tar member, read by seeking to them (fewer when a truncated shard cut it short)."""
    with open(member.shard, "rb") as f:
        f.seek(member.offset)
        return f.read(member.size)


def read_member_text(member: TarMember):
    """The UTF-8 text of a tar member (a webdataset ``.txt`` or ``.json`` file)."""
    return read_member(member).decode("utf-8", errors="replace")


class _Readability:
    """``images[i]`` decodes: True or False (for counting broken images in DataLoader workers)."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        try:
            self.images[index]
            return True
        except IMAGE_ERRORS:
            return False


def unreadable_images(images, num_workers=0, desc="decoding"):
    """Indices of the images that cannot be decoded (decoded in ``num_workers`` DataLoader workers)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    loader = DataLoader(_Readability(images), batch_size=64, num_workers=num_workers, collate_fn=list,
                        generator=torch.Generator())  # leaves the global random state alone (exact resume)
    flags = [flag for batch in tqdm(loader, desc=desc, leave=False) for flag in batch]
    return [index for index, flag in enumerate(flags) if not flag]
