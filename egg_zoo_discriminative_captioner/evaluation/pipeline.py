"""The evaluation of ``evaluate.py`` (which parses its options): models x data sets -> captions -> metrics.

Per data set: the retriever's image embeddings from the feature cache, beam-search captions of every model, P@1
among ``--eval_candidates`` (generated and reference captions), pycocoevalcap's metrics, CLIP-S and RefCLIP-S
(``clip_score``), the language-drift metrics (``drift``), hard-distractor sets
(exported as human-study stimuli) and the lemmas most associated with each caption type.  Everything is written
into a staging directory beside ``--output_dir`` and moved in at the end, so a failed run leaves the earlier
results as they were.
"""

import json
import os
import types

from ..data import TransformedImages, encode_images, load_dataset
from ..data.imagecode import image_sets as imagecode_sets
from ..experiment import Experiment, encode_split
from ..retrievers import build_retriever
from ..retrievers.specs import FLAG as OTHER_RETRIEVERS
from ..retrievers.specs import parse_retrievers
from ..runtime.atomic import atomic_write_text
from ..runtime.errors import UsageError
from ..runtime.preflight import check_files
from . import analysis, clip_score, drift, hard, nlg, plots
from .models import build_model, parse_model
from .outputs import staged
from .retrieval import PROTOCOL, encode_captions, generate_captions, precision_at_1

HUMAN = "human"


def sender_inputs(captioner, split, device):
    """The captioner's inputs for every image of the split (features computed once when it caches them)."""
    if captioner.cache_inputs:
        return encode_images(split, captioner.image_transform, captioner.encode_images, device=device)
    return TransformedImages(split.images, captioner.image_transform)


def hard_sets_of(name, split, image_embeddings, opts):
    """``{source: [HardSet]}``: ImageCoDe's own sets for the data set ``name`` = imagecode, nearest-neighbour sets.

    When fewer nearest-neighbour sets than ``--hard_sets`` exist, one line says why; the sets' ``note`` holds
    the same words."""
    sets = {}
    if name == "imagecode":
        sets["imagecode"] = [hard.HardSet(indices, target) for indices, target in imagecode_sets(split)]
    if opts.hard_sets > 0 and len(split) < 10:
        print(f"hard sets {name}: none of {opts.hard_sets} asked (the {split.name} split has {len(split)} images, "
              "fewer than one set of 10)", flush=True)  # fmt: skip
    elif opts.hard_sets > 0:
        found = hard.nearest_neighbour_sets(
            image_embeddings, opts.hard_sets, max_cosine=opts.near_duplicate_cosine, seed=opts.eval_seed
        )
        found.note = found.counts.note(threshold="--near_duplicate_cosine")
        if found.note:
            print(f"hard sets {name}: {found.note}", flush=True)
        sets["nearest_neighbours"] = found
    return sets


def p_at_1_of(embeddings, images, described_mask, opts):
    """``{caption type: P@1}`` of each caption type's text embeddings against the images ``[N, D]``; human P@1
    counts only the images with a reference as targets (an empty string is no human caption); every image stays
    a candidate, so the candidate sets are the models' own."""
    return {kind: precision_at_1(e, images, opts.eval_candidates, opts.eval_seed,
                                 targets=described_mask if kind == HUMAN else None)[0]
            for kind, e in embeddings.items()}  # fmt: skip


