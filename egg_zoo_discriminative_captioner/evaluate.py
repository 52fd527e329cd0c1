"""Evaluation: ``python -m egg.zoo.discriminative_captioner.evaluate [--models SPEC ...] [--datasets NAME ...]``.

For every captioner (``--models``) and data set (``--datasets``, default ``--dataset``): beam-search captions of
every image of ``--split`` (``--num_beams`` beams, at most ``--max_len`` tokens, stopping at '.' or end of text),
then

- text-to-image retrieval P@1 among ``--eval_candidates`` images, for the captions and for the references
  (every image scored, a tie a miss: see ``evaluation.retrieval.PROTOCOL``);
- BLEU-4, METEOR, ROUGE-L, CIDEr(-D) and SPICE against all references (pycocoevalcap);
- P@1 among hard distractors: sets of 10 from the retriever's nearest image neighbours (near-duplicates above
  ``--near_duplicate_cosine`` skipped), and ImageCoDe's own sets where the data set has them, exported as
  human-study stimuli;
- the lemmas most associated with each caption type (local mutual information);

and writes under ``--output_dir``: ``results.json`` (one record per model and data set), ``tables.md`` (laid out
like the paper's Tables 1-5, 7 and 11), ``captions.jsonl``, ``summary.json`` (protocol, hard sets, lemma tables),
``stimuli_<dataset>/`` and PNG plots.

A model SPEC is ``[LABEL=]WHAT``, WHAT being ``pretrained`` (the captioner the options describe, e.g. the
synthetic world's ClipCap-ConCap), an EGG checkpoint of this game (``RUN/final.tar``), a ClipCap file
(``RUN/clipcap.pt`` of a run, or a released one) or a BLIP directory (``RUN/blip``).  A run's files are read with
the captioner options the run saved in ``RUN/opts.json`` (its language model and CLIP encoder), so a finetuned
synthetic run evaluates with the world's own models; a file outside a run uses the command line's options.
"""

import argparse
import copy
import json
import os
import types
from dataclasses import dataclass

import torch

from .checkpointing import atomic_write_text
from .data import DATASETS, encode_images, load_dataset
from .data.imagecode import image_sets as imagecode_sets
from .errors import UsageError, run_command
from .evaluation import analysis, hard, nlg, plots
from .evaluation.retrieval import PROTOCOL, encode_captions, generate_captions, precision_at_1
from .experiment import Experiment, encode_split
from .captioners import build_captioner
from .games import build_game
from .opts import apply_model_defaults, build_parser, get_opts
from .retrievers import build_retriever

PROG = "python -m egg.zoo.discriminative_captioner.evaluate"
HUMAN = "human"


def add_evaluation_options(parser):
    group = parser.add_argument_group("evaluation")
    group.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="[LABEL=]SPEC",
        help="captioners to evaluate: 'pretrained', RUN/final.tar, a ClipCap .pt file or a BLIP directory "
        "(default: --load_from_checkpoint if given, else 'pretrained')",
    )
    group.add_argument(
        "--datasets", nargs="+", default=None, metavar="NAME", help="data sets to evaluate on (default: --dataset)"
    )
    group.add_argument("--split", choices=("train", "validation", "test"), default="test", help="split to evaluate")
    group.add_argument("--output_dir", default="evaluation", help="where results, tables, captions and plots go")
    group.add_argument("--nlg", action=argparse.BooleanOptionalAction, default=True, help="BLEU/METEOR/ROUGE/CIDEr")
    group.add_argument("--spice", action=argparse.BooleanOptionalAction, default=True, help="SPICE (Java, CoreNLP)")
    group.add_argument("--hard_sets", type=int, default=500, help="nearest-neighbour sets of 10 per data set (0: off)")
    group.add_argument(
        "--near_duplicate_cosine", type=float, default=0.8, help="hard sets skip neighbours above this cosine"
    )
    group.add_argument(
        "--training_log", nargs="*", default=[], help="console logs of training runs (EGG JSON lines) to plot"
    )


@dataclass
class ModelSpec:
    """A captioner to evaluate: ``kind`` is pretrained | checkpoint | clipcap | blip."""

    label: str
    kind: str
    path: str = None


