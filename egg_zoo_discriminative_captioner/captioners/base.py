"""What every captioner offers the game (``Captioner``), and the token bookkeeping they share."""

import contextlib
from typing import Any, Callable, List, NamedTuple, Optional, Protocol, Tuple, runtime_checkable

import torch
from torch import nn
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from .fused import head_token_log_probs, vocabulary_slices
from .static_decoding import StaticDecoder, draw_tokens, say_once, unsupported


class Rollout(NamedTuple):
    """Captions for a batch of images, as the game's Sender returns them.

    ``message`` holds token ids padded after the stop token to a fixed width (so EGG can concatenate batches);
    ``log_prob`` is the caption log-probability summed over generated tokens up to and including the stop
    token, with gradients; ``entropy`` is the mean per-token entropy over the same positions.  Decoded captions
    (beam search) carry zero ``log_prob`` and ``entropy``.  ``kl``, only when a rollout is asked for it, is the
    KL divergence to a reference model summed over the same positions, without gradients.
    """

    message: torch.Tensor  # [B, T] long
    log_prob: torch.Tensor  # [B]
    entropy: torch.Tensor  # [B]
    length: torch.Tensor  # [B] generated tokens, stop token included
    text: List[str]
    kl: Optional[torch.Tensor] = None  # [B] KL to a reference, summed over the same positions (if asked)


class Captions(NamedTuple):
    """Captions decoded for a training step, not yet scored: what the scoring passes need to score any rows.

    Row r is a caption of image ``image_of_row[r]`` (with K rollouts per image, image i's are rows i*K ...
    i*K + K - 1).  ``condition`` and ``encoded`` hold one entry per image: what the language model reads
    (with gradients where it trains) and the frozen encoding a KL reference reads; ``take_rows`` picks a row's.
    """

    message: torch.Tensor  # [N, T] long, padded after the stop token
    length: torch.Tensor  # [N] generated tokens, stop token included
    text: List[str]
    divisor: torch.Tensor  # [N] what --log_prob_normalization mean divides a caption's sums by
    image_of_row: torch.Tensor  # [N] long
    condition: Any  # per image, [B, ...] (a tensor, or an object with take(index))
    encoded: Any  # per image, [B, ...] likewise


class Scores(NamedTuple):
    """Scoring-pass values of caption rows ``[R]`` each: with gradients where autograd records them."""

    log_prob: torch.Tensor  # summed over the caption's tokens, stop token included
    entropy: torch.Tensor  # mean per-token entropy over the same positions
    kl: Optional[torch.Tensor] = None  # summed KL to the reference over the same positions, no gradients


@runtime_checkable
class KLReference(Protocol):
    """What a captioner's KL penalty reads of its KL reference (a ``FrozenModule``, called as one: ``forward``)."""

    @property
    def lm_head(self) -> nn.Linear: ...  # its output layer, over the policy's vocabulary
    def forward(self, encoded, tokens: torch.Tensor) -> torch.Tensor: ...  # summed log-probability [B]
    # exact KL(reference || policy) [B, T] from the policy's hidden states [B, T, E] and head, without ``ban`` [V]
    def token_kl(self, encoded, tokens: torch.Tensor, hidden: torch.Tensor, head: nn.Linear,
                 ban: Optional[torch.Tensor] = None) -> torch.Tensor: ...  # fmt: skip


