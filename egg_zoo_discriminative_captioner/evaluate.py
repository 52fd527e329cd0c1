"""Evaluation: ``python -m egg.zoo.discriminative_captioner.evaluate [--dataset synthetic] [options]``.

Captions every image of a split with beam search, then reports text-to-image P@1 among ``--eval_candidates``
images (the same batches as validation) and caption statistics, for the captioner and for the split's reference
captions.  Evaluate a finetuned captioner with ``--load_from_checkpoint RUN/final.tar`` (an EGG checkpoint of
this game) or ``--clipcap_checkpoint RUN/clipcap.pt``.
"""

import json
import os

import torch

from .checkpointing import atomic_write_text
from .errors import UsageError, run_command
from .evaluation import colour_rate, generate_captions, mean_length, retrieval_accuracy
from .experiment import build_experiment, encode_split
from .games import build_game
from .opts import get_opts

PROG = "python -m egg.zoo.discriminative_captioner.evaluate"


def add_evaluation_options(parser):
    group = parser.add_argument_group("evaluation")
    group.add_argument("--split", choices=("train", "validation", "test"), default="test", help="split to evaluate")
    group.add_argument("--output", default=None, help="write the report (JSON) here")
    group.add_argument("--captions_output", default=None, help="write every caption and its references (JSON) here")


def load_game_checkpoint(game, path):
    """Loads an EGG checkpoint (``Checkpoint`` namedtuple) of this game into ``game``."""
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint not found: {path} (--load_from_checkpoint)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        game.load_state_dict(checkpoint.model_state_dict)
    except Exception as error:  # unpickling and key mismatches raise several types
        raise UsageError(f"cannot load checkpoint {path}: {error}") from error


def describe(captions, retriever, dataset, opts):
    """P@1 and caption statistics of one caption per image."""
    return {
        "p_at_1": retrieval_accuracy(retriever, captions, dataset, opts.eval_candidates, opts.eval_seed, opts.device),
        "colour_rate": colour_rate(captions),
        "mean_words": mean_length(captions),
    }


def main(params):
    """Evaluates a captioner on one split; returns the report."""
    opts = get_opts(params, prog=PROG, description=__doc__.splitlines()[0], extra_options=add_evaluation_options)
    experiment = build_experiment(opts)
    if opts.load_from_checkpoint:
        load_game_checkpoint(build_game(opts, experiment.captioner, experiment.retriever), opts.load_from_checkpoint)
    dataset = encode_split(experiment, opts.split, opts.device)
    captions = generate_captions(experiment.captioner, dataset, num_beams=opts.num_beams, device=opts.device)
    references = [refs[0] for refs in dataset.split.references]
    report = {
        "dataset": opts.dataset,
        "split": opts.split,
        "images": len(dataset),
        "candidates": opts.eval_candidates,
        "captioner": describe(captions, experiment.retriever, dataset, opts),
        "references": describe(references, experiment.retriever, dataset, opts),
        "examples": [{"caption": c, "reference": r} for c, r in list(zip(captions, references))[:5]],
    }
    print(json.dumps(report, indent=2), flush=True)
    if opts.output:
        atomic_write_text(json.dumps(report, indent=2), opts.output)
    if opts.captions_output:
        rows = [{"image_index": i, "caption": c, "references": r} for i, (c, r) in
                enumerate(zip(captions, dataset.split.references))]  # fmt: skip
        atomic_write_text(json.dumps(rows, indent=1), opts.captions_output)
    return report


if __name__ == "__main__":
    run_command(main)