def evaluate_dataset(opts, name, specs, lemmatizer, out, others=None, language_models=None):
    """Records, captions, hard-set results and lemma tables of every model on one data set (stimuli into ``out``).

    ``others``: ``{label: (RetrieverSpec, retriever)}`` of ``--eval_retrievers``, which score the same captions
    over the same candidate sets, each from its own feature cache of the same images.  ``language_models``: the
    ``drift.LanguageModels`` the evaluation loaded so far."""
    others, language_models = others or {}, language_models or drift.LanguageModels(opts.device)
    base_opts = opts.replace(dataset=name)  # model options still unresolved: each model resolves its own
    dataset = load_dataset(base_opts)
    resolved = base_opts.with_model_defaults(dataset.model_defaults(base_opts))  # the retriever's, the cache's
    retriever = build_retriever(resolved).to(opts.device)
    captioners = {spec.label: build_model(base_opts, spec, dataset) for spec in specs}  # fail early
    # the captioners' own pretrained language model unless --drift_language_model names one (or none)
    language_model = language_models.get(opts.drift_language_model, resolved.language_model)
    # Only the retriever's embeddings come from the feature cache, which is keyed by the resolved options: each
    # captioner (a run's own CLIP encoder, a released one) encodes its own inputs below.
    retrieval_only = types.SimpleNamespace(cache_inputs=False, image_transform=None)
    other_inputs = [(other, spec.options(resolved)) for spec, other in others.values()]
    encoded = encode_split(Experiment(dataset, retrieval_only, retriever, resolved), opts.split, opts.device,
                           other_retrievers=other_inputs)  # fmt: skip
    split, images = encoded.split, encoded.receiver_inputs[:]  # [N, D] fp32, from the feature cache
    sets = hard_sets_of(name, split, images, opts)

    texts = {HUMAN: [refs[0] if refs else "" for refs in split.references]}  # ImageCoDe: most images have none
    for label, captioner in captioners.items():
        inputs = sender_inputs(captioner, split, opts.device)
        texts[label] = generate_captions(
            captioner, inputs, num_beams=opts.num_beams, device=opts.device, desc=f"captioning {name} ({label})"
        )
    embeddings = {kind: encode_captions(retriever, captions, device=opts.device) for kind, captions in texts.items()}
    described_mask = [bool(refs) for refs in split.references]  # [N]
    p_at_1 = p_at_1_of(embeddings, images, described_mask, opts)
    clip_scores = clip_score.caption_scores(retriever, images, texts, split.references, HUMAN,
                                            prompt=opts.clip_score_prompt, device=opts.device)  # fmt: skip
    drifts = {kind: drift.drift_metrics([c for c, d in zip(captions, described_mask) if d or kind != HUMAN],
                                        language_model) for kind, captions in texts.items()}  # fmt: skip
    other_p_at_1 = {}  # {retriever label: {caption type: P@1}}: the same captions and candidate sets
    for (label, (_, other)), other_images in zip(others.items(), encoded.other_receiver_inputs):
        other_embeddings = {kind: encode_captions(other, captions, device=opts.device)
                            for kind, captions in texts.items()}  # fmt: skip
        other_p_at_1[label] = p_at_1_of(other_embeddings, other_images[:], described_mask, opts)
    hard_results = {}
    for source, source_sets in sets.items():
        scores = {kind: hard.hard_set_accuracy(e, images, source_sets) for kind, e in embeddings.items()}
        hard_results[source] = {"n_sets": len(source_sets), "p_at_1": {k: v[0] for k, v in scores.items()}}
        if getattr(source_sets, "note", None):  # why fewer sets than asked
            hard_results[source]["note"] = source_sets.note
        if source_sets:
            written = hard.write_stimuli(
                os.path.join(out, f"stimuli_{name}_{source}"),
                source_sets,
                split,
                texts,
                {kind: value[1] for kind, value in scores.items()},
                dataset=name,
                source=source,
            )
            # where it will be once the staged outputs are moved into --output_dir
            hard_results[source]["stimuli"] = os.path.join(opts.output_dir, os.path.relpath(written, out))

    references = {image_id: refs for image_id, refs in zip(split.ids, split.references)}
    records, caption_rows = [], []
    for spec in specs:
        captions = texts[spec.label]
        record = {"model": spec.label, "dataset": name, "split": split.name, "n_images": len(split),
                  "candidates": opts.eval_candidates, "p_at_1": p_at_1[spec.label], "p_at_1_references": p_at_1[HUMAN],
                  "n_images_references": sum(described_mask)}  # fmt: skip
        metrics = dict.fromkeys(nlg.METRICS) | {"spice_error": "NLG metrics switched off (--no-nlg)"}
        if opts.nlg:
            described = [i for i, image_id in enumerate(split.ids) if references[image_id]]  # scorable images
            metrics = nlg.caption_metrics({split.ids[i]: captions[i] for i in described},
                                          {split.ids[i]: references[split.ids[i]] for i in described},
                                          spice=opts.spice)  # fmt: skip
        if others:
            record["p_at_1_retrievers"] = {label: values[spec.label] for label, values in other_p_at_1.items()}
            record["p_at_1_references_retrievers"] = {label: values[HUMAN] for label, values in other_p_at_1.items()}
        record |= metrics | clip_scores[spec.label] | drifts[spec.label]
        record["drift_language_model"] = language_model and language_model.name
        record["clip_score_prompt"] = opts.clip_score_prompt
        record |= {f"{key}_references": value for key, value in (clip_scores[HUMAN] | drifts[HUMAN]).items()
                   if key != "ref_clip_s"}  # fmt: skip
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