@runtime_checkable
class Captioner(Protocol):
    """What the game, the feature cache, evaluation and checkpoints use of a captioner, an ``nn.Module``
    (``ConditionalCaptioner`` implements all but the model's own members; a ``FrozenReference`` copies one).
    ``sender_input`` ``[B, ...]`` is what ``encode_images`` makes of preprocessed pixels where ``cache_inputs``,
    else the pixels themselves."""

    cache_inputs: bool  # whether encode_images is frozen, so that its outputs are computed once per image
    decoder: str  # --decoder: what decodes captions (static_decoding.py)
    image_transform: Callable  # PIL image -> preprocessed pixels
    tokenizer: Any  # the transformers tokenizer of the captions
    stop_ids: List[int]  # a caption ends at the first of them

    @property
    def config(self) -> Any: ...  # a dataclass saved with every checkpoint; resuming checks it
    @property
    def lm_head(self) -> nn.Linear: ...  # last hidden states -> vocabulary (a KL reference's must match it)
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor: ...  # pixels [N, 3, H, W] -> sender_input
    # training captions decoded without gradients, per_image of each image; then Scores of their rows
    def sample(self, sender_input, greedy=False, num_beams=1, per_image=1, images_per_decode=None,
               images_per_encode=None) -> Captions: ...  # fmt: skip
    def score_rows(self, captions, rows=None, kl_reference: Optional[KLReference] = None,
                   kl_estimator="exact") -> Scores: ...  # fmt: skip
    # sample and score_rows of every row in one pass; beam-search captions (greedy: num_beams=1), unscored
    def rollout(self, sender_input, greedy=False, num_beams=1, kl_reference: Optional[KLReference] = None,
                per_image=1) -> Rollout: ...  # fmt: skip
    def generate(self, sender_input, num_beams=5) -> Rollout: ...
    # summed log-probability and mean entropy [B] of caption tokens [B, T]; mean token cross-entropy of references
    def score(self, sender_input, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]: ...
    def mle_loss(self, sender_input, captions: List[str]) -> torch.Tensor: ...
    def trainable_parameters(self) -> List[nn.Parameter]: ...  # what the optimizer updates
    def save_pretrained(self, directory: str) -> str: ...  # the model in its native format; returns its path


def take_rows(values, index):
    """``values`` ``[B, ...]`` at ``index`` ``[R]``: a tensor's rows (gradients flow back to the picked rows), an
    object's ``take(index)``, None as None."""
    if values is None:
        return None
    if torch.is_tensor(values):
        return values.index_select(0, index.to(values.device))
    return values.take(index)


def period_token_ids(tokenizer):
    """Ids of every vocabulary entry whose token string contains '.' (GPT-2: "Ġ.", "...", ".\"", ...).

    The authors' ``StopTokenLogitsProcessor`` ends a caption after any of them; ClipCap's own decoding stops
    only at the '.' token.  Read once from the tokenizer's vocabulary (added tokens included).
    """
    return sorted({index for token, index in tokenizer.get_vocab().items() if "." in token})


def stop_token_ids(tokenizer, ids, any_period=False):
    """The ids a caption stops at: ``ids`` (in their order), and with ``any_period`` every token containing '.'."""
    return list(dict.fromkeys([*ids, *(period_token_ids(tokenizer) if any_period else ())]))


def caption_mask(tokens, stop_ids):
    """True at generated positions up to and including each row's first stop token.  ``tokens``: [B, T]."""
    is_stop = torch.isin(tokens, torch.as_tensor(stop_ids, device=tokens.device))  # [B, T]
    stops_before = is_stop.long().cumsum(dim=1) - is_stop.long()  # [B, T] stop tokens strictly before t
    return stops_before == 0


def pad_to(tokens, width, pad_id):
    """Right-pads ``tokens`` [B, T] with ``pad_id`` to ``[B, width]``."""
    if tokens.shape[1] >= width:
        return tokens[:, :width]
    padding = tokens.new_full((tokens.shape[0], width - tokens.shape[1]), pad_id)
    return torch.cat([tokens, padding], dim=1)


