"""Decoding without ``generate``'s per-token overhead: a static KV cache and a fixed-shape loop for GPT-2.

transformers' ``generate`` runs the model's whole ``forward`` per token (mask building, cache objects, output
classes) and its own bookkeeping (logits processors, stopping criteria, a host sync to ask whether every row has
stopped): at batch 100 and the paper's sizes the step is bound by that, not by arithmetic.  Here the
prefix is run once through the model (the same call ``generate`` makes), its keys and values are copied into
a cache of fixed shape ``[B, H, prefix + max_len, D]`` per layer, and each later token is one call of
``_token_step``: the GPT-2 block written out over the model's own modules, writing its key and value at a
position held *on the device*, attending over the whole cache under a mask of the positions filled so far.
Every tensor in the step has the same shape at every token, so the step can be compiled once
(``torch.compile``) and its inputs stay where they are.  Stopped rows are tracked with masks on the device; the
loop ends after ``max_len`` tokens, or when every row has stopped, read every ``check_every`` tokens (every
token on the CPU, where reading a flag costs no device sync: the loop then draws exactly the random numbers
``generate`` draws).  Beam search (``StaticDecoder.beam_search``) is ``generate``'s, step by step, over the same
cache.

On a CPU with MKL, each call may first pack the weights for its batch size (MKL's packed GEMM, as inductor's
frozen CPU graphs use it): a product with a packed weight is as exact as ``addmm`` and skips repacking the whole
weight at every token.  What that saves depends on the CPU (at batch 100 in GPT-2 small, a fifth of a token's
time on one development CPU, nothing on an AMD EPYC), and the packed copies take twice the weights' memory (0.94 GiB
at GPT-2 small), so the loop packs only where a product with a packed weight is measured faster
(``packing_pays``, timed once per process and shape, as ``cudnn.benchmark`` picks its kernels).

Tokens are drawn as ``PolicySampler`` draws them inside ``generate`` (one uniform per row per token, inverse
CDF over the raw softmax), so under the same random stream this loop emits ``generate``'s tokens
(``tests/captioners/test_static_decoding.py``), and its beam search finds ``generate``'s beams.
"""

import sys
import time
from typing import NamedTuple

import torch
from torch import nn
from transformers import GPT2LMHeadModel

from .fused import VOCAB_SLICE

sdpa = nn.functional.scaled_dot_product_attention


def unsupported(model):
    """Why ``StaticDecoder`` cannot decode ``model`` (a sentence), or None when it can."""
    if not isinstance(model, GPT2LMHeadModel):
        return f"{type(model).__name__} is not a GPT-2 language model"
    config = model.config
    if config.add_cross_attention:
        return "its GPT-2 has cross-attention"
    if config._attn_implementation == "eager" and config.reorder_and_upcast_attn:
        return "its GPT-2 reorders and upcasts attention"
    return None


def draw_tokens(scores):
    """One token per row ``[B, 1]`` drawn from ``softmax(scores)`` ``[B, V]`` by inverse CDF (one uniform each).

    ``torch.multinomial`` draws an exponential variate per vocabulary entry, most of a sampling step at GPT-2's
    vocabulary on a CPU; inverse-CDF sampling needs one uniform per row.  ``PolicySampler`` draws with it inside
    ``generate``, ``StaticDecoder`` in its own loop.
    """
    weights = (scores.float() - scores.float().amax(dim=1, keepdim=True)).exp_()  # [B, V]
    cdf = weights.cumsum_(dim=1)  # [B, V]
    draws = torch.rand(scores.shape[0], 1, device=scores.device) * cdf[:, -1:]  # [B, 1]
    return torch.searchsorted(cdf, draws, right=True).clamp_(max=scores.shape[1] - 1)  # [B, 1]


class StaticCache(NamedTuple):
    keys: list  # per layer [B, H, L, D]: the prefix's keys, then each caption token's as it is decoded
    values: list  # per layer [B, H, L, D]
    filled: torch.Tensor  # [L] bool: the positions written (the fixed-shape step's attention mask)
    positions: torch.Tensor  # [L] 0 .. L - 1
    prefix_len: int
    head: object  # the LM head's weight in vocabulary slices, or packed for MKL (``StaticDecoder._head_weight``)
    packed: list  # per layer the blocks' four weights packed for MKL (``StaticDecoder._packed_blocks``), or None


