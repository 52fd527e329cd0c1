"""The language-model head fused with the per-token log-probability and entropy of given tokens.

Scoring a batch of captions needs, per position, ``log p(token) = logit[token] - logsumexp(logits)`` and the
entropy ``lse - sum(p * logits)``.  Written with ``log_softmax`` and autograd, every step of that keeps its own
``[B, T, V]`` float tensor alive until the backward (the log-probabilities, their exponential, the products),
several times the memory of the logits themselves and as many passes over them.  Here the head's logits are
computed in slices of the vocabulary, reduced with an online log-sum-exp, and kept for the backward, which
turns each slice into its own gradient.  No full-vocabulary tensor other than the logits lives across the
backward.

Why slices of the vocabulary: on the CPU, one ``[N, E] x [E, V]`` matrix product at GPT-2's vocabulary
(V = 50257, E = 768) runs at about half the speed of a square one (MKL, one thread: 34 GFLOP/s for the 100 rows
of a decoding step and 49 for the 4,000 of a scoring pass, against 79 for a 2048^3 product), slices of 512
columns at about the square one's (68 and 77 GFLOP/s; ``benchmarks/step.py`` measures the whole step).
Decoding on the CPU uses the same slices (``vocabulary_slices``).  On a GPU, decoding keeps the one product and
the scoring pass's wider slices only bound its fp32 temporaries.
"""

import contextlib

import torch
from torch import nn

VOCAB_SLICE = {"cpu": 512, "cuda": 8192}  # columns of the head per matrix product, by device type
BANNED = -1e30  # a banned token's logit offset: finite, so that exp(logit) * logit is 0, not nan


def _slices(vocab_size, device):
    width = VOCAB_SLICE.get(device.type, VOCAB_SLICE["cuda"])
    return [(start, min(start + width, vocab_size)) for start in range(0, vocab_size, width)]


def _rows_in_slice(tokens, start, end):
    """The rows whose token falls in the vocabulary slice ``[start, end)``."""
    return ((tokens >= start) & (tokens < end)).nonzero().squeeze(1)


def _head_slice(hidden, weight, bias, start, end):
    return nn.functional.linear(hidden, weight[start:end], None if bias is None else bias[start:end])  # [N, c]