def pad_batch(rows, pad_id):
    """Token id lists -> ``tokens`` [B, T] padded with ``pad_id`` and ``labels`` [B, T] with -100 at padding.

    -100 is the ignore index of ``cross_entropy``: padding is ignored, never mistaken for a real token.
    """
    width = max(len(ids) for ids in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, ids in enumerate(rows):
        tokens[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(ids)] = torch.tensor(ids)
    return tokens, labels


def sequence_log_prob(logits, tokens, mask):
    """Summed log-probability and mean entropy of ``tokens`` under ``logits``, over ``mask``.

    ``logits`` [B, T, V] predict ``tokens`` [B, T]; ``mask`` [B, T] marks generated positions.  The captioners
    score with ``fused.head_token_log_probs`` instead, which computes the same without ``[B, T, V]`` temporaries.
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V]
    token_log_prob = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [B, T]
    entropy = -(log_probs.exp() * log_probs).sum(-1)  # [B, T]
    mask = mask.to(log_probs.dtype)
    lengths = mask.sum(1).clamp(min=1)  # [B]
    return (token_log_prob * mask).sum(1), (entropy * mask).sum(1) / lengths


class BanTokens(LogitsProcessor):
    """Adds ``ban`` [V] (``fused.BANNED`` at tokens a caption may not hold, such as a model's image placeholders)
    to the scores, as the scoring pass adds it to the logits."""

    def __init__(self, ban):
        self.ban = ban

    def __call__(self, input_ids, scores):
        return scores + self.ban.to(scores.device, scores.dtype).clamp(min=torch.finfo(scores.dtype).min)


class PolicySampler(LogitsProcessor):
    """Draws each next token from the softmax of the scores it receives (``draw_tokens``), and makes greedy
    decoding pick it: the drawn token's score becomes +inf and every other score is left as it came, so
    ``output_scores`` shows what the draw was made from.
    """

    def __call__(self, input_ids, scores):
        return scores.scatter(1, draw_tokens(scores), float("inf"))


@contextlib.contextmanager
def own_generation_config(model):
    """Sets the model's ``generation_config`` aside while decoding, so only the settings given apply.

    transformers fills every unset generation field from it: a checkpoint whose config sets
    ``repetition_penalty``, ``no_repeat_ngram_size``, ``min_length``, ``bad_words_ids``, ``suppress_tokens``,
    forced tokens or sampling warpers would otherwise make rollouts sample from a processed distribution while
    the scoring pass uses the raw one (off-policy REINFORCE).
    """
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def generate_with(model, generation_config, sample=False, ban=None, **inputs):
    """``model.generate(**inputs)`` under ``generation_config`` alone; ``sample``: draw from the raw policy
    (with ``ban``, the policy without the banned tokens, as ``BanTokens`` says)."""
    processors = LogitsProcessorList([BanTokens(ban)] if ban is not None else [])
    processors.extend([PolicySampler()] if sample else [])
    with own_generation_config(model):
        return model.generate(**inputs, generation_config=generation_config, logits_processor=processors)


class ConditionalCaptioner(nn.Module):
    """Decoding and scoring shared by captioners that condition a language model on an image.

    A subclass sets ``tokenizer``, ``stop_ids`` (from ``stop_token_ids``: decoding, the log-probability mask and
    the decoded text all stop at the first of them) and ``max_len`` and defines ``condition_of(encoded)`` (the
    image representation the language model reads, with gradients where it trains, from the frozen encoding
    ``encode(sender_input)``, by default the input itself), ``_decode_tokens(condition, **decoding) -> [B,
    max_len]`` (``transformers`` generation, padded after the stop token), ``_hidden(condition, tokens) -> [B,
    T, E]`` (teacher-forced last hidden states, each position predicting its token) and ``lm_head`` (the
    ``nn.Linear`` from hidden states to the vocabulary).  ``_decode_tokens`` decodes through ``generate_with``
    and ``_generation_config``: ``sample=True`` draws from the policy, other settings are ``GenerationConfig``
    fields.

    Rollouts are sampled without gradients (``sample``) and then scored in teacher-forced passes with gradients
    (``score_rows``), so the REINFORCE log-probability is that of the captions actually emitted.  Dropout is
    switched off for the same reason, and so that decoding does not depend on the Trainer's train/eval mode.
    An image is encoded and conditioned once per step, whatever the number of its rollouts and of the passes
    that read it.
    """

    decoder = "auto"  # --decoder: what decodes captions (captioners/static_decoding.py)

    def __init__(self):
        super().__init__()
        # [V]: fused.BANNED at the tokens no caption may hold (a model's image placeholders); None bans nothing
        self.register_buffer("ban", None, persistent=False)

    @staticmethod
    def switch_off_dropout(module):
        """No dropout anywhere in ``module`` in training either: its ``nn.Dropout`` modules, and the rates that
        transformers models keep as plain attributes for functional dropout and layer drop (OPT, BART: an
        ``OPTDecoderLayer``'s ``dropout``, an attention's ``attention_dropout``, a decoder's ``layerdrop``)."""
        for sub in module.modules():
            if isinstance(sub, nn.Dropout):
                sub.p = 0.0
            for name, value in vars(sub).items():
                rate = isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool))
                if rate and value and ("dropout" in name or name == "layerdrop"):
                    setattr(sub, name, 0.0)

    def encode(self, sender_input):
        """The frozen part of the image representation (computed without gradients; a KL reference shares it)."""
        return sender_input

    def frozen_modules(self):
        """Frozen modules a KL reference shares with this captioner instead of copying them (besides
        ``FrozenModule`` parts and frozen parameters, which it always shares)."""
        return []

    def encode_in_parts(self, sender_input, images_per_call=None):
        """``encode`` of ``images_per_call`` images at a time (all by default), to bound the encoder's activations."""
        parts = [self.encode(part) for part in sender_input.split(images_per_call or len(sender_input))]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def condition(self, sender_input):
        """What the language model reads of each image, with gradients where it trains."""
        return self.condition_of(self.encode(sender_input))

    def sample(self, sender_input, greedy=False, num_beams=1, per_image=1, images_per_decode=None,
               images_per_encode=None):  # fmt: skip
        """``Captions`` decoded without gradients: sampled from the policy, its greedy argmax (``greedy``), or
        with ``num_beams`` > 1 the top beam-search caption; ``per_image`` K captions of each image.

        ``images_per_decode`` r decodes r images (r * K rows) at a time instead of the whole batch, to bound the
        decoding's key-value cache: the captions then draw other random numbers than one decode of the batch
        would, from the same distribution.  ``images_per_encode`` bounds the images the frozen encoder reads at
        once (``encode_in_parts``).
        """
        encoded = self.encode_in_parts(sender_input, images_per_encode)
        condition = self.condition_of(encoded)
        batch = sender_input.shape[0]
        image_of_row = torch.arange(batch, device=sender_input.device).repeat_interleave(per_image)  # [B * K]
        step = (images_per_decode or batch) * per_image
        with torch.no_grad():  # each decode returns [rows, max_len]
            tokens = torch.cat([self._decode(take_rows(condition, image_of_row[start : start + step]),
                                             sample=not greedy and num_beams == 1, num_beams=num_beams)
                                for start in range(0, len(image_of_row), step)])  # fmt: skip
        mask = caption_mask(tokens, self.stop_ids)  # [N, T]
        length = mask.sum(1).float()
        return Captions(tokens, length, self.decode(tokens, mask), self.mean_divisor(tokens, length), image_of_row,
                        condition, encoded)  # fmt: skip

    def score_rows(self, captions, rows=None, kl_reference=None, kl_estimator="exact"):
        """``Scores`` of ``captions``' rows ``rows`` (all by default): one teacher-forced pass, with gradients
        where autograd records them.  ``kl_reference`` (``kl_references.py``) adds each caption's KL to it:
        "exact", the per-token ``KL(reference || policy)`` over the vocabulary from the same hidden states;
        "sampled", ``log p(caption) - log p_ref(caption)``."""
        if rows is None:
            rows = torch.arange(len(captions.message), device=captions.message.device)
        images = captions.image_of_row[rows]
        tokens = captions.message[rows]
        encoded = take_rows(captions.encoded, images) if kl_reference is not None else None
        exact = kl_reference if kl_estimator == "exact" else None
        log_prob, entropy, kl = self._score(take_rows(captions.condition, images), tokens, exact, encoded)
        if kl_reference is not None and kl_estimator != "exact":
            kl = log_prob.detach() - kl_reference(encoded, tokens)
        return Scores(log_prob, entropy, kl)

    def rollout(self, sender_input, greedy=False, num_beams=1, kl_reference=None, per_image=1):
        """Captions with their summed log-probabilities (with gradients): ``sample`` and ``score_rows`` of every
        row in one pass; ``kl_reference`` adds the exact KL to it (``Rollout.kl``)."""
        captions = self.sample(sender_input, greedy=greedy, num_beams=num_beams, per_image=per_image)
        scores = self.score_rows(captions, kl_reference=kl_reference)
        return Rollout(captions.message, scores.log_prob, scores.entropy, captions.length, captions.text, scores.kl)

    @torch.no_grad()
    def generate(self, sender_input, num_beams=5):
        """Beam-search captions (length-normalised scores); greedy captions with ``num_beams=1``."""
        tokens = self._decode(self.condition(sender_input), num_beams=num_beams)
        zeros = torch.zeros(tokens.shape[0], device=tokens.device)
        return self._finish(tokens, zeros, zeros)

    def score(self, sender_input, tokens):
        """Summed log-probability and mean entropy of given caption tokens ``[B, T]`` (with gradients)."""
        return self._score(self.condition(sender_input), tokens)[:2]

    def mean_divisor(self, tokens, length):
        """What ``--log_prob_normalization mean`` divides a caption's sums by: its length, stop token included."""
        return length

    def decode(self, tokens, mask):
        """Caption strings of ``tokens`` [B, T], keeping the positions in ``mask`` (a ``caption_mask``)."""
        lengths = mask.sum(1).tolist()  # one transfer each, not one per row: the mask is a prefix of each row
        kept = [row[:length] for row, length in zip(tokens.tolist(), lengths)]
        return [text.strip() for text in self.tokenizer.batch_decode(kept, skip_special_tokens=True)]

    def _decode(self, condition, sample=False, num_beams=1):
        decoder = self._static_decoder()
        if decoder is not None and num_beams > 1:
            return decoder.beam_search(condition, self.max_len, self.stop_ids, num_beams)
        if decoder is not None:
            return decoder.decode(condition, self.max_len, self.stop_ids, sample)
        with vocabulary_slices(self, self.lm_head):
            return self._decode_tokens(condition, sample=sample, num_beams=num_beams)

    def _static_decoder(self):
        """The ``StaticDecoder`` of ``--decoder static|compiled|auto``, or None where decoding goes through
        ``generate`` (``--decoder generate``, or a model it does not support: said once unless ``auto``)."""
        if self.decoder == "generate":
            return None
        language_model, pad_id = self._prefix_language_model() or (None, None)
        reason = "it conditions its language model by other means than a prefix" if language_model is None else None
        reason = reason or unsupported(language_model)
        if reason:
            if self.decoder != "auto":
                say_once(f"--decoder {self.decoder}: {type(self).__name__} decodes with generate ({reason})")
            return None
        decoder = self.__dict__.get("_static")
        compiled = self.decoder == "compiled"
        if decoder is None or decoder.model is not language_model or decoder.compiled != compiled:
            decoder = StaticDecoder(language_model, self.lm_head, pad_id, compiled=compiled)
            self.__dict__["_static"] = decoder  # a plain attribute: not a submodule, not in the state dict
        return decoder

    def _prefix_language_model(self):
        """``(language model, pad id)``: the model whose continuation of ``condition`` (prefix embeddings) is the
        caption, for ``StaticDecoder``; None where the caption is decoded otherwise (cross-attention, a prompt)."""
        return None

    def _logits(self, condition, tokens):
        return self.lm_head(self._hidden(condition, tokens))  # [B, T, V]

    def _generation_config(self, pad_id, **settings):
        """Decoding settings every captioner shares: at most ``max_len`` new tokens, stopping at ``stop_ids``."""
        return GenerationConfig(max_new_tokens=self.max_len, eos_token_id=list(self.stop_ids), pad_token_id=pad_id,
                                **settings)  # fmt: skip

    def _score(self, condition, tokens, kl_reference=None, encoded=None):
        """Summed log-probability, mean entropy and (with ``kl_reference``, which reads ``encoded``) summed exact
        KL, ``[B]`` each."""
        mask = caption_mask(tokens, self.stop_ids)  # [B, T]
        width = int(mask.sum(1).max())  # the batch's longest caption: the positions after it are all padding
        tokens, mask = tokens[:, :width], mask[:, :width]  # [B, width]
        hidden = self._hidden(condition, tokens)  # [B, width, E]
        token_log_prob, entropy = head_token_log_probs(hidden, self.lm_head, tokens, self.ban)
        mask = mask.float()
        kl = None
        if kl_reference is not None:
            kl = (kl_reference.token_kl(encoded, tokens, hidden.detach(), self.lm_head, self.ban) * mask).sum(1)  # [B]
        return (token_log_prob * mask).sum(1), (entropy * mask).sum(1) / mask.sum(1).clamp(min=1), kl

    def _finish(self, tokens, log_prob, entropy, kl=None):
        mask = caption_mask(tokens, self.stop_ids)  # [B, T]
        return Rollout(tokens, log_prob, entropy, mask.sum(1).float(), self.decode(tokens, mask), kl)