def parse_model(text):
    """``[LABEL=]WHAT`` -> ModelSpec; a missing file is a one-line error."""
    label, _, what = text.partition("=") if "=" in text.split(os.sep)[0] else ("", "", text)
    if what == "pretrained":
        return ModelSpec(label or "pretrained", "pretrained")
    if os.path.isdir(what):
        kind = "blip"
    elif os.path.isfile(what):
        kind = "checkpoint" if what.endswith(".tar") else "clipcap"
    else:
        raise UsageError(f"--models {text}: no such file or directory (give 'pretrained', RUN/final.tar, a .pt file)")
    default_label = os.path.join(os.path.basename(os.path.dirname(os.path.abspath(what))), os.path.basename(what))
    return ModelSpec(label or default_label, kind, what)


def captioner_option_names():
    """The options of the parser's "captioner" group (those a run's opts.json lends to its files)."""
    groups = build_parser()._action_groups
    return {action.dest for group in groups if group.title == "captioner" for action in group._group_actions}


def run_options(path):
    """The captioner options a run saved next to ``path`` (``RUN/opts.json``), or {} outside a run."""
    saved = os.path.join(os.path.dirname(os.path.abspath(path)), "opts.json")
    if not os.path.isfile(saved):
        return {}
    try:
        with open(saved) as f:
            values = json.load(f)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {saved}: {error}") from None
    return {key: value for key, value in values.items() if key in captioner_option_names()}


def load_game_checkpoint(game, path):
    """Loads an EGG checkpoint (``Checkpoint`` namedtuple) of this game into ``game``."""
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint not found: {path} (--load_from_checkpoint)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        game.load_state_dict(checkpoint.model_state_dict)
    except Exception as error:  # unpickling and key mismatches raise several types
        raise UsageError(f"cannot load checkpoint {path}: {error}") from error


def model_options(opts, spec, dataset):
    """The options that build ``spec``'s captioner on ``dataset``: the run's saved captioner options first."""
    model_opts = copy.copy(opts)
    if spec.kind != "pretrained":
        for key, value in run_options(spec.path).items():
            setattr(model_opts, key, value)
    if spec.kind == "clipcap":
        model_opts.captioner, model_opts.clipcap_checkpoint = "clipcap", spec.path
    elif spec.kind == "blip":
        model_opts.captioner, model_opts.blip_model = "blip", spec.path
    return apply_model_defaults(model_opts, dataset)


def build_model(opts, spec, dataset, retriever):
    """The captioner of ``spec`` (a checkpoint loaded into the game that wraps it)."""
    model_opts = model_options(opts, spec, dataset)
    captioner = build_captioner(model_opts).to(opts.device)
    if spec.kind == "checkpoint":
        load_game_checkpoint(build_game(model_opts, captioner, retriever), spec.path)
    captioner.eval()
    return captioner


def sender_inputs(captioner, split, device):
    """The captioner's inputs for every image of the split (features computed once when it caches them)."""
    if captioner.cache_inputs:
        return encode_images(split, captioner.image_transform, captioner.encode_images, device=device)
    from .data import TransformedImages

    return TransformedImages(split.images, captioner.image_transform)


def hard_sets_of(name, split, image_embeddings, opts):
    """``{source: [HardSet]}``: ImageCoDe's own sets for the data set ``name`` = imagecode, nearest-neighbour sets."""
    sets = {}
    if name == "imagecode":
        sets["imagecode"] = [hard.HardSet(indices, target) for indices, target in imagecode_sets(split)]
    if opts.hard_sets > 0 and len(split) >= 10:
        sets["nearest_neighbours"] = hard.nearest_neighbour_sets(
            image_embeddings, opts.hard_sets, max_cosine=opts.near_duplicate_cosine, seed=opts.eval_seed
        )
    return sets


def check_evaluation_opts(opts):
    unknown = sorted(set(opts.datasets) - set(DATASETS))
    if unknown:
        raise UsageError(f"unknown --datasets {', '.join(unknown)}; choose from {', '.join(sorted(DATASETS))}")
    if opts.eval_candidates < 2:
        raise UsageError(f"--eval_candidates {opts.eval_candidates}: retrieval needs at least 2 candidates")
    if not 0 < opts.near_duplicate_cosine <= 1:
        raise UsageError(f"--near_duplicate_cosine must be in (0, 1], got {opts.near_duplicate_cosine}")
    missing = [log for log in opts.training_log if not os.path.isfile(log)]
    if missing:
        raise UsageError(f"--training_log {missing[0]}: no such file")
    if os.path.exists(opts.output_dir) and not os.path.isdir(opts.output_dir):
        raise UsageError(f"--output_dir {opts.output_dir} is a file")