class _HeadTokenLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, tokens, ban):
        ctx.set_materialize_grads(False)
        rows = hidden.shape[0]
        top = torch.full((rows,), -float("inf"), device=hidden.device)  # [N] running maximum (fp32)
        total = torch.zeros(rows, device=hidden.device)  # [N] sum of exp(logit - top)
        weighted = torch.zeros_like(total)  # [N] sum of exp(logit - top) * logit
        token_logit = torch.empty_like(total)  # [N]
        slices = []
        for start, end in _slices(weight.shape[0], hidden.device):
            logits = _head_slice(hidden, weight, bias, start, end)  # [N, c], autocast's dtype when it is on
            slices.append(logits)
            chunk = logits.float() if ban is None else logits.float() + ban[start:end]
            new_top = torch.maximum(top, chunk.amax(dim=1))  # [N]
            rescale = (top - new_top).exp()
            exp = (chunk - new_top[:, None]).exp_()  # [N, c]
            total = total * rescale + exp.sum(dim=1)
            weighted = weighted * rescale + exp.mul_(chunk).sum(dim=1)
            top = new_top
            inside = _rows_in_slice(tokens, start, end)
            token_logit[inside] = chunk[inside, tokens[inside] - start]
        log_z = top + total.log()  # [N]
        entropy = log_z - weighted / total
        ctx.ban = ban
        ctx.save_for_backward(hidden, weight, tokens, log_z, entropy, *slices)
        ctx.has_bias = bias is not None
        return token_logit - log_z, entropy

    @staticmethod
    def backward(ctx, grad_log_prob, grad_entropy):
        hidden, weight, tokens, log_z, entropy, *slices = ctx.saved_tensors
        if grad_log_prob is None and grad_entropy is None:
            return None, None, None, None, None
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        compute = slices[0].dtype
        grad_hidden = torch.zeros(hidden.shape, dtype=compute, device=hidden.device) if need_hidden else None
        grad_weight = torch.empty_like(weight) if need_weight else None
        grad_bias = torch.empty(weight.shape[0], device=weight.device) if ctx.has_bias and need_bias else None
        rows = tokens.shape[0]
        scale = torch.zeros(rows, 1, device=hidden.device)  # [N, 1]
        if grad_log_prob is not None:
            scale += grad_log_prob[:, None]
        for (start, end), logits in zip(_slices(weight.shape[0], hidden.device), slices):
            # d log p(token) / d logits = onehot - p;  d entropy / d logits = -p * (log p + entropy).
            log_p = logits.float() - log_z[:, None]  # [N, c]
            if ctx.ban is not None:
                log_p += ctx.ban[start:end]
            p = log_p.exp()
            if grad_entropy is not None:
                p.mul_(log_p.add_(entropy[:, None]).mul_(grad_entropy[:, None]).add_(scale))
            else:
                p.mul_(scale)
            grad = p.neg_()  # [N, c]
            if grad_log_prob is not None:
                inside = _rows_in_slice(tokens, start, end)
                grad[inside, tokens[inside] - start] += grad_log_prob[inside]
            grad = grad.to(compute)
            if need_hidden:
                grad_hidden.addmm_(grad, weight[start:end].to(compute))  # [N, E]
            if need_weight:
                grad_weight[start:end] = grad.T @ hidden.to(compute)  # [c, E]
            if grad_bias is not None:
                grad_bias[start:end] = grad.sum(0).float()
        if grad_hidden is not None:
            grad_hidden = grad_hidden.to(hidden.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None


def head_token_log_probs(hidden, head, tokens, ban=None):
    """Log-probabilities ``[B, T]`` of ``tokens`` [B, T] and entropies ``[B, T]`` (fp32) under ``head(hidden)``.

    ``hidden`` [B, T, E] are the language model's last hidden states at the positions predicting ``tokens``;
    ``head`` is its output ``nn.Linear``.  Both results carry gradients; the entropy's costs nothing in the
    backward unless the entropy is used in the loss.  ``ban`` [V] (fp32; 0, or ``BANNED`` at tokens a caption may
    not hold) is added to the logits: the distribution is the one ``BanTokens`` samples from.
    """
    batch, width = tokens.shape
    flat = hidden.reshape(batch * width, hidden.shape[-1])  # [B * T, E]
    log_prob, entropy = _HeadTokenLogProbs.apply(flat, head.weight, head.bias, tokens.reshape(-1), ban)
    return log_prob.view(batch, width), entropy.view(batch, width)


@torch.no_grad()
def head_kl(hidden, head, reference_hidden, reference_head, ban=None):
    """Exact KL divergence ``KL(q || p)`` ``[B, T]`` (fp32, no gradients) at each position, over the whole
    vocabulary, from the policy ``p = softmax(head(hidden))`` to the reference ``q =
    softmax(reference_head(reference_hidden))``.

    ``KL(q || p) = sum_v q_v (log q_v - log p_v)`` is the authors' ``KLRegularizer``:
    ``kl_div(log p, log q, log_target=True).sum(-1)``.  With ``l`` and ``m`` the two heads' logits,
    ``KL = sum_v exp(m_v - lse(m)) (m_v - l_v) - lse(m) + lse(l)``: the heads are computed in the same vocabulary
    slices as the scoring pass, and both log-sum-exps and the weighted sum are accumulated online, so no
    ``[B, T, V]`` tensor is materialised.  ``hidden`` [B, T, E] and ``reference_hidden`` [B, T, E'] are the two
    models' last hidden states at the positions predicting the same tokens.  ``ban`` [V] (as in
    ``head_token_log_probs``) is added to both heads' logits: the KL between the distributions rollouts are
    sampled from and scored under.
    """
    if head.weight.shape[0] != reference_head.weight.shape[0]:
        raise ValueError(
            f"the policy's vocabulary ({head.weight.shape[0]}) and the reference's "
            f"({reference_head.weight.shape[0]}) differ: a KL needs one vocabulary"
        )
    batch, width = hidden.shape[:2]
    flat = hidden.reshape(batch * width, -1).float()  # [N, E]
    reference_flat = reference_hidden.reshape(batch * width, -1).float()  # [N, E']
    weight, bias = head.weight.float(), None if head.bias is None else head.bias.float()
    reference_weight = reference_head.weight.float()
    reference_bias = None if reference_head.bias is None else reference_head.bias.float()
    rows = flat.shape[0]
    top_p = torch.full((rows,), -float("inf"), device=flat.device)  # [N] running maxima, as in the forward above
    top_q = torch.full_like(top_p, -float("inf"))
    total_p, total_q, weighted = torch.zeros_like(top_p), torch.zeros_like(top_p), torch.zeros_like(top_p)
    for start, end in _slices(weight.shape[0], flat.device):
        logits = _head_slice(flat, weight, bias, start, end)  # [N, c]
        reference_logits = _head_slice(reference_flat, reference_weight, reference_bias, start, end)  # [N, c]
        if ban is not None:
            logits, reference_logits = logits + ban[start:end], reference_logits + ban[start:end]
        new_top_p = torch.maximum(top_p, logits.amax(dim=1))
        total_p = total_p * (top_p - new_top_p).exp() + (logits - new_top_p[:, None]).exp().sum(dim=1)
        top_p = new_top_p
        new_top_q = torch.maximum(top_q, reference_logits.amax(dim=1))
        rescale = (top_q - new_top_q).exp()
        q = (reference_logits - new_top_q[:, None]).exp()  # [N, c], unnormalised
        terms = torch.where(q > 0, q * (reference_logits - logits), torch.zeros_like(q))  # 0 log 0 = 0
        total_q = total_q * rescale + q.sum(dim=1)
        weighted = weighted * rescale + terms.sum(dim=1)
        top_q = new_top_q
    kl = weighted / total_q - (top_q + total_q.log()) + (top_p + total_p.log())  # [N]
    return kl.clamp_(min=0).view(batch, width)  # a divergence: rounding may leave it a hair below zero


class _SlicedHead(nn.Module):
    """``head`` (an ``nn.Linear``, its parameters shared) computed in slices of the vocabulary on the CPU."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, hidden):
        if hidden.device.type != "cpu":  # the slices are for MKL's sake (module docstring)
            return self.head(hidden)
        weight, bias = self.head.weight, self.head.bias
        slices = _slices(weight.shape[0], hidden.device)
        return torch.cat([_head_slice(hidden, weight, bias, start, end) for start, end in slices], dim=-1)


@contextlib.contextmanager
def _swapped(model, head, replacement):
    """Within the block, ``model``'s submodule ``head`` is ``replacement``."""
    path = next(name for name, module in model.named_modules() if module is head)
    parent_path, _, attribute = path.rpartition(".")
    parent = model.get_submodule(parent_path)
    setattr(parent, attribute, replacement)
    try:
        yield
    finally:
        setattr(parent, attribute, head)


def vocabulary_slices(model, head):
    """Within the block, ``model``'s output ``head`` (one of its submodules) computes in vocabulary slices."""
    return _swapped(model, head, _SlicedHead(head))


class _Bypass(nn.Module):
    def forward(self, hidden):
        return hidden


def bypassed_head(model, head):
    """Within the block, ``model``'s output ``head`` returns its input: the model's "logits" are the hidden
    states the head would read, for ``head_token_log_probs`` (no ``[B, T, V]`` logits are computed)."""
    return _swapped(model, head, _Bypass())
