"""Evaluation: ``python -m egg.zoo.discriminative_captioner.evaluate [--models SPEC ...] [--datasets NAME ...]``.

For every captioner (``--models``) and data set (``--datasets``, default ``--dataset``): beam-search captions of
every image of ``--split`` (``--num_beams`` beams, at most ``--max_len`` tokens, stopping at '.' or end of text),
then

- text-to-image retrieval P@1 among ``--eval_candidates`` images, for the captions and for the references
  (every image scored, a tie a miss: see ``evaluation.retrieval.PROTOCOL``);
- BLEU-4, METEOR, ROUGE-L, CIDEr(-D) and SPICE against all references (pycocoevalcap);
- CLIP-S and RefCLIP-S under the evaluation retriever (``evaluation.clip_score``), and the language drift of the
  captions: mean NLL per token and perplexity under ``--drift_language_model``, distinct-1/2 and vocabulary size
  (``evaluation.drift``);
- P@1 among hard distractors: sets of 10 from the retriever's nearest image neighbours (near-duplicates above
  ``--near_duplicate_cosine`` skipped), and ImageCoDe's own sets where the data set has them, exported as
  human-study stimuli;
- the lemmas most associated with each caption type (local mutual information);
- with ``--eval_retrievers``, P@1 of the same captions over the same candidate sets under each of those
  retrievers (``evaluation.other_retrievers``), a column per retriever;

and writes under ``--output_dir``: ``results.json`` (one record per model and data set), ``tables.md`` (laid out
like the paper's Tables 1-5, 7 and 11), ``captions.jsonl``, ``summary.json`` (protocol, hard sets, lemma tables),
``stimuli_<dataset>_<source>/`` and PNG plots; never over an earlier evaluation unless ``--overwrite``.

A model SPEC is ``[LABEL=]WHAT``, WHAT being ``pretrained`` (the captioner the options describe, e.g. the
synthetic world's ClipCap-ConCap), a run directory (its finetuned captioner), an EGG checkpoint of this game
(``RUN/final.tar``), a ClipCap file (``RUN/clipcap.pt`` of a run, or a released one) or a BLIP directory
(``RUN/blip``).  A run's files are read with
the captioner options the run saved in ``RUN/opts.json`` (its language model and CLIP encoder), so a finetuned
synthetic run evaluates with the world's own models; a file outside a run uses the command line's options.
"""

import argparse
import os

from .data import DATASETS
from .evaluation.outputs import check_output_dir
from .options.parse import get_opts
from .retrievers.specs import parse_retrievers
from .runtime.errors import UsageError, run_command

PROG = "python -m egg.zoo.discriminative_captioner.evaluate"


def add_evaluation_options(parser):
    group = parser.add_argument_group("evaluation")
    group.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="[LABEL=]SPEC",
        help="captioners to evaluate: 'pretrained', a run directory, RUN/final.tar, a ClipCap .pt file or a BLIP "
        "directory"
        " (default: --load_from_checkpoint if given, else 'pretrained')",
    )
    group.add_argument(
        "--datasets", nargs="+", default=None, metavar="NAME", help="data sets to evaluate on (default: --dataset)"
    )
    group.add_argument("--split", choices=("train", "validation", "test"), default="test", help="split to evaluate")
    group.add_argument(
        "--output_dir",
        default="evaluation",
        help="where results, tables, captions and plots go (new or empty, unless --overwrite)",
    )
    group.add_argument("--nlg", action=argparse.BooleanOptionalAction, default=True, help="BLEU/METEOR/ROUGE/CIDEr")
    group.add_argument("--spice", action=argparse.BooleanOptionalAction, default=True, help="SPICE (Java, CoreNLP)")
    group.add_argument("--hard_sets", type=int, default=500, help="nearest-neighbour sets of 10 per data set (0: off)")
    group.add_argument(
        "--near_duplicate_cosine", type=float, default=0.8, help="hard sets skip neighbours above this cosine"
    )
    group.add_argument(
        "--training_log", nargs="*", default=[], help="console logs of training runs (EGG JSON lines) to plot"
    )
    group.add_argument(
        "--eval_retrievers",
        nargs="+",
        default=[],
        metavar="[LABEL=]SPEC",
        help="more retrievers to score the same captions with, over the same candidate sets (a reward-hacking "
        "check: P@1 under retrievers the captioners were not trained against), each a column of its own; SPEC is "
        "BACKEND:MODEL[:PRETRAINED]: openai:ViT-L/14, openai:FILE.pt, transformers:google/siglip-base-patch16-224, "
        "transformers:DIRECTORY, open_clip:ViT-B-32:laion2b_s34b_b79k, open_clip:ViT-B-32:FILE, "
        "open_clip:local-dir:DIRECTORY (in --retriever_precision, downloads into --clip_download_root)",
    )
    group.add_argument(
        "--clip_score_prompt",
        default="",
        metavar="TEXT",
        help="put TEXT in front of every caption and reference that CLIP-S and RefCLIP-S encode (default: none, as "
        "torchmetrics' CLIPScore encodes them; \"A photo depicts\": as the CLIPScore authors' code does)",
    )
    group.add_argument(
        "--drift_language_model",
        default=None,
        metavar="MODEL",
        help="the causal language model of the language-drift metrics (mean NLL per caption token, perplexity): a "
        "hub id or a local folder; 'none' skips them (default: the captioners' pretrained language model, "
        "--language_model: gpt2, or the data set's own, e.g. the synthetic world's)",
    )


def check_evaluation_opts(opts):
    unknown = sorted(set(opts.datasets) - set(DATASETS))
    if unknown:
        raise UsageError(f"unknown --datasets {', '.join(unknown)}; choose from {', '.join(sorted(DATASETS))}")
    if not 0 < opts.near_duplicate_cosine <= 1:
        raise UsageError(f"--near_duplicate_cosine must be in (0, 1], got {opts.near_duplicate_cosine}")
    parse_retrievers(opts.eval_retrievers)  # a malformed SPEC ends here, before any model loads
    missing = [log for log in opts.training_log if not os.path.isfile(log)]
    if missing:
        raise UsageError(f"--training_log {missing[0]}: no such file")
    check_output_dir(opts.output_dir, opts.overwrite)


def main(params):
    """Evaluates captioners on data sets; returns the result records (one per model and data set)."""
    opts = get_opts(params, prog=PROG, description=__doc__.splitlines()[0], extra_options=add_evaluation_options,
                    command="evaluate")  # fmt: skip
    check_evaluation_opts(opts)
    from .evaluation.pipeline import evaluate  # torch and the models: imported once the options are known to be good

    return evaluate(opts)


if __name__ == "__main__":
    run_command(main)
