"""The frozen KL references a game may regularise its captioner towards (``--kl_reference``).

A KL reference (``captioners.base.KLReference``) is a ``FrozenModule`` with ``forward(encoded, tokens) -> [B]``
(the summed log-probability of caption tokens under it, for the sampled KL estimate) and ``token_kl(encoded,
tokens, hidden, head, ban) -> [B, T]`` (the exact per-token KL from the policy's last hidden states and output
head, over the distribution without the tokens ``ban`` excludes, the one rollouts are sampled from).  ``encoded``
is the policy captioner's frozen encoding of the images (``ConditionalCaptioner.encode``), which a reference reads
instead of encoding them again.
"""

import copy

import torch

from .captioners.base import ConditionalCaptioner, KLReference, caption_mask
from .captioners.fused import head_kl, head_token_log_probs
from .runtime.precision import full_precision
from .runtime.pretrained import FrozenModule


class FrozenReference(FrozenModule):
    """A frozen copy of the pretrained captioner, scoring the policy's captions for the KL penalty (in fp32).

    Only the trainable part is copied: frozen parts (ClipCap's CLIP, BLIP's frozen vision encoder) are shared
    with the policy, so the reference reuses the image features the policy computed for the same batch.  With
    LoRA only the adapters are copied, and as they start at zero the reference is the base model.
    """

    def __init__(self, captioner: ConditionalCaptioner):
        super().__init__()
        shared = {id(module): module for module in captioner.modules() if isinstance(module, FrozenModule)}
        shared.update({id(module): module for module in captioner.frozen_modules()})
        # and every frozen parameter (a transformers captioner's vision tower, a LoRA captioner's whole base)
        shared.update({id(p): p for p in captioner.parameters() if not p.requires_grad})
        self.captioner = copy.deepcopy(captioner, memo=shared)
        self.freeze()

    @property
    def lm_head(self):
        return self.captioner.lm_head

    @torch.no_grad()
    def forward(self, encoded, tokens):
        """Summed log-probability ``[B]`` of caption ``tokens`` under the pretrained captioner."""
        with full_precision(tokens.device.type):
            return self.captioner._score(self.captioner.condition_of(encoded), tokens)[0]

    @torch.no_grad()
    def token_kl(self, encoded, tokens, hidden, head, ban=None):
        """Exact ``KL(reference || policy)`` ``[B, T]`` at each position of ``tokens`` [B, T], from the policy's
        last hidden states ``hidden`` [B, T, E] and its output ``head``, both without the tokens ``ban`` [V]
        excludes."""
        with full_precision(tokens.device.type):
            reference_hidden = self.captioner._hidden(self.captioner.condition_of(encoded), tokens)
            return head_kl(hidden, head, reference_hidden, self.lm_head, ban)


class LanguageModelReference(FrozenModule):
    """A frozen, unconditioned language model as the KL reference: the authors' ``KLRegularizer``.

    The released GPT-2 the captioner was initialised from, fed the beginning-of-text token and then the caption,
    never the image: ``KL(GPT-2 || policy)`` at each generated position keeps the finetuned captioner's language
    close to plain English rather than to the pretrained captioner.  ``language_model`` is a transformers causal
    language model (``GPT2LMHeadModel``) over the captioner's vocabulary; ``bos_id`` starts its context and
    ``stop_ids`` are the captioner's (a caption's log-probability stops where the policy's does).
    """

    def __init__(self, language_model, bos_id, stop_ids):
        super().__init__()
        if bos_id is None:
            raise ValueError("the reference language model needs a beginning-of-text token to start its context")
        self.language_model = language_model
        self.bos_id = bos_id
        self.stop_ids = list(stop_ids)
        self.freeze()

    @property
    def lm_head(self):
        return self.language_model.get_output_embeddings()

    def hidden(self, tokens):
        """The language model's last hidden states ``[B, T, E]`` at the positions predicting ``tokens`` [B, T]."""
        bos = tokens.new_full((tokens.shape[0], 1), self.bos_id)
        context = torch.cat([bos, tokens[:, :-1]], dim=1)  # [B, T]: BOS predicts the first token
        return self.language_model.base_model(input_ids=context, use_cache=False).last_hidden_state

    @torch.no_grad()
    def forward(self, encoded, tokens):
        """Summed log-probability ``[B]`` of caption ``tokens`` under the language model (up to the stop token);
        it reads no image."""
        with full_precision(tokens.device.type):
            mask = caption_mask(tokens, self.stop_ids).float()  # [B, T]
            log_prob, _ = head_token_log_probs(self.hidden(tokens), self.lm_head, tokens)  # [B, T]
            return (log_prob * mask).sum(1)

    @torch.no_grad()
    def token_kl(self, encoded, tokens, hidden, head, ban=None):
        """Exact ``KL(language model || policy)`` ``[B, T]`` at each position; see ``FrozenReference.token_kl``."""
        with full_precision(tokens.device.type):
            return head_kl(hidden, head, self.hidden(tokens), self.lm_head, ban)


__all__ = ["FrozenReference", "KLReference", "LanguageModelReference"]  # KLReference: captioners/base.py's
