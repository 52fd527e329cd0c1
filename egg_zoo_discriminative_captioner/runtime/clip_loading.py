"""Loading OpenAI CLIP, shared by the retriever and ClipCap's frozen image encoder."""

import os
import warnings

import torch
from torchvision import transforms

from .errors import UsageError, missing_weights, unreadable_file

with warnings.catch_warnings():  # openai-clip imports pkg_resources, which warns on every import
    warnings.simplefilter("ignore", UserWarning)
    import clip

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_transform(resolution):
    """CLIP's preprocessing (bicubic resize of the short side, centre crop, RGB, CLIP mean/std).

    Written out because the ``clip`` package keeps it private (``clip.clip._transform``).
    """
    return transforms.Compose(
        [
            transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(resolution),
            transforms.Lambda(lambda image: image.convert("RGB")),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


def _read_state_dict(path):
    # Files written by torch.save are plain state dicts; the released CLIP files are TorchScript archives.
    # (clip.load cannot read the former: it retries torch.load on a file handle that jit.load already consumed.)
    with warnings.catch_warnings():  # torch warns about TorchScript archives and deprecates jit.load
        warnings.filterwarnings("ignore", message=".*TorchScript.*")
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except RuntimeError as error:
            if "TorchScript" not in str(error):
                raise
        return torch.jit.load(path, map_location="cpu").state_dict()


def load_clip(name, flag, download_root=None):
    """``(model, preprocess)`` for a name in ``clip.available_models()`` or the path of a CLIP ``.pt`` file.

    The model comes back in fp32 on the CPU, in eval mode; ``flag`` names the option that takes a local path.
    """
    if name in clip.available_models():
        try:
            model, _ = clip.load(name, device="cpu", jit=False, download_root=download_root)
        except OSError as error:  # urllib's URLError is an OSError
            raise missing_weights(f"CLIP {name}", clip.clip._MODELS[name], flag, error) from error
    elif os.path.isfile(name):
        try:
            state_dict = _read_state_dict(name)
            # build_model rounds weights to fp16 (the released files are fp16); reload them at full precision
            model = clip.model.build_model(dict(state_dict)).float()
            model.load_state_dict(state_dict, strict=True)
        except Exception as error:  # unreadable file or foreign key layout: several exception types
            raise UsageError(f"cannot read CLIP checkpoint {name} ({flag}): "
                             f"{unreadable_file(name, error, 'a CLIP model')}") from None  # fmt: skip
    else:
        what = "a directory" if os.path.isdir(name) else "no such file"
        raise UsageError(f"{name!r} ({flag}) is {what}; give a CLIP model name "
                         f"({', '.join(clip.available_models())}) or a CLIP .pt file")  # fmt: skip
    model = model.float().eval()
    return model, clip_transform(model.visual.input_resolution)