def evaluate_dataset(opts, name, specs, lemmatizer):
    """Records, captions, hard-set results and lemma tables of every model on one data set."""
    base_opts = copy.copy(opts)  # model options still unresolved: each model resolves its own
    base_opts.dataset = name
    dataset = load_dataset(base_opts)
    resolved = apply_model_defaults(copy.copy(base_opts), dataset)  # the retriever's and the feature cache's
    retriever = build_retriever(resolved).to(opts.device)
    captioners = {spec.label: build_model(base_opts, spec, dataset, retriever) for spec in specs}  # fail early
    # Only the retriever's embeddings come from the feature cache, which is keyed by the resolved options: each
    # captioner (a run's own CLIP encoder, a released one) encodes its own inputs below.
    retrieval_only = types.SimpleNamespace(cache_inputs=False, image_transform=None)
    encoded = encode_split(Experiment(dataset, retrieval_only, retriever, resolved), opts.split, opts.device)
    split, images = encoded.split, encoded.receiver_inputs[:]  # [N, D] fp32, from the feature cache
    sets = hard_sets_of(name, split, images, opts)

    texts = {HUMAN: [refs[0] if refs else "" for refs in split.references]}  # ImageCoDe: most images have none
    for label, captioner in captioners.items():
        inputs = sender_inputs(captioner, split, opts.device)
        texts[label] = generate_captions(
            captioner, inputs, num_beams=opts.num_beams, device=opts.device, desc=f"captioning {name} ({label})"
        )
    embeddings = {kind: encode_captions(retriever, captions, device=opts.device) for kind, captions in texts.items()}
    p_at_1 = {kind: precision_at_1(e, images, opts.eval_candidates, opts.eval_seed)[0] for kind, e in embeddings.items()}
    hard_results = {}
    for source, source_sets in sets.items():
        scores = {kind: hard.hard_set_accuracy(e, images, source_sets) for kind, e in embeddings.items()}
        hard_results[source] = {"n_sets": len(source_sets), "p_at_1": {k: v[0] for k, v in scores.items()}}
        if source_sets:
            hard_results[source]["stimuli"] = hard.write_stimuli(
                os.path.join(opts.output_dir, f"stimuli_{name}_{source}"),
                source_sets,
                split,
                texts,
                {kind: value[1] for kind, value in scores.items()},
                dataset=name,
                source=source,
            )

    references = {image_id: refs for image_id, refs in zip(split.ids, split.references)}
    records, caption_rows = [], []
    for spec in specs:
        captions = texts[spec.label]
        record = {"model": spec.label, "dataset": name, "split": split.name, "n_images": len(split),
                  "candidates": opts.eval_candidates, "p_at_1": p_at_1[spec.label], "p_at_1_references": p_at_1[HUMAN]}  # fmt: skip
        metrics = dict.fromkeys(nlg.METRICS) | {"spice_error": "NLG metrics switched off (--no-nlg)"}
        if opts.nlg:
            described = [i for i, image_id in enumerate(split.ids) if references[image_id]]  # scorable images
            metrics = nlg.caption_metrics({split.ids[i]: captions[i] for i in described},
                                          {split.ids[i]: references[split.ids[i]] for i in described},
                                          spice=opts.spice)  # fmt: skip
        record |= metrics
        for source, result in hard_results.items():
            record[f"p_at_1_{source}"] = result["p_at_1"][spec.label]
            record[f"p_at_1_{source}_references"] = result["p_at_1"][HUMAN]
        records.append(record)
        caption_rows += [
            {"model": spec.label, "dataset": name, "image_id": image_id, "caption": caption, "references": refs}
            for image_id, caption, refs in zip(split.ids, captions, split.references)
        ]
    corpora = {HUMAN: [r for refs in split.references for r in refs], **{s.label: texts[s.label] for s in specs}}
    lemma_tables = analysis.top_lemmas(corpora, lemmatizer)
    return records, caption_rows, hard_results, lemma_tables


def percent(value):
    return "–" if value is None else f"{100 * value:.1f}"


