"""What a frozen retriever offers (``Retriever``): the members ``archs.RetrieverReceiver``, the reward's temperature
and the feature cache read.  Imports nothing heavy, so that any module can name it."""

from typing import TYPE_CHECKING, Callable, List, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@runtime_checkable
class Retriever(Protocol):
    """A frozen text-to-image retriever (a ``FrozenModule``): embeddings of images and of captions, both fp32 and
    L2-normalised, whose dot products are the cosines the reward turns into a softmax over the candidates."""

    temperature: float  # the softmax temperature its own training used, 1 / exp(logit_scale)
    image_transform: Callable  # PIL image -> preprocessed pixels (the feature cache runs it in its workers)

    def encode_images(self, pixels: "torch.Tensor") -> "torch.Tensor": ...  # pixels [N, 3, H, W] -> [N, D]
    def encode_texts(self, texts: List[str]) -> "torch.Tensor": ...  # [N, D]; each backend's tokenizer truncates
