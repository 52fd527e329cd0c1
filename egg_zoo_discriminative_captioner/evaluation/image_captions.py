"""Captions of image files, for ``caption.py``: read each image, skip the unreadable ones, beam-search captions."""

import sys

import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm


def read_image(path):
    """The image as RGB, or the reason it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB"), None
    except (OSError, UnidentifiedImageError, ValueError) as error:
        return None, f"{type(error).__name__}: {error}"


@torch.no_grad()
def caption_images(captioner, paths, batch_size=32, num_beams=5, device="cpu"):
    """``(rows, skipped)``: ``{"image", "caption"}`` per readable image, ``(path, reason)`` per unreadable one."""
    rows, skipped = [], []
    for start in tqdm(range(0, len(paths), batch_size), desc="captioning", unit="batch"):
        batch, pixels = [], []
        for path in paths[start : start + batch_size]:
            image, error = read_image(path)
            if image is None:
                skipped.append((path, error))
                print(f"skipped {path}: {error}", file=sys.stderr, flush=True)
                continue
            batch.append(path)
            pixels.append(captioner.image_transform(image))
        if not batch:
            continue
        inputs = torch.stack(pixels).to(device)
        if captioner.cache_inputs:
            inputs = captioner.encode_images(inputs)
        texts = captioner.generate(inputs, num_beams=num_beams).text
        rows += [{"image": path, "caption": text} for path, text in zip(batch, texts)]
    return rows, skipped