def human_p_at_1(record):
    """The human captions' P@1 cell, saying over how many images when some have no reference."""
    described, n = record.get("n_images_references", record["n_images"]), record["n_images"]
    cell = percent(record["p_at_1_references"])
    return cell if described == n else f"{cell} ({described} of {n} images described)"


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
    lines.append("| Human captions | " + " | ".join(human_p_at_1(by_key[models[0], d]) for d in datasets) + " |")
    others = summary.get("eval_retrievers")
    if others:  # one column per retriever: the main one and those of --eval_retrievers
        lines += ["", f"P@1 (%) under other retrievers ({OTHER_RETRIEVERS}), {records[0]['candidates']} candidates: "
                  "the same captions and candidate sets, scored by each retriever", ""]  # fmt: skip
        lines += ["| Model | Data set | main retriever | " + " | ".join(others) + " |",
                  "|---" * (len(others) + 3) + "|"]  # fmt: skip
        for dataset in datasets:
            for model in models:
                r = by_key[model, dataset]
                cells = [percent(r["p_at_1"])] + [percent(r["p_at_1_retrievers"][label]) for label in others]
                lines.append(f"| {model} | {dataset} | " + " | ".join(cells) + " |")
            r = by_key[models[0], dataset]
            cells = [percent(r["p_at_1_references"])] + [percent(r["p_at_1_references_retrievers"][label])
                                                         for label in others]  # fmt: skip
            lines.append(f"| Human captions | {dataset} | " + " | ".join(cells) + " |")
    lines += ["", "NLG metrics (x100; B@4 BLEU-4, M METEOR, R ROUGE-L, C CIDEr-D, S SPICE)", ""]
    lines += ["| Model | B@4 | M | R | C | S |", "|---|---|---|---|---|---|"]
    for dataset in datasets:
        lines.append(f"| **{dataset}** | | | | | |")
        for model in models:
            r = by_key[model, dataset]
            lines.append(f"| {model} | " + " | ".join(percent(r[m]) for m in nlg.METRICS) + " |")
    errors = sorted({r["spice_error"] for r in records if r.get("spice_error")})
    lines += [f"\nSPICE: {e}" for e in errors]
    lines += clip_score.markdown_lines(records, "Human captions") + drift.markdown_lines(records, "Human captions")
    for dataset, sources in summary["hard_sets"].items():
        for source, result in sources.items():
            lines += ["", f"P@1 (%) among hard distractors: {dataset}, {source} ({result['n_sets']} sets of 10, "
                      "chance 10%)", "", "| Captions | P@1 |", "|---|---|"]  # fmt: skip
            lines += [f"| {kind} | {percent(value)} |" for kind, value in result["p_at_1"].items()]
    notes = list(dict.fromkeys(tables["note"] for tables in summary["lemmas"].values() if tables["note"]))
    lines += [f"\nLemmas: {note}" for note in notes]  # once, not once per data set
    for dataset, tables in summary["lemmas"].items():
        for part, columns in tables["tables"].items():
            kinds = list(columns)
            lines += ["", f"Top {part} by local mutual information with the caption type: {dataset}", ""]
            lines += ["| " + " | ".join(kinds) + " |", "|---" * len(kinds) + "|"]
            for row in range(max((len(c) for c in columns.values()), default=0)):
                cells = [columns[k][row][0] if row < len(columns[k]) else "" for k in kinds]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate(opts):
    """Evaluates ``opts.models`` on ``opts.datasets``; returns the result records (one per model and data set)."""
    specs = [parse_model(text) for text in (opts.models or [opts.load_from_checkpoint or "pretrained"])]
    if len({spec.label for spec in specs}) < len(specs) or HUMAN in {spec.label for spec in specs}:
        raise UsageError("--models: give each model its own LABEL= (and none called 'human')")
    other_specs = parse_retrievers(opts.eval_retrievers)
    opts = check_files(opts, datasets=opts.datasets, captioner=any(spec.kind == "pretrained" for spec in specs),
                other_retrievers=[(f"{OTHER_RETRIEVERS} {spec.label}", spec.options(opts), *spec.flags())
                                  for spec in other_specs])  # fmt: skip
    # built once for every data set, before any captioning: a retriever that does not load fails early
    others = {spec.label: (spec, build_retriever(spec.options(opts)).to(opts.device)) for spec in other_specs}
    lemmatizer, language_models = analysis.Lemmatizer(), drift.LanguageModels(opts.device)
    language_models.get(opts.drift_language_model, None)  # one named on the command line fails before any work
    stop = "any token containing '.'" if opts.stop_at_any_period else "'.'"
    protocol = PROTOCOL.format(candidates=opts.eval_candidates, seed=opts.eval_seed) + (
        f"; captions by beam search ({opts.num_beams} beams, at most {opts.max_len} tokens, stopping at {stop} or "
        f"end of text) on the {opts.split} split; human P@1 uses each described image's first reference (images "
        "without a reference are candidates, not targets), as do its CLIP-S and drift metrics; NLG metrics and "
        "RefCLIP-S use all of them"
    ) + (f"; {OTHER_RETRIEVERS}: the same captions and candidate sets scored by each retriever, with its own "
         "image embeddings" if others else "")  # fmt: skip
    records, caption_rows, summary = [], [], {"protocol": protocol, "hard_sets": {}, "lemmas": {}}
    if others:
        summary["eval_retrievers"] = {
            label: {"spec": spec.text, "backend": spec.backend, "model": spec.model, "pretrained": spec.pretrained}
            for label, (spec, _) in others.items()
        }
    with staged(opts.output_dir) as out:
        for name in opts.datasets:
            found, rows, hard_results, lemma_tables = evaluate_dataset(opts, name, specs, lemmatizer, out, others,
                                                                       language_models)  # fmt: skip
            records += found
            caption_rows += rows
            summary["hard_sets"][name] = hard_results
            summary["lemmas"][name] = lemma_tables
        tables = markdown_tables(records, summary)
        print(tables, flush=True)
        atomic_write_text(json.dumps(records, indent=2), os.path.join(out, "results.json"))
        atomic_write_text(json.dumps(summary, indent=2), os.path.join(out, "summary.json"))
        atomic_write_text(tables, os.path.join(out, "tables.md"))
        atomic_write_text("".join(json.dumps(row) + "\n" for row in caption_rows), os.path.join(out, "captions.jsonl"))
        plots.p_at_1_plot(records, os.path.join(out, "p_at_1.png"))
        for log in opts.training_log:
            name = os.path.splitext(os.path.basename(log))[0]
            plots.training_curves(log, os.path.join(out, f"training_{name}.png"))
    print(f"results in {opts.output_dir}/ (results.json, tables.md, captions.jsonl, summary.json, *.png)", flush=True)
    return records
