"""The REINFORCE loss over micro-batches of rollouts: memory bounded by a micro-batch, the update unchanged.

The pass with gradients (teacher-forced scoring of every rollout, then its backward) holds activations for all
its rows at once: at the paper's 100 images, with K rollouts each, that is what runs a GPU out of memory long
before decoding does.  Everything else of the step sees the whole batch as before (decoding, the retriever's
scores against all B candidates, the rewards, baselines and advantages); only the pass with gradients is cut
into micro-batches, as open_clip's ``accum_freq`` recomputes its loss one chunk at a time.

``recomputed_loss`` returns the loss as a tensor whose value is the whole batch's (from a scoring pass without
gradients) and whose backward scores one micro-batch at a time with gradients, as activation checkpointing
recomputes a segment: the Trainer calls ``backward()`` on it and steps as always, so EGG's gradient
accumulation (``--update_freq``), fp16's GradScaler (which scales the gradient the backward receives) and
data-parallel training work unchanged.  On one process each micro-batch's gradients accumulate into the
parameters' ``.grad`` in place; in a data-parallel run they are summed apart and handed over once, as DDP's hooks
expect (one more copy of the trainable parameters' gradients while the backward runs).
"""

import torch
import torch.distributed as dist


def row_chunks(rows, rows_per_chunk, device):
    """``[0, rows)`` in consecutive index tensors of ``rows_per_chunk``."""
    index = torch.arange(rows, device=device)
    return list(index.split(rows_per_chunk))


class _RecomputedLoss(torch.autograd.Function):
    """Value: ``value``.  Gradient: the sum over ``chunks`` of ``loss_of(rows, condition)``'s, recomputed."""

    @staticmethod
    def forward(ctx, value, loss_of, chunks, condition, *parameters):
        ctx.loss_of, ctx.chunks = loss_of, chunks
        ctx.save_for_backward(condition, *parameters)
        return value.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        condition, *parameters = ctx.saved_tensors
        # a leaf of its own: the graph that made the condition (ClipCap's mapper) is back-propagated once, after
        leaf = condition.detach().requires_grad_(condition.requires_grad)
        wrt = ([leaf] if leaf.requires_grad else []) + parameters
        handed_over = dist.is_available() and dist.is_initialized()
        total = [None] * len(wrt)
        for rows in ctx.chunks:
            with torch.enable_grad():
                loss = ctx.loss_of(rows, leaf if leaf.requires_grad else None)
            if handed_over:  # DDP must see each parameter's gradient arrive once: summed here, returned below
                grads = torch.autograd.grad(loss, wrt, grad_outputs=grad, allow_unused=True)
                total = [g if t is None else t if g is None else t.add_(g) for t, g in zip(total, grads)]
            else:  # into each parameter's .grad in place, with no second copy of the gradients
                torch.autograd.backward(loss, grad_tensors=grad, inputs=wrt)
        if not handed_over:
            total = [leaf.grad] + [None] * len(parameters) if leaf.requires_grad else [None] * len(parameters)
        condition_grad = total.pop(0) if leaf.requires_grad else None
        return (None, None, None, condition_grad, *total)


def recomputed_loss(value, loss_of, chunks, condition, parameters):
    """A scalar loss equal to ``value`` whose gradient is ``sum(loss_of(rows, condition) for rows in chunks)``'s.

    ``loss_of(rows, condition)`` recomputes its rows' share of the loss with gradients; ``condition`` is a tensor
    it reads with gradients (a captioner's prefix; None: a leaf of its own is passed as None) whose gradient
    flows on to what made it; ``parameters`` are the trainable parameters the recomputation reads.
    """
    if condition is None or not (torch.is_tensor(condition) and condition.requires_grad):
        condition = value.new_zeros(0)  # nothing to differentiate: a placeholder
    return _RecomputedLoss.apply(value, loss_of, chunks, condition, *parameters)
