"""Language drift of a model's captions: how far their language moved from the pretrained language model's, and
how varied it is.

- ``lm_nll``: the mean negative log-likelihood (nats) per token under a pretrained causal language model
  (``--drift_language_model``), token-weighted over the whole corpus: the sum over every caption's tokens divided
  by the number of tokens.  Each caption is tokenised by the model's own tokenizer without special tokens, the
  model's beginning-of-text token (GPT-2's <|endoftext|>) is put in front as context, and every caption token is
  scored; no end-of-text token is appended (the captioners stop at '.' or at --max_len, not at end of text).  A
  caption longer than the model's context keeps its first tokens.  ``perplexity`` = exp(``lm_nll``).
- ``distinct_1``, ``distinct_2``: distinct n-grams over all n-grams of the model's captions (n-grams within a
  caption, words as ``analysis.words`` splits them, lower-cased); ``vocabulary``: the number of distinct words.
"""

import math

import torch

from ..runtime.errors import UsageError, missing_weights
from ..runtime.pretrained import from_pretrained_strict
from .analysis import words
from .outputs import per_dataset_table

FLAG = "--drift_language_model"
METRICS = ("lm_nll", "perplexity", "distinct_1", "distinct_2", "vocabulary")
PROTOCOL = (
    "Language drift: mean NLL per token (nats, over all the captions' tokens, the beginning-of-text token as "
    "context, no end-of-text token scored) and perplexity exp(NLL) under {model}; distinct-1/2 = distinct "
    "n-grams / n-grams over all captions (lower-cased words); vocabulary = distinct words"
)


def distinct_n(captions, n):
    """Distinct n-grams / n-grams over ``captions`` (n-grams never span two captions); None without any n-gram."""
    grams = [tuple(tokens[i : i + n]) for tokens in map(words, captions) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def vocabulary(captions):
    """The number of distinct (lower-cased) words in ``captions``."""
    return len({word for caption in captions for word in words(caption)})


class LanguageModel:
    """A frozen causal language model with its tokenizer, scoring captions (``name``: its hub id or folder)."""

    def __init__(self, model, tokenizer, name, device="cpu"):
        self.model = model.float().to(device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        config = model.config
        bos = next((i for i in (tokenizer.bos_token_id, config.bos_token_id, tokenizer.eos_token_id)
                    if i is not None), None)  # fmt: skip
        if bos is None:
            raise UsageError(f"{FLAG} {name}: the model has no beginning-of-text token to start a caption's context")
        self.bos_id = bos
        self.context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 1024

    def token_ids(self, caption):
        """The context and scored tokens of one caption: ``[BOS] + caption tokens``, cut to the model's context."""
        return [self.bos_id] + self.tokenizer(caption, add_special_tokens=False)["input_ids"][: self.context - 1]

    @torch.no_grad()
    def total_nll(self, captions, batch_size=64):
        """``(sum of the negative log-likelihoods of every caption token (float64), number of tokens)``."""
        total, count = 0.0, 0
        rows = [self.token_ids(caption) for caption in captions]
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            length = max(len(row) for row in batch)
            ids = torch.tensor([row + [self.bos_id] * (length - len(row)) for row in batch], device=self.device)
            mask = torch.tensor([[1] * len(row) + [0] * (length - len(row)) for row in batch], device=self.device)
            # right padding: a pad comes after every real token, so no real position attends to one
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()  # [B, T, V]
            log_probs = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # [B, T - 1]
            scored = mask[:, 1:].bool()  # [B, T - 1]: the caption's tokens, each predicted from the ones before
            total -= log_probs[scored].double().sum().item()
            count += int(scored.sum())
        return total, count


def load_language_model(source, device="cpu"):
    """The causal language model and tokenizer of ``source`` (a hub id or a local folder), as a LanguageModel;
    one line naming ``source`` and the flag when it cannot be loaded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    skip = f"; or {FLAG} none to skip the language-drift NLL"
    try:
        model = from_pretrained_strict(AutoModelForCausalLM, source, FLAG, "the language model of the drift metrics")
        tokenizer = AutoTokenizer.from_pretrained(source)
    except UsageError as error:
        raise UsageError(f"{error}{skip}") from None
    except (OSError, ValueError) as error:
        reason = missing_weights("the tokenizer of the drift metrics", source, FLAG, error)
        raise UsageError(f"{reason}{skip}") from None
    return LanguageModel(model, tokenizer, source, device)


class LanguageModels:
    """The drift language models an evaluation uses, each loaded once (data sets may share one)."""

    def __init__(self, device="cpu"):
        self.device = device
        self.loaded = {}

    def get(self, option, default):
        """The language model of ``--drift_language_model`` (``option``: None for ``default``, the captioners'
        pretrained language model; ``none`` for no model, None returned)."""
        name = default if option is None else option
        if name is None or name.lower() == "none":
            return None
        if name not in self.loaded:
            self.loaded[name] = load_language_model(name, self.device)
        return self.loaded[name]


def drift_metrics(captions, language_model=None):
    """``{"lm_nll", "perplexity", "distinct_1", "distinct_2", "vocabulary"}`` of a model's ``captions``; the first
    two are None without a ``language_model`` (or without any token)."""
    nll = None
    if language_model is not None:
        total, count = language_model.total_nll(captions)
        nll = total / count if count else None
    return {"lm_nll": nll, "perplexity": None if nll is None else math.exp(nll),
            "distinct_1": distinct_n(captions, 1), "distinct_2": distinct_n(captions, 2),
            "vocabulary": vocabulary(captions)}  # fmt: skip


def markdown_lines(records, human_row):
    """The tables.md section: drift metrics per data set and model, and ``human_row``'s (the references' first
    caption of each described image)."""
    def cell(value, digits=2, scale=1):
        return "–" if value is None else f"{scale * value:.{digits}f}"

    def cells(r, suffix=""):
        return " | ".join([cell(r[f"lm_nll{suffix}"]), cell(r[f"perplexity{suffix}"], 1),
                           cell(r[f"distinct_1{suffix}"], 1, 100), cell(r[f"distinct_2{suffix}"], 1, 100),
                           str(r[f"vocabulary{suffix}"])])  # fmt: skip

    models = ", ".join(sorted({r["drift_language_model"] for r in records if r["drift_language_model"]}))
    lines = ["", PROTOCOL.format(model=models or f"no model ({FLAG} none)")
             + " (distinct-n x100)", ""]  # fmt: skip
    return lines + per_dataset_table(records, ["NLL", "PPL", "D-1", "D-2", "Vocabulary"], cells, human_row,
                                     lambda r: cells(r, "_references"))  # fmt: skip