def markdown_tables(records, summary):
    """The paper's layout: P@1 (Tables 1/4), NLG metrics per data set (Tables 2/3/5), hard sets (Table 11),
    top lemmas per caption type (Tables 7/14)."""
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    models = list(dict.fromkeys(r["model"] for r in records))
    by_key = {(r["model"], r["dataset"]): r for r in records}
    lines = [f"Protocol: {summary['protocol']}", "", "P@1 (%), 100 candidates", ""]
    lines += ["| Model | " + " | ".join(datasets) + " |", "|---" * (len(datasets) + 1) + "|"]
    for model in models:
        lines.append(f"| {model} | " + " | ".join(percent(by_key[model, d]["p_at_1"]) for d in datasets) + " |")
    lines.append("| Human captions | " + " | ".join(percent(by_key[models[0], d]["p_at_1_references"])
                                                     for d in datasets) + " |")  # fmt: skip
    lines += ["", "NLG metrics (x100; B@4 BLEU-4, M METEOR, R ROUGE-L, C CIDEr-D, S SPICE)", ""]
    lines += ["| Model | B@4 | M | R | C | S |", "|---|---|---|---|---|---|"]
    for dataset in datasets:
        lines.append(f"| **{dataset}** | | | | | |")
        for model in models:
            r = by_key[model, dataset]
            lines.append(f"| {model} | " + " | ".join(percent(r[m]) for m in nlg.METRICS) + " |")
    errors = sorted({r["spice_error"] for r in records if r.get("spice_error")})
    lines += [f"\nSPICE: {e}" for e in errors]
    for dataset, sources in summary["hard_sets"].items():
        for source, result in sources.items():
            lines += ["", f"P@1 (%) among hard distractors: {dataset}, {source} ({result['n_sets']} sets of 10, "
                      "chance 10%)", "", "| Captions | P@1 |", "|---|---|"]  # fmt: skip
            lines += [f"| {kind} | {percent(value)} |" for kind, value in result["p_at_1"].items()]
    for dataset, tables in summary["lemmas"].items():
        if tables["note"]:
            lines += ["", f"Lemmas: {tables['note']}"]
        for part, columns in tables["tables"].items():
            kinds = list(columns)
            lines += ["", f"Top {part} by local mutual information with the caption type: {dataset}", ""]
            lines += ["| " + " | ".join(kinds) + " |", "|---" * len(kinds) + "|"]
            for row in range(max((len(c) for c in columns.values()), default=0)):
                cells = [columns[k][row][0] if row < len(columns[k]) else "" for k in kinds]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(params):
    """Evaluates captioners on data sets; returns the result records (one per model and data set)."""
    opts = get_opts(params, prog=PROG, description=__doc__.splitlines()[0], extra_options=add_evaluation_options,
                    training=False)  # fmt: skip
    opts.datasets = opts.datasets or [opts.dataset]
    check_evaluation_opts(opts)
    specs = [parse_model(text) for text in (opts.models or [opts.load_from_checkpoint or "pretrained"])]
    if len({spec.label for spec in specs}) < len(specs) or HUMAN in {spec.label for spec in specs}:
        raise UsageError("--models: give each model its own LABEL= (and none called 'human')")
    lemmatizer = analysis.Lemmatizer()
    if lemmatizer.note:
        print(f"caption analysis: {lemmatizer.note}", flush=True)
    protocol = PROTOCOL.format(candidates=opts.eval_candidates, seed=opts.eval_seed) + (
        f"; captions by beam search ({opts.num_beams} beams, at most {opts.max_len} tokens, stopping at '.' or end "
        f"of text) on the {opts.split} split; human P@1 uses each image's first reference, NLG metrics all of them"
    )
    records, caption_rows, summary = [], [], {"protocol": protocol, "hard_sets": {}, "lemmas": {}}
    os.makedirs(opts.output_dir, exist_ok=True)
    for name in opts.datasets:
        found, rows, hard_results, lemma_tables = evaluate_dataset(opts, name, specs, lemmatizer)
        records += found
        caption_rows += rows
        summary["hard_sets"][name] = hard_results
        summary["lemmas"][name] = lemma_tables
    tables = markdown_tables(records, summary)
    print(tables, flush=True)
    out = opts.output_dir
    atomic_write_text(json.dumps(records, indent=2), os.path.join(out, "results.json"))
    atomic_write_text(json.dumps(summary, indent=2), os.path.join(out, "summary.json"))
    atomic_write_text(tables, os.path.join(out, "tables.md"))
    atomic_write_text("".join(json.dumps(row) + "\n" for row in caption_rows), os.path.join(out, "captions.jsonl"))
    plots.p_at_1_plot(records, os.path.join(out, "p_at_1.png"))
    for log in opts.training_log:
        plots.training_curves(log, os.path.join(out, f"training_{os.path.splitext(os.path.basename(log))[0]}.png"))
    print(f"results in {out}/ (results.json, tables.md, captions.jsonl, summary.json, *.png)", flush=True)
    return records


if __name__ == "__main__":
    run_command(main)