class StaticDecoder:
    """Samples (or greedily decodes) GPT-2 continuations of prefix embeddings with a static KV cache.

    ``model`` is a ``GPT2LMHeadModel`` and ``head`` its output ``nn.Linear``; their parameters are read at every
    call, so training updates apply; ``pad_id`` fills each caption after its stop token.  With
    ``compiled``, the per-token step runs under ``torch.compile`` (compiled once per batch shape; on CUDA with
    ``mode="reduce-overhead"``, which replays it as a CUDA graph); its tokens then equal ``generate``'s up to
    float rounding, where the eager step's are ``generate``'s exactly.  The cache is kept for the next call of
    the same shape, so decoding allocates nothing per token and a CUDA graph finds its tensors where it left
    them; the eager loop lets its cache go after each call (at batch 100 in GPT-2 small it is 0.37 GB, held
    through the scoring pass and its backward otherwise).
    """

    def __init__(self, model, head, pad_id, compiled=False, check_every=8):
        reason = unsupported(model)
        if reason:
            raise ValueError(f"static decoding: {reason}")
        self.model, self.head, self.pad_id = model, head, pad_id
        self.compiled = compiled
        self.check_every = check_every
        self._cache, self._cache_key = None, None
        self._compiled_step = None

    @torch.no_grad()
    def decode(self, prefix, max_len, stop_ids, sample, log_probs=False):
        """Tokens ``[B, max_len]`` after ``prefix`` ``[B, P, E]``: sampled from the policy, or with ``sample``
        off its argmax, up to each row's first stop token (one of ``stop_ids``), ``pad_id`` after it.  With
        ``log_probs``, also each token's log-probability ``[B, max_len]`` under the distribution it was drawn from
        (0 after the stop token), to check against the scoring pass."""
        pad_id, batch, device = self.pad_id, prefix.shape[0], prefix.device
        hidden, cache = self._prefill(prefix, max_len)
        stop_ids = torch.as_tensor(stop_ids, device=device)
        tokens = torch.full((batch, max_len), pad_id, dtype=torch.long, device=device)
        stopped = torch.zeros(batch, dtype=torch.bool, device=device)
        drawn_log_probs = torch.zeros(batch, max_len, device=device) if log_probs else None
        check_every = 1 if device.type == "cpu" else self.check_every
        for t in range(max_len):
            if t:
                hidden = self._advance(tokens[:, t - 1], t, cache)
            scores = self._logits(hidden, cache.head).float()  # [B, V]
            token = draw_tokens(scores)[:, 0] if sample else scores.argmax(dim=-1)  # [B]
            token = torch.where(stopped, pad_id, token)
            tokens[:, t] = token
            if log_probs:
                drawn = scores.log_softmax(dim=-1).gather(1, token[:, None])[:, 0]
                drawn_log_probs[:, t] = drawn.masked_fill(stopped, 0.0)
            stopped |= torch.isin(token, stop_ids)
            if (t + 1) % check_every == 0 and bool(stopped.all()):
                break
        self._release()
        return (tokens, drawn_log_probs) if log_probs else tokens

    @torch.no_grad()
    def beam_search(self, prefix, max_len, stop_ids, num_beams):
        """The top beam-search caption ``[B, max_len]`` of each prefix, as ``generate`` finds it.

        ``generate``'s vectorised beam search (transformers 5) step by step, at its defaults (``length_penalty``
        1, ``early_stopping`` False): each step keeps the ``max(2, 1 + stops) * num_beams`` best continuations,
        continues the best ``num_beams`` that did not stop, keeps the best ``num_beams`` finished captions
        (scores divided by their length) and ends when no running beam can beat the finished ones.  The cache is
        reordered with the beams.  (A caption's tokens after its stop are ``pad_id``, which ClipCap's ``generate``
        fills them with too.)  Reading that end condition is a host sync per token on a GPU, as in
        ``generate``.
        """
        batch, beams, device = prefix.shape[0], num_beams, prefix.device
        hidden, cache = self._prefill(prefix.repeat_interleave(beams, dim=0), max_len)  # [B * K, E]
        stop_ids = torch.as_tensor(stop_ids, device=device)
        keep = max(2, 1 + stop_ids.numel()) * beams
        top_beams = torch.arange(keep, device=device) < beams  # [keep]
        running = torch.full((batch, beams, max_len), self.pad_id, dtype=torch.long, device=device)
        finished_tokens = running.clone()
        running_scores = torch.zeros(batch, beams, device=device)
        running_scores[:, 1:] = -1e9  # the beams start as copies: only the first one's continuations count
        finished_scores = torch.full((batch, beams), -1e9, device=device)
        finished = torch.zeros(batch, beams, dtype=torch.bool, device=device)
        running_parents = torch.zeros(batch, beams, dtype=torch.long, device=device)
        improvable = torch.ones(batch, 1, dtype=torch.bool, device=device)
        offsets = torch.arange(batch, device=device)[:, None] * beams  # [B, 1]
        for t in range(max_len):
            if t:
                hidden = self._advance(running[:, :, t - 1].reshape(-1), t, cache, reorder=running_parents)
            log_probs = self._logits(hidden, cache.head).float().log_softmax(dim=-1)  # [B * K, V]
            vocab = log_probs.shape[1]
            log_probs = (log_probs.view(batch, beams, vocab) + running_scores[:, :, None]).view(batch, -1)
            top_scores, top_indices = torch.topk(log_probs, k=keep)  # [B, keep]
            parents = top_indices // vocab  # [B, keep] the beam each continuation extends
            candidates = torch.take_along_dim(running, parents[:, :, None], dim=1)  # [B, keep, T]
            candidates[:, :, t] = top_indices % vocab
            stops = torch.isin(candidates[:, :, t], stop_ids) | (t + 1 >= max_len)  # [B, keep]
            # The best num_beams continuations that did not stop run on.
            open_scores = top_scores + stops.float() * -1e9
            chosen = torch.topk(open_scores, k=beams)[1]  # [B, K]
            running = torch.take_along_dim(candidates, chosen[:, :, None], dim=1)
            running_scores = torch.take_along_dim(open_scores, chosen, dim=1)
            running_parents = (torch.take_along_dim(parents, chosen, dim=1) + offsets).view(-1)  # [B * K]
            # Captions that stopped among the best num_beams join the finished ones if they score better.
            just_finished = stops & top_beams[None]
            scores = top_scores / (t + 1)
            scores = scores + (~improvable).float() * -1e9 + (~just_finished) * -1e9
            merged = torch.topk(torch.cat([finished_scores, scores], dim=1), k=beams)[1]  # [B, K]
            finished_tokens = torch.take_along_dim(torch.cat([finished_tokens, candidates], dim=1), merged[:, :, None],
                                                   dim=1)  # fmt: skip
            finished_scores = torch.take_along_dim(torch.cat([finished_scores, scores], dim=1), merged, dim=1)
            finished = torch.take_along_dim(torch.cat([finished, just_finished], dim=1), merged, dim=1)
            # Can a running beam still beat the worst finished caption?
            worst = torch.where(finished, finished_scores.min(dim=1, keepdim=True)[0], -1.0e9)
            improvable = improvable & (running_scores[:, :1] / (t + 1) > worst).any(dim=-1, keepdim=True)
            if not bool(improvable.any()) or bool(stops.all()):
                break
        self._release()
        return finished_tokens[:, 0]  # [B, T]: generate's output, padded with pad_id to max_len

    def _release(self):
        if not self.compiled:  # a compiled step (a CUDA graph) finds its cache where it left it; the eager one not
            self._cache, self._cache_key = None, None

    def _prefill(self, prefix, max_len):
        """The prefix through the model (the call ``generate`` makes): its last hidden state ``[B, E]`` and the
        static cache holding its keys and values."""
        attention_mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        prefill = self.model.transformer(inputs_embeds=prefix, attention_mask=attention_mask, use_cache=True)
        return prefill.last_hidden_state[:, -1], self._static_cache(prefill.cache, prefix.shape[1] + max_len)

    def _packs(self, rows):
        """Whether this call packs its weights for MKL: on a CPU with MKL, in fp32 without autocast (MKL's
        packed product is fp32's), for the eager step (a compiled one fuses its own products), where a product
        of ``rows`` rows with a packed weight is faster (``packing_pays``)."""
        weight = self.head.weight
        fp32 = weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
        mkl = torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")
        on_cpu = weight.device.type == "cpu" and mkl
        if not (on_cpu and fp32 and not self.compiled):
            return False
        return packing_pays(self.model.transformer.h[0].mlp.c_fc.weight.t(), rows)

    def _advance(self, token, t, cache, reorder=None):
        """The hidden state ``[B, E]`` after caption token ``t - 1`` (``token`` [B]); with ``reorder`` [B], the
        cache's rows are first taken in that order (beam search)."""
        if reorder is not None:
            for tensor in (*cache.keys, *cache.values):
                tensor.copy_(tensor.index_select(0, reorder))
        length = cache.prefix_len + t  # the positions filled once this token's are written
        where = cache.positions[length - 1 : length]  # [1] this token's cache position
        if self.compiled:
            return self._step()(token, where, cache.filled, cache.keys, cache.values)
        return self._token_step(token, where, cache.filled, cache.keys, cache.values, length, cache.packed)

    def _step(self):
        if self._compiled_step is None:
            mode = "reduce-overhead" if next(self.model.parameters()).is_cuda else None
            self._compiled_step = torch.compile(self._token_step, dynamic=False, fullgraph=True, mode=mode)
        return self._compiled_step

    def _static_cache(self, cache, length):
        """A ``StaticCache`` of ``length`` positions holding the prefill's keys and values (kept for the next
        call of the same shape)."""
        first = cache.layers[0].keys
        key = (*first.shape[:2], length, first.shape[3], len(cache.layers), first.dtype, first.device)
        if self._cache_key != key:
            shape = (*first.shape[:2], length, first.shape[3])
            keys = [first.new_zeros(shape) for _ in cache.layers]
            values = [first.new_zeros(shape) for _ in cache.layers]
            filled = torch.zeros(length, dtype=torch.bool, device=first.device)
            positions = torch.arange(length, device=first.device)
            if self.compiled:  # the CUDA graph reads and writes these in place: their addresses never change
                for tensor in (*keys, *values, filled):
                    torch._dynamo.mark_static_address(tensor)
            self._cache, self._cache_key = (keys, values, filled, positions), key
        keys, values, filled, positions = self._cache
        prefix_len = first.shape[2]
        for layer, layer_keys, layer_values in zip(cache.layers, keys, values):
            layer_keys[:, :, :prefix_len] = layer.keys
            layer_values[:, :, :prefix_len] = layer.values
        filled.zero_()[:prefix_len] = True
        rows = first.shape[0]
        packs = self._packs(rows)
        packed = self._packed_blocks(rows) if packs else None
        return StaticCache(keys, values, filled, positions, prefix_len, self._head_weight(rows, packs), packed)

    def _token_step(self, token, where, filled, keys, values, length=None, packed=None):
        """GPT-2's last hidden state ``[B, E]`` after one more ``token`` [B], as its ``forward`` computes it with
        a KV cache; writes the token's key and value at cache position ``where`` ([1], on the device) and marks
        it in ``filled``.  With ``length`` (the positions filled, this one included), attention reads those
        positions only, as ``generate``'s cache holds them (the same float rounding); without, the whole cache
        under the mask ``filled`` (the same shapes at every token).  Written in 2-D ``[B, E]`` over the modules'
        weights: the same products as GPT-2's ``Conv1D`` (``addmm``, or MKL's from the ``packed`` weights), with a
        third of its operator calls.
        """
        transformer = self.model.transformer
        batch = token.shape[0]
        if length is None:
            filled.index_fill_(0, where, True)
        hidden = transformer.wte(token) + transformer.wpe(where)  # [B, E]
        for block, layer_keys, layer_values, weights in zip(transformer.h, keys, values, packed or [None] * len(keys)):
            attention, mlp = block.attn, block.mlp
            qkv_weight, out_weight, fc_weight, proj_weight = weights or (None,) * 4
            qkv = _product(block.ln_1(hidden), attention.c_attn, qkv_weight)  # [B, 3E]
            query, key, value = qkv.view(batch, 3, -1, 1, attention.head_dim).unbind(1)  # [B, H, 1, D] each
            layer_keys.index_copy_(2, where, key)
            layer_values.index_copy_(2, where, value)
            if length is None:
                out = sdpa(query, layer_keys, layer_values, attn_mask=filled[None], scale=attention.scaling)
            else:
                out = sdpa(query, layer_keys.narrow(2, 0, length), layer_values.narrow(2, 0, length),
                           scale=attention.scaling)  # fmt: skip
            out = _product(out.reshape(batch, -1), attention.c_proj, out_weight)  # [B, E]
            hidden = out + hidden
            feed_forward = mlp.act(_product(block.ln_2(hidden), mlp.c_fc, fc_weight))  # [B, 4E]
            hidden = hidden + _product(feed_forward, mlp.c_proj, proj_weight)
        return transformer.ln_f(hidden)

    def _packed_blocks(self, rows):
        """Per block, its four ``Conv1D`` weights packed for products with ``rows`` rows (``_product``)."""
        blocks = self.model.transformer.h
        convs = [(block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj) for block in blocks]
        return [tuple(_pack(conv.weight.t(), rows) for conv in layer) for layer in convs]

    def _head_weight(self, rows, packs):
        """The LM head's weight for ``_logits``: with ``packs``, packed for products with ``rows`` rows;
        else on the CPU as ``[S, E, w]`` full slices of ``w`` vocabulary entries and the rest ``[r, E]`` (views,
        no copy); None off the CPU, where the head is one product (``fused`` explains why)."""
        weight = self.head.weight
        if packs:
            return _pack(weight, rows)
        if weight.device.type != "cpu":
            return None
        width = VOCAB_SLICE["cpu"]
        full = weight.shape[0] // width * width
        return weight[:full].view(-1, width, weight.shape[1]).transpose(1, 2), weight[full:]

    def _logits(self, hidden, slices):
        """The LM head's logits ``[B, V]``, on the CPU from the full slices in one batched product."""
        head = self.head
        if slices is None:
            return head(hidden)
        if isinstance(slices, Packed):
            return _packed_product(hidden, slices, head.bias)
        full, rest = slices
        logits = torch.matmul(hidden, full).transpose(0, 1).reshape(hidden.shape[0], -1)  # [B, S * w]
        if rest.shape[0]:
            logits = torch.cat([logits, nn.functional.linear(hidden, rest)], dim=1)  # [B, V]
        return logits if head.bias is None else logits + head.bias


