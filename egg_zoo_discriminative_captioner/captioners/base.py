"""What every captioner offers the game, and the token bookkeeping they share."""

import contextlib
from typing import List, NamedTuple, Optional

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
    exact per-token KL divergence to a reference model summed over the same positions, without gradients.
    """

    message: torch.Tensor  # [B, T] long
    log_prob: torch.Tensor  # [B]
    entropy: torch.Tensor  # [B]
    length: torch.Tensor  # [B] generated tokens, stop token included
    text: List[str]
    kl: Optional[torch.Tensor] = None  # [B] exact KL to a reference, summed over the same positions (if asked)


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
    the decoded text all stop at the first of them) and ``max_len`` and defines ``condition(sender_input)`` (the
    image representation the language model reads, with gradients where it trains), ``_decode_tokens(condition,
    **decoding) -> [B, max_len]`` (``transformers`` generation, padded after the stop token), ``_hidden(condition,
    tokens) -> [B, T, E]`` (teacher-forced last hidden states, each position predicting its token) and
    ``lm_head`` (the ``nn.Linear`` from hidden states to the vocabulary).  ``_decode_tokens`` decodes through
    ``generate_with`` and ``_generation_config``: ``sample=True`` draws from the policy, other settings are
    ``GenerationConfig`` fields.

    Rollouts are sampled without gradients and then scored in one teacher-forced pass with gradients, so the
    REINFORCE log-probability is that of the captions actually emitted.  Dropout is switched off for the same
    reason, and so that decoding does not depend on the Trainer's train/eval mode.
    """

    decoding = "auto"  # --decoding: how captions are decoded (captioners/static_decoding.py)

    @staticmethod
    def switch_off_dropout(module):
        for sub in module.modules():
            if isinstance(sub, nn.Dropout):
                sub.p = 0.0

    def rollout(self, sender_input, greedy=False, num_beams=1, kl_reference=None, per_image=1):
        """Captions with their summed log-probabilities (with gradients): sampled from the policy, its greedy
        argmax (``greedy``), or with ``num_beams`` > 1 the top beam-search caption.

        ``kl_reference`` (``archs.FrozenReference`` or ``archs.LanguageModelReference``) adds the exact per-token
        KL to it (``Rollout.kl``), computed in the scoring pass from the same hidden states.  ``per_image`` K > 1
        decodes K captions per image, image i's at rows i*K ... i*K + K - 1: its condition is computed once and
        shared by its K rollouts.
        """
        condition = self.condition(sender_input)
        if per_image > 1:
            condition = condition.repeat_interleave(per_image, dim=0)
            sender_input = sender_input.repeat_interleave(per_image, dim=0)  # what the KL reference reads
        with torch.no_grad():
            if num_beams > 1:
                tokens = self._decode(condition.detach(), num_beams=num_beams)
            else:
                tokens = self._decode(condition.detach(), sample=not greedy)
        log_prob, entropy, kl = self._score(condition, tokens, kl_reference, sender_input)
        return self._finish(tokens, log_prob, entropy, kl)

    @torch.no_grad()
    def generate(self, sender_input, num_beams=5):
        """Beam-search captions (length-normalised scores); greedy captions with ``num_beams=1``."""
        tokens = self._decode(self.condition(sender_input), num_beams=num_beams)
        zeros = torch.zeros(tokens.shape[0], device=tokens.device)
        return self._finish(tokens, zeros, zeros)

    def score(self, sender_input, tokens):
        """Summed log-probability and mean entropy of given caption tokens ``[B, T]`` (with gradients)."""
        return self._score(self.condition(sender_input), tokens)[:2]

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
        """The ``StaticDecoder`` of ``--decoding static|compiled|auto``, or None where decoding goes through
        ``generate`` (``--decoding generate``, or a model it does not support: said once unless ``auto``)."""
        if self.decoding == "generate":
            return None
        language_model, pad_id = self._prefix_language_model() or (None, None)
        reason = "it conditions its language model by other means than a prefix" if language_model is None else None
        reason = reason or unsupported(language_model)
        if reason:
            if self.decoding != "auto":
                say_once(f"--decoding {self.decoding}: {type(self).__name__} decodes with generate ({reason})")
            return None
        decoder = self.__dict__.get("_static")
        compiled = self.decoding == "compiled"
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

    def _score(self, condition, tokens, kl_reference=None, sender_input=None):
        """Summed log-probability, mean entropy and (with ``kl_reference``) summed exact KL, ``[B]`` each."""
        mask = caption_mask(tokens, self.stop_ids)  # [B, T]
        width = int(mask.sum(1).max())  # the batch's longest caption: the positions after it are all padding
        tokens, mask = tokens[:, :width], mask[:, :width]  # [B, width]
        hidden = self._hidden(condition, tokens)  # [B, width, E]
        token_log_prob, entropy = head_token_log_probs(hidden, self.lm_head, tokens, getattr(self, "ban", None))
        mask = mask.float()
        kl = None
        if kl_reference is not None:
            kl = (kl_reference.token_kl(sender_input, tokens, hidden.detach(), self.lm_head) * mask).sum(1)  # [B]
        return (token_log_prob * mask).sum(1), (entropy * mask).sum(1) / mask.sum(1).clamp(min=1), kl

    def _finish(self, tokens, log_prob, entropy, kl=None):
        mask = caption_mask(tokens, self.stop_ids)  # [B, T]
        return Rollout(tokens, log_prob, entropy, mask.sum(1).float(), self.decode(tokens, mask), kl)
