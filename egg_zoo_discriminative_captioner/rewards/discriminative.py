"""DiscriTune's reward as a reward function of TRL's GRPOTrainer and RLOOTrainer (and of any trainer that hands a
reward function a batch of completions with their images).

Each call scores every completion against the call's distinct images, its own image the target and the others
the distractors, with the game's own receiver (``archs.RetrieverReceiver``) and loss (``losses.DiscriminationLoss``):
the reward of a caption is what the game would give it in a batch of those images.  The retriever options are
the game's (``--clip_model``, ``--clip_backend``, ``--clip_pretrained``, ``--retriever_precision``,
``--reward``, ``--reward_temperature``), read by the game's own parser, so a name means the same in both.
Nothing here imports TRL.
"""

from typing import Optional, Sequence

import torch

from ..archs import RetrieverReceiver
from ..losses import DiscriminationLoss, strict_hits
from ..retrievers.base import Retriever
from ..runtime.errors import UsageError
from .calls import images_of, read_call
from .distractors import distractors_of


class DiscriminativeReward:
    """``reward(prompts, completions, completion_ids=None, image=[...], **columns) -> [N]`` floats.

    - ``retriever``: the retriever as ``--clip_model`` takes it, a model name or a file or directory, or
      ``BACKEND:MODEL[:PRETRAINED]`` (``openai:ViT-B/32``, ``transformers:DIR``, ``open_clip:ViT-B-32:TAG``); a list
      of them rewards with each (``--clip_model A B ...``: the mean of their rewards, each at its own temperature
      relative to the first's, paper section 6); or built ``Retriever`` objects.  ``clip_backend``,
      ``clip_pretrained``, ``retriever_precision`` and ``clip_download_root`` are the game's options of the same
      names.
    - ``reward``: "logprob" (the paper's: the log-softmax probability of the target among the candidates),
      "accuracy" (1 when the target scores strictly highest) or "cosine" (the target's cosine / T alone);
      ``temperature``: ``--reward_temperature``, the retriever's own 1/exp(logit_scale) when None.
    - ``distractors``: more candidates, the retriever's image embeddings ``[M, D]`` or its feature-cache directory;
      ``hard_distractors`` k: each caption meets its target's k nearest of them instead of all (``--hard_distractors``,
      ``distractors.py``).
    - ``image_column``: the data set column with each prompt's image ("image"; TRL also passes "images").
    - ``device``: where the retriever runs; by default the current CUDA device (each process's own under
      Accelerate) when there is one, else the CPU, decided at the first call.

    Every call logs, through TRL's ``log_metric``, the first retriever's P@1 among the call's candidates
    (``<name>/p_at_1``: the target strictly above every distractor, as the game and ``evaluate`` count it) and, with
    several retrievers, each other's (``<name>/p_at_1_retriever<i>``).  ``last`` keeps the last call's rewards,
    hits and candidate count.
    """

    def __init__(self, retriever="ViT-B/32", reward="logprob", temperature: Optional[float] = None, *,
                 clip_backend="openai", clip_pretrained=None, retriever_precision="fp32", clip_download_root=None,
                 distractors=None, hard_distractors=0, duplicate_cosine=0.999, image_column="image", device=None,
                 name=None):  # fmt: skip
        retrievers = list(retriever) if isinstance(retriever, (list, tuple)) else [retriever]
        if not retrievers:
            raise UsageError("the reward needs a retriever")
        if all(isinstance(r, Retriever) for r in retrievers):
            loss = DiscriminationLoss(reward, temperature if temperature is not None else retrievers[0].temperature)
        elif any(isinstance(r, Retriever) for r in retrievers):
            raise UsageError("give the retrievers all as names or all as built retrievers")
        else:
            retrievers, loss = _from_options(retrievers, reward, temperature, clip_backend, clip_pretrained,
                                             retriever_precision, clip_download_root)  # fmt: skip
        if distractors is not None and len(retrievers) > 1:
            raise UsageError("distractors are the first retriever's embeddings (as --hard_distractors reads them): "
                             "give one retriever")  # fmt: skip
        self.receiver = RetrieverReceiver(retrievers[0], retrievers[1:]).eval()
        self.loss = loss
        self.distractors = distractors_of(distractors, hard_distractors, duplicate_cosine)
        self.image_column = image_column
        self.device = None if device is None else torch.device(device)
        self.__name__ = name or f"discriminative_{loss.reward}"  # TRL names the reward's logs after it
        self.last = {}

    @property
    def retrievers(self):
        return [self.receiver.retriever, *self.receiver.extra]

    @property
    def temperature(self):
        """The reward's temperature (the first retriever's; the others' scores are scaled to it)."""
        return self.loss.temperature

    def __call__(self, prompts=None, completions=None, completion_ids=None, **columns):
        if completions is None:
            raise UsageError("the reward needs the completions (TRL passes completions=...)")
        call = read_call(completions, images_of(columns, self.image_column))
        rewards, hits = self.score(call.texts, call.images, call.targets)
        log_metric = columns.get("log_metric")
        if log_metric is not None:
            log_metric(f"{self.__name__}/p_at_1", hits[0].mean().item())
            for i in range(1, len(hits)):
                log_metric(f"{self.__name__}/p_at_1_retriever{i + 1}", hits[i].mean().item())
        return rewards.tolist()

    @torch.no_grad()
    def score(self, texts: Sequence[str], images, targets):
        """``(rewards [N], hits [R, N])`` of captions ``texts`` whose targets ``targets`` [N] index the distinct
        PIL ``images`` [C], the candidates; ``hits`` are each retriever's P@1 among the candidates."""
        device = self._device()
        targets = torch.as_tensor(targets, dtype=torch.long, device=device)
        embeddings = self.image_embeddings(images, device)  # [C, D1 + D2 + ...]
        receiver_input, aux_input = embeddings, None
        if self.distractors is not None:
            receiver_input, aux_input = self.distractors.candidates(embeddings, targets)
        scores = self.receiver(list(texts), receiver_input, aux_input)  # [N, C'] or [R, N, C']
        cost, _ = self.loss(None, None, receiver_input, scores, targets, aux_input)
        per_retriever = scores if scores.dim() == 3 else scores.unsqueeze(0)  # [R, N, C']
        hits = torch.stack([strict_hits(s, targets).float() for s in per_retriever])  # [R, N]
        rewards = (-cost).float().cpu()
        self.last = {"rewards": rewards, "hits": hits.cpu(), "candidates": per_retriever.shape[2]}
        return rewards, hits.cpu()

    def image_embeddings(self, images, device):
        """Each retriever's normalised embeddings of PIL ``images`` (its own preprocessing), joined ``[C, D1 + ...]``,
        as the game's receiver reads several retrievers' cached embeddings."""
        parts = []
        for retriever in self.retrievers:
            pixels = torch.stack([retriever.image_transform(image) for image in images]).to(device)  # [C, 3, H, W]
            parts.append(retriever.encode_images(pixels).float())  # [C, D_r]
        return torch.cat(parts, dim=1)

    def _device(self):
        if self.device is None:
            cuda = torch.cuda.is_available()
            self.device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        if next(self.receiver.parameters()).device != self.device:
            self.receiver.to(self.device)
        return self.device


def _from_options(models, reward, temperature, backend, pretrained, precision, download_root):
    """``(retrievers, loss)`` built as the game builds them from the same options (``experiment.py``, ``games.py``)."""
    from ..experiment import extra_retriever_options
    from ..options.parse import config_of
    from ..retrievers import build_retriever

    flags = ["--clip_model", *map(str, models), "--clip_backend", backend, "--retriever_precision", precision,
             "--reward", reward]  # fmt: skip
    if pretrained is not None:
        flags += ["--clip_pretrained", *([pretrained] if isinstance(pretrained, str) else pretrained)]
    if temperature is not None:
        flags += ["--reward_temperature", str(temperature)]
    if download_root is not None:
        flags += ["--clip_download_root", download_root]
    config = config_of(flags)
    retrievers = [build_retriever(config)] + [build_retriever(other) for other in extra_retriever_options(config)]
    temperature = config.reward_temperature if config.reward_temperature is not None else retrievers[0].temperature
    return retrievers, DiscriminationLoss(reward=config.reward, temperature=temperature)