class Packed(NamedTuple):
    weight: torch.Tensor  # ``[N, K]`` (``nn.Linear``'s layout; a view)
    packed: torch.Tensor  # the same, packed by MKL for products with ``rows`` rows
    rows: int


_packing_pays = {}  # (rows, weight shape) -> whether MKL's packed product is faster, measured once per process


def packing_pays(weight, rows, repeats=5, margin=0.9):
    """Whether a product of ``rows`` rows with ``weight`` ``[N, K]`` packed by MKL takes at most ``margin`` of
    ``addmm``'s time on this CPU (the best of ``repeats``, interleaved; the products are equal either way, so the
    choice changes speed and memory, never a result)."""
    key = (rows, tuple(weight.shape))
    if key not in _packing_pays:
        with torch.no_grad():
            x, packed = weight.new_ones(rows, weight.shape[1]), _pack(weight, rows)
            plain, fast = [], []
            for _ in range(repeats + 1):  # the first of each warms up
                plain.append(_seconds(lambda: torch.addmm(weight[:, 0], x, weight.t())))
                fast.append(_seconds(lambda: _packed_product(x, packed, weight[:, 0])))
        _packing_pays[key] = min(fast[1:]) <= margin * min(plain[1:])
    return _packing_pays[key]


def _seconds(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _pack(weight, rows):
    return Packed(weight, torch.ops.mkl._mkl_reorder_linear_weight(weight, rows), rows)


def _packed_product(x, weight, bias):
    """``x @ weight.weight.T + bias``: from MKL's packed weight when ``x`` has its rows (MKL's ``mkl_linear``
    falls back to the plain weight otherwise)."""
    return torch.ops.mkl._mkl_linear(x, weight.packed, weight.weight, bias, weight.rows)


def _product(x, conv, packed):
    """GPT-2's ``Conv1D`` of ``x`` [B, K] as its ``forward`` computes it (``addmm``), or from ``packed``."""
    if packed is None:
        return torch.addmm(conv.bias, x, conv.weight)
    return _packed_product(x, packed, conv.bias)


_said = set()


def say_once(message):
    """One line on stderr, once per process (a fallback to ``generate``, for example): the project's words, not a
    Python warning with its source line."""
    if message not in _said:
        _said.add(message)
        print(f"note: {message}", file=sys.stderr, flush=True)
