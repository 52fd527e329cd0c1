"""A transformers captioner's frozen vision parts run once per image per training step.

A step reads each image many times: K rollouts decode it, and the scoring passes (one per micro-batch) read it
again; a transformers model computes its vision tower inside each of those calls, from ``pixel_values``.  When
the vision parts are frozen (the default), ``EncodedImages`` keeps what each of them returned for each image the
first time, and serves it to every later call: within ``served()``, every frozen vision module (the tower, its
projector or Q-former, found by name) answers a call over rows whose images it has seen from what it kept, and
computes the others once, on each image's first row only, ``images_per_call`` images at a time (all of the
call's new images by default), which bounds the vision tower's activations (at 512 pixels, SigLIP's are about
75 MB per image in fp32).

Serving works on any model whose vision modules take and return tensors with one leading block of entries per
row of the call (a row's image, its crops or patches): it splits their inputs and outputs by row, so the model's
own code (feature layers, pixel shuffles, patch masks) runs unchanged around them.  The outputs are those of the
same modules on fewer rows, equal up to float rounding to what each call would compute.  ``generate`` with beams
repeats the vision inputs per beam (decoder-only models), so beam search is not served.
"""

import contextlib

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from .static_decoding import say_once


class EncodedImages:
    """The pixels of a batch's images ``[B, ...]`` and, for the rows of a call, which image each row shows.

    ``take(index)`` picks rows (as ``base.take_rows`` does for tensors): the result shares the kept outputs.
    ``rows()`` is the pixels of the rows, for the model's ``pixel_values``; ``served()`` the context in which
    the model's frozen vision ``modules`` answer from what they kept, computing ``images_per_call`` new images
    at a time.
    """

    def __init__(self, pixels, modules=(), image_of_row=None, kept=None, images_per_call=None):
        self.pixels = pixels  # [B, ...]
        self.modules = tuple(modules)
        self.image_of_row = torch.arange(len(pixels), device=pixels.device) if image_of_row is None else image_of_row
        self.kept = {} if kept is None else kept  # module -> _Kept
        self.images_per_call = images_per_call

    def __len__(self):
        return len(self.image_of_row)

    def take(self, index):
        return EncodedImages(self.pixels, self.modules, self.image_of_row[index.to(self.image_of_row.device)],
                             self.kept, self.images_per_call)  # fmt: skip

    def rows(self):
        """The pixels of each row ``[R, ...]``."""
        return self.pixels.index_select(0, self.image_of_row)

    @contextlib.contextmanager
    def served(self):
        """Within the block, each frozen vision module answers from what it kept for these rows' images."""
        saved = {module: module.__dict__.get("forward") for module in self.modules}
        for module, forward in saved.items():  # an instance's own forward (accelerate's hooks) is kept inside
            module.forward = _Served(self, module, forward or type(module).forward.__get__(module))
        try:
            yield self
        finally:
            for module, forward in saved.items():
                if forward is None:
                    del module.__dict__["forward"]
                else:
                    module.forward = forward


def as_images(images):
    """``EncodedImages`` of ``images``, which may be pixels ``[B, ...]`` (then nothing is served)."""
    return images if isinstance(images, EncodedImages) else EncodedImages(images)


class _Kept:
    """What one module returned, per image: its output's structure and each leaf's entries per image."""

    def __init__(self):
        self.spec = None  # the output's pytree structure
        self.counts = None  # per leaf, its entries per image (0: a leaf kept as it is)
        self.images = {}  # image -> its leaves (tensors [count, ...])
        self.refused = False  # the output is not laid out by image: computed in every call


class _Served:
    """A module's ``forward`` for one call over the rows of ``images``: the images it has seen are served."""

    def __init__(self, images, module, compute):
        self.images, self.module, self.compute = images, module, compute

    def __call__(self, *args, **kwargs):
        images = self.images.image_of_row.tolist()  # one transfer per call
        kept = self.images.kept.setdefault(self.module, _Kept())
        inputs, spec = tree_flatten((args, kwargs))
        counts = _per_row(inputs, len(images))
        if counts is None or kept.refused:  # not laid out by row: computed as it comes
            return self.compute(*args, **kwargs)
        first_rows = {}
        for row, image in enumerate(images):
            first_rows.setdefault(image, row)
        new = [row for image, row in first_rows.items() if image not in kept.images]
        if new and not self._keep(kept, inputs, counts, spec, [images[row] for row in new], new):
            return self.compute(*args, **kwargs)
        leaves = [torch.cat(parts) if count else parts[0]
                  for count, parts in zip(kept.counts, zip(*(kept.images[image] for image in images)))]  # fmt: skip
        return tree_unflatten(leaves, kept.spec)

    def _keep(self, kept, inputs, counts, spec, images, rows):
        """Computes the module on ``rows`` (the first rows of new ``images``), ``images_per_call`` at a time,
        and keeps each image's output; False when the output is not laid out by row."""
        per_call = self.images.images_per_call or len(rows)
        for start in range(0, len(rows), per_call):
            index = torch.tensor(rows[start : start + per_call])
            subset = [_rows(leaf, count, index) if count else leaf for leaf, count in zip(inputs, counts)]
            sub_args, sub_kwargs = tree_unflatten(subset, spec)
            leaves, kept.spec = tree_flatten(self.compute(*sub_args, **sub_kwargs))
            kept.counts = _per_row(leaves, len(index))
            if kept.counts is None or not any(kept.counts):
                say_once(f"{type(self.module).__name__}: its output is not laid out by image; it runs in every pass")
                kept.refused = True
                return False
            for position, image in enumerate(images[start : start + per_call]):
                kept.images[image] = [leaf.narrow(0, position * count, count) if count else leaf
                                      for leaf, count in zip(leaves, kept.counts)]  # fmt: skip
        return True


def _per_row(leaves, rows):
    """Per leaf, its entries per row (its leading size / ``rows``; 0 for a leaf that is not a tensor with a
    leading dimension), or None when some tensor's leading size is not a multiple of ``rows``."""
    counts = []
    for leaf in leaves:
        if not torch.is_tensor(leaf) or leaf.dim() == 0:
            counts.append(0)
        elif leaf.shape[0] % rows:
            return None
        else:
            counts.append(leaf.shape[0] // rows)
    return counts


def _rows(leaf, count, index):
    """The blocks of ``count`` entries of rows ``index`` of ``leaf`` ``[rows * count, ...]``."""
    return leaf.unflatten(0, (-1, count)).index_select(0, index.to(leaf.device)).flatten(0, 1)
