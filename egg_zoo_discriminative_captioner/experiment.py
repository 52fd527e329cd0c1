"""What train.py and evaluate.py share: options -> data set, captioner, retriever and encoded splits."""

from dataclasses import dataclass

from .captioners import build_captioner
from .data import EncodedSplit, TransformedImages, encode_images, load_dataset
from .opts import apply_model_defaults
from .retrievers import build_retriever


@dataclass
class Experiment:
    """The pieces of a run before the game is built."""

    dataset: object
    captioner: object
    retriever: object


def build_experiment(opts):
    """Loads the data set, then the captioner and retriever (with the data set's model defaults)."""
    dataset = load_dataset(opts)
    apply_model_defaults(opts, dataset)
    captioner = build_captioner(opts).to(opts.device)
    retriever = build_retriever(opts).to(opts.device)
    return Experiment(dataset, captioner, retriever)


def encode_split(experiment, name, device):
    """A split with its images encoded once by the frozen retriever and, when it caches, the captioner."""
    split = experiment.dataset.split(name)
    captioner, retriever = experiment.captioner, experiment.retriever
    if captioner.cache_inputs:
        sender_inputs = encode_images(
            split, captioner.image_transform, captioner.encode_images, device=device, desc=f"captioner features: {name}"
        )
    else:
        sender_inputs = TransformedImages(split.images, captioner.image_transform)
    receiver_inputs = encode_images(
        split, retriever.image_transform, retriever.encode_images, device=device, desc=f"retriever features: {name}"
    )
    return EncodedSplit(split, sender_inputs, receiver_inputs)
