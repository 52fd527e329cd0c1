"""The language-model head fused with the per-token log-probability and entropy of given tokens.

Scoring a batch of captions needs, per position, ``log p(token) = logit[token] - logsumexp(logits)`` and the
entropy ``lse - sum(p * logits)``.  Written with ``log_softmax`` and autograd, every step of that keeps its own
``[B, T, V]`` float tensor alive until the backward (the log-probabilities, their exponential, the products),
several times the memory of the logits themselves and as many passes over them.  Here the head's logits are
computed once and reduced in row chunks; the backward turns them, in place and chunk by chunk, into their own
gradient.  No full-vocabulary tensor other than the logits lives across the backward.
"""

import torch

CHUNK_ELEMENTS = 2**23  # ~32 MiB of fp32 temporaries per chunk of rows


def _row_chunks(rows, vocab_size):
    step = max(1, CHUNK_ELEMENTS // vocab_size)
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


class _HeadTokenLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, tokens):
        ctx.set_materialize_grads(False)
        logits = torch.nn.functional.linear(hidden, weight, bias)  # [N, V], autocast's dtype when it is on
        log_z = torch.empty(logits.shape[0], device=logits.device)  # [N] fp32
        entropy = torch.empty_like(log_z)
        for start, end in _row_chunks(*logits.shape):
            chunk = logits[start:end].float()  # [n, V]
            top = chunk.amax(dim=1, keepdim=True)  # [n, 1]
            exp = (chunk - top).exp_()  # [n, V]
            total = exp.sum(dim=1)  # [n]
            log_z[start:end] = top.squeeze(1) + total.log()
            entropy[start:end] = log_z[start:end] - (exp * chunk).sum(dim=1) / total
        token_log_prob = logits.gather(1, tokens.unsqueeze(1)).squeeze(1).float() - log_z  # [N]
        ctx.save_for_backward(hidden, weight, logits, tokens, log_z, entropy)
        ctx.has_bias = bias is not None
        return token_log_prob, entropy

    @staticmethod
    def backward(ctx, grad_log_prob, grad_entropy):
        hidden, weight, logits, tokens, log_z, entropy = ctx.saved_tensors
        if grad_log_prob is None and grad_entropy is None:
            return None, None, None, None
        # d log p(token) / d logits = onehot - p;  d entropy / d logits = -p * (log p + entropy).
        grad_logits = logits  # the logits are this function's own: they become their gradient, in place
        for start, end in _row_chunks(*logits.shape):
            log_p = logits[start:end].float() - log_z[start:end, None]  # [n, V]
            p = log_p.exp()
            scale = torch.zeros(end - start, 1, device=p.device)  # [n, 1]
            if grad_log_prob is not None:
                scale += grad_log_prob[start:end, None]
            if grad_entropy is not None:
                log_p.add_(entropy[start:end, None]).mul_(grad_entropy[start:end, None])
                scale = scale + log_p
            grad_logits[start:end] = p.mul_(scale).neg_()
        if grad_log_prob is not None:
            rows = torch.arange(tokens.shape[0], device=tokens.device)
            grad_logits[rows, tokens] += grad_log_prob.to(grad_logits.dtype)
        compute = grad_logits.dtype
        grad_hidden = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_hidden = (grad_logits @ weight.to(compute)).to(hidden.dtype)  # [N, E]
        if ctx.needs_input_grad[1]:
            grad_weight = (grad_logits.T @ hidden.to(compute)).to(weight.dtype)  # [V, E]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_logits.sum(0).float()  # [V]
        return grad_hidden, grad_weight, grad_bias, None


def head_token_log_probs(hidden, head, tokens):
    """Log-probabilities ``[B, T]`` of ``tokens`` [B, T] and entropies ``[B, T]`` (fp32) under ``head(hidden)``.

    ``hidden`` [B, T, E] are the language model's last hidden states at the positions predicting ``tokens``;
    ``head`` is its output ``nn.Linear``.  Both results carry gradients; the entropy's costs nothing in the
    backward unless the entropy is used in the loss.
    """
    batch, width = tokens.shape
    flat = hidden.reshape(batch * width, hidden.shape[-1])  # [B * T, E]
    log_prob, entropy = _HeadTokenLogProbs.apply(flat, head.weight, head.bias, tokens.reshape(-1))
    return log_prob.view(batch, width), entropy.view(batch, width)
