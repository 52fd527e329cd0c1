"""The paper's ablations (Tables 8, 9 and 13) on the built-in synthetic world: one run per game file of this
directory, then one evaluation of them all, then a Markdown table.

    python games/ablations/sweep.py [--output_dir runs/ablations] [--rows NAME ...] [-- TRAIN OPTIONS]

Each row is ``games/synthetic.json`` with one or two settings changed (the game files say which).  Runs go
through the real command lines in subprocesses; a row whose run directory holds ``final.tar`` is not trained
again, and an interrupted one resumes (``--preemptable``), so the sweep can be stopped and restarted.  The table
holds, per row, test P@1 among 100 candidates in-domain (``synthetic``) and 0-shot (``synthetic_descriptive``),
P@1 among 10 nearest-neighbour hard distractors, CIDEr-D against each domain's references and the mean caption
length in words; it is printed and written to ``<output_dir>/table.md``.  Options after ``--`` go to every
``train`` (e.g. ``-- --synthetic_world tiny --n_epochs 1`` for a quick try).
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = "egg.zoo.discriminative_captioner"
DATASETS = ("synthetic", "synthetic_descriptive")

ROWS = {  # game file name: what the row is, in the paper's words where it has one
    "default": "this project's default: sampled rollouts, running mean, KL 0.2 to the captioner",
    "no_baseline": "Table 8: no baseline (sampled rollouts)",
    "greedy_baseline": "self-critical: sampled rollouts, greedy-caption baseline",
    "greedy_rollouts": "Table 8: running mean, greedy rollouts (the paper's setting)",
    "greedy_rollouts_no_baseline": "Table 8: no baseline, greedy rollouts",
    "beam_rollouts_greedy_baseline": "Table 8: beam rollouts (5 beams), greedy-caption baseline",
    "reward_accuracy": "Table 9: accuracy reward",
    "reward_cosine": "Table 9: cosine reward (CLIPScore-like)",
    "no_kl": "no KL penalty",
    "authors_kl": "the authors' KL: exact, to the plain language model",
    "mean_normalization": "the authors' length-normalised log-probability",
    "hard_distractors_5": "Table 13: 5 hard distractors per target",
}


def train(name, run_dir, extra):
    if os.path.exists(os.path.join(run_dir, "final.tar")):
        print(f"{name}: trained already ({run_dir}/final.tar)", flush=True)
        return
    command = [sys.executable, "-m", f"{MODULE}.train", "--game", os.path.join(HERE, f"{name}.json"),
               "--checkpoint_dir", run_dir, *extra]  # fmt: skip
    if os.path.isdir(run_dir):
        command.append("--preemptable")  # an interrupted sweep: resume from the run's newest checkpoint
    print(f"{name}: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, check=True)


def evaluate(runs, output_dir, extra):
    if os.path.exists(os.path.join(output_dir, "results.json")):
        print(f"evaluated already ({output_dir}/results.json)", flush=True)
        return
    shared = []  # the train options that say which world to evaluate on
    for option in ("--synthetic_world", "--cache_dir"):
        if option in extra:
            shared += extra[extra.index(option) : extra.index(option) + 2]
    models = ["pretrained"] + [f"{name}={run_dir}" for name, run_dir in runs.items()]
    command = [sys.executable, "-m", f"{MODULE}.evaluate", "--models", *models, "--datasets", *DATASETS,
               "--output_dir", output_dir, "--no-spice", *shared]  # fmt: skip
    print(" ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


def mean_words(captions_file):
    """``{(model, dataset): mean caption length in words}`` from an evaluation's ``captions.jsonl``."""
    totals = {}
    with open(captions_file) as f:
        for line in f:
            row = json.loads(line)
            words, count = totals.get((row["model"], row["dataset"]), (0, 0))
            totals[row["model"], row["dataset"]] = (words + len(row["caption"].split()), count + 1)
    return {key: words / count for key, (words, count) in totals.items()}


def table(output_dir):
    with open(os.path.join(output_dir, "results.json")) as f:
        records = {(r["model"], r["dataset"]): r for r in json.load(f)}
    lengths = mean_words(os.path.join(output_dir, "captions.jsonl"))
    in_domain, zero_shot = DATASETS

    def percent(value):
        return "–" if value is None else f"{100 * value:.1f}"

    lines = [
        "| row | P@1 in-domain | P@1 0-shot | P@1 hard (10) | CIDEr-D in-domain | CIDEr-D 0-shot | words |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in ["pretrained", *ROWS]:
        if (model, in_domain) not in records:
            continue
        ours, other = records[model, in_domain], records[model, zero_shot]
        label = "pretrained captioner" if model == "pretrained" else f"`{model}`: {ROWS[model]}"
        lines.append(f"| {label} | {percent(ours['p_at_1'])} | {percent(other['p_at_1'])} | "
                     f"{percent(ours.get('p_at_1_nearest_neighbours'))} | {percent(ours['cider'])} | "
                     f"{percent(other['cider'])} | {lengths[model, in_domain]:.1f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)  # fmt: skip
    parser.add_argument("--output_dir", default="runs/ablations", help="one run directory per row, evaluation/")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="rows to run (default: all)")
    args, extra = parser.parse_known_args()
    if extra and extra[0] == "--":
        extra = extra[1:]
    elif extra:
        parser.error(f"unknown options {' '.join(extra)} (train options go after --)")
    runs = {name: os.path.join(args.output_dir, name) for name in args.rows}
    for name, run_dir in runs.items():
        train(name, run_dir, extra)
    output_dir = os.path.join(args.output_dir, "evaluation")
    evaluate(runs, output_dir, extra)
    text = table(output_dir)
    with open(os.path.join(args.output_dir, "table.md"), "w") as f:
        f.write(text)
    print(text, end="")


if __name__ == "__main__":
    main()
