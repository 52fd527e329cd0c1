"""A finetuned captioner's model card: what it started from, what it was finetuned on and how, its final test
metrics (a model-index the Hub shows) and how to load it.

The card is ``huggingface_hub``'s ``ModelCard``: YAML metadata (``ModelCardData``: base model, data set, tags, the
model-index built from ``final.json``), then the text.  A finished run writes it as ``RUN/README.md`` and, for a
transformers captioner, into its folder too (``RUN/hf/README.md``, ``RUN/blip/README.md``), where
``save_pretrained`` output is read as a Hub repository.
"""

import json
import os
import textwrap

from ..runtime.atomic import atomic_write_text
from .layout import CARD, CLIPCAP_FILE, FOLDERS, OPTIONS, FinishedRun, captioner_of, is_hub_id, read_json

PAPER = "https://arxiv.org/abs/2304.01662"
PAPER_TITLE = "Cross-Domain Image Captioning with Discriminative Finetuning"
CITATION = """\
@inproceedings{dessi2023crossdomain,
  title     = {Cross-Domain Image Captioning with Discriminative Finetuning},
  author    = {Dess{\\`i}, Roberto and Bevilacqua, Michele and Gualdoni, Eleonora and Carraz Rakotonirina,
               Nathana{\\"e}l and Franzon, Francesca and Baroni, Marco},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2023}
}"""
PROGRAM = "python -m egg.zoo.discriminative_captioner"
CLIPCAP_CODE = "https://github.com/rmokady/CLIP_prefix_caption"
# Data sets under their Hub ids where the Hub holds the one this project reads; the others by their --dataset name.
DATASET_IDS = {"conceptual": "google-research-datasets/conceptual_captions"}
DATASET_NAMES = {
    "synthetic": "the built-in synthetic world", "synthetic_descriptive": "the synthetic world (descriptive)",
    "conceptual": "Conceptual Captions", "coco": "COCO (Karpathy splits)", "flickr": "Flickr30k (Karpathy splits)",
    "nocaps_near": "nocaps (near-domain)", "nocaps_out": "nocaps (out-of-domain)",
    "concadia_captions": "Concadia (captions)", "concadia_descriptions": "Concadia (descriptions)",
    "imagecode": "ImageCoDe",
}  # fmt: skip
CAPTIONER_NAMES = {"clipcap": "ClipCap", "blip": "BLIP", "hf": "transformers"}
# The options that say how the captioner was finetuned, in the card's table (all of them are in opts.json below it).
TRAINING_OPTIONS = ("reward", "reward_temperature", "baseline", "rollouts", "rollouts_per_image", "kl_coeff",
                    "kl_reference", "kl_estimator", "entropy_coeff", "log_prob_normalization", "optimizer", "lr",
                    "lr_scheduler", "batch_size", "n_epochs", "max_len", "num_beams", "precision",
                    "random_seed")  # fmt: skip
REWARDS = {
    "logprob": "the log-probability that the frozen retriever gives the target image among the batch's images "
    "(the softmax of its caption-image scores divided by a temperature)",
    "accuracy": "1 when the frozen retriever ranks the target image first among the batch's images, else 0",
    "cosine": "the frozen retriever's score of the caption against the target image alone",
}


def write_model_cards(directory, results, repo_id=None):
    """Writes the card of the run in ``directory`` (its final test ``results``, as final.json holds them) to
    ``README.md`` there and into a transformers captioner's folder, atomically; returns the paths written.
    ``repo_id``: the Hub repository the card names in its loading instructions (None: the run directory)."""
    options = read_json(os.path.join(directory, OPTIONS), "the run's options")
    found = captioner_of(directory, options)
    if found is None:
        return []
    run = FinishedRun(directory, options, results, *found)
    text = str(model_card(run, repo_id))
    paths = [os.path.join(directory, CARD)] + ([os.path.join(run.path, CARD)] if run.captioner in FOLDERS else [])
    for path in paths:
        atomic_write_text(text, path)
    return paths


def model_card(run, repo_id=None):
    """The ``ModelCard`` of a finished ``run`` (``layout.FinishedRun``), its instructions loading ``repo_id``."""
    from huggingface_hub import ModelCard, ModelCardData

    options = run.options
    name = repo_id.split("/")[-1] if repo_id else os.path.basename(os.path.abspath(run.directory))
    base = base_captioner(options, run.captioner)
    adapters = run.captioner == "hf" and os.path.isfile(os.path.join(run.path, "adapter_config.json"))
    library = ("peft" if adapters else "transformers") if run.captioner in FOLDERS else None
    data = ModelCardData(
        model_name=name,
        base_model=base if run.captioner in FOLDERS and is_hub_id(base) else None,
        datasets=[dataset_id(options)],
        library_name=library,
        pipeline_tag="image-to-text",
        tags=["image-captioning", "discritune", "reinforce", "arxiv:2304.01662"]
        + (["clipcap", "pytorch"] if run.captioner == "clipcap" else []),
        eval_results=eval_results(options, run.results),
    )
    body = "\n\n".join([
        f"# {name}", summary(options, run.captioner, base), training_section(options),
        results_section(options, run.results), usage_section(run, repo_id, adapters, base),
        f"## Citation\n\n```bibtex\n{CITATION}\n```",
    ])  # fmt: skip
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


def base_captioner(options, kind):
    """What the run started from: ClipCap's checkpoint file, or BLIP's or the transformers captioner's hub id or
    folder."""
    return str({"clipcap": options.get("clipcap_checkpoint"), "blip": options.get("blip_model"),
                "hf": options.get("hf_model")}.get(kind))  # fmt: skip


def dataset_id(options):
    """The data set as the Hub names it, where it does; else its --dataset name."""
    dataset, source = options.get("dataset"), options.get("hf_dataset")
    if dataset == "hf" and source and is_hub_id(source):  # --dataset hf --hf_dataset ORG/NAME
        return source
    return DATASET_IDS.get(dataset, dataset or "unknown")


def dataset_name(options):
    dataset = options.get("dataset")
    return str(options.get("hf_dataset")) if dataset == "hf" else DATASET_NAMES.get(dataset, str(dataset))


def metric_name(key, options):
    """How the card names a final.json value (``acc_retriever2``: P@1 under the run's second retriever)."""
    if key == "acc":
        return f"P@1 among {options.get('eval_candidates')} test images"
    if key.startswith("acc_retriever"):
        return f"P@1 among {options.get('eval_candidates')} test images, retriever {key[len('acc_retriever'):]}"
    names = {"reward": "reward", "loss": "loss", "length": "caption length (tokens)", "kl": "KL to the reference",
             "sender_entropy": "entropy", "baseline": "baseline"}  # fmt: skip
    return names.get(key, key)


def final_metrics(results):
    """The numbers of final.json but its epoch, P@1 first."""
    numbers = {key: value for key, value in results.items()
               if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)}  # fmt: skip
    return dict(sorted(numbers.items(), key=lambda item: not item[0].startswith("acc")))


def eval_results(options, results):
    """One ``EvalResult`` per number of ``results`` (final.json): the test split's metrics."""
    from huggingface_hub import EvalResult

    dataset = options.get("dataset")
    config = options.get("synthetic_world") if dataset in ("synthetic", "synthetic_descriptive") else None
    return [
        EvalResult(task_type="image-to-text", task_name="Discriminative image captioning",
                   dataset_type=dataset_id(options), dataset_name=dataset_name(options),
                   dataset_config=config, dataset_split="test", metric_type=key,
                   metric_name=metric_name(key, options), metric_value=value)  # fmt: skip
        for key, value in final_metrics(results).items()
    ]


def retrievers(options):
    models = [options.get("clip_model")] + list(options.get("extra_clip_models") or [])
    listed = ", ".join(f"`{model}`" for model in models)
    return f"{listed} (`--clip_backend {options.get('clip_backend')}`)"


def summary(options, kind, base):
    dataset = options.get("dataset")
    reward = REWARDS.get(options.get("reward"), f"`{options.get('reward')}`")
    return " ".join([
        f"A {CAPTIONER_NAMES.get(kind, kind)} image captioner finetuned with **DiscriTune** ([{PAPER_TITLE}]({PAPER}),",
        f"Dessì et al., CVPR 2023), starting from `{base}`, on {dataset_name(options)} (`--dataset",
        f"{dataset}`). The captioner is trained with REINFORCE: it writes a caption of a target image, a frozen",
        f"text-to-image retriever, {retrievers(options)}, reads it, and the caption's reward is {reward}. A caption",
        "is good when it lets the retriever pick its own image out of the others.",
    ])  # fmt: skip


def training_section(options):
    rows = "\n".join(f"| `--{key}` | {value_text(options[key])} |" for key in TRAINING_OPTIONS if key in options)
    changes = options.get("option_changes")
    resumed = ("\n\nThe run was resumed with other values of some options: "
               f"`{json.dumps(changes)}`." if changes else "")  # fmt: skip
    every = json.dumps(options, indent=2, sort_keys=True, default=str)
    return (f"## Training\n\n| option | value |\n|---|---|\n| `--captioner` | `{options.get('captioner')}` |\n{rows}"
            f"{resumed}\n\n<details><summary>Every option of the run ({OPTIONS})</summary>\n\n```json\n{every}\n```"
            "\n\n</details>")  # fmt: skip


def value_text(value):
    return "(unset)" if value is None else f"`{' '.join(map(str, value)) if isinstance(value, list) else value}`"


def results_section(options, results):
    rows = "\n".join(f"| {metric_name(key, options)} (`{key}`) | {value:.4f} |"
                     for key, value in final_metrics(results).items())  # fmt: skip
    epochs = results.get("epoch", "?")
    return (f"## Results\n\nThe final evaluation on the test split after {epochs} epoch{'s' * (epochs != 1)}: each "
            f"caption (beam search, {options.get('num_beams')} beams) is scored against its image and "
            f"{int(options.get('eval_candidates') or 1) - 1} other test images by the retriever.\n\n"
            f"| metric | value |\n|---|---|\n{rows}")  # fmt: skip


def usage_section(run, repo_id, adapters, base):
    """How to caption with it: the project's commands, and transformers' or ClipCap's own loading."""
    options, kind = run.options, run.captioner
    spec = f"hf:{repo_id}" if repo_id else os.path.abspath(run.directory)
    text = textwrap.dedent(f"""\
        ## How to use

        With the `egg.zoo.discriminative_captioner` package that finetuned it, which rebuilds the captioner with the
        options it was finetuned with ({OPTIONS}):

        ```bash
        {PROGRAM}.caption photos/ --model {spec}
        {PROGRAM}.evaluate --models {spec} --datasets {options.get('dataset')}
        ```
        """)
    where = repo_id or os.path.abspath(run.path)
    if kind == "clipcap":
        fetch = (f'from huggingface_hub import hf_hub_download\n\npath = hf_hub_download("{repo_id}", '
                 f'"{CLIPCAP_FILE}")\n' if repo_id else f"path = {where!r}\n")  # fmt: skip
        return text + textwrap.dedent(f"""
            `{CLIPCAP_FILE}` is a ClipCap state dict in the released layout of [CLIP_prefix_caption]({CLIPCAP_CODE}):
            it needs GPT-2's config and tokenizer, `{options.get('language_model')}`, and the CLIP image encoder,
            `{options.get('captioner_clip_model')}`, found locally or downloaded:

            ```python
            """) + fetch + textwrap.dedent("""\
            # python -m egg.zoo.discriminative_captioner.train --captioner clipcap --clipcap_checkpoint PATH ...
            ```""")  # fmt: skip
    prompt = options.get("blip_prompt" if kind == "blip" else "hf_prompt")
    if kind == "blip":
        code = (f'from transformers import BlipForConditionalGeneration, BlipProcessor\n\nmodel = '
                f'BlipForConditionalGeneration.from_pretrained("{where}")\nprocessor = '
                f'BlipProcessor.from_pretrained("{where}")')  # fmt: skip
    elif adapters:
        code = (f'from peft import PeftModel\nfrom transformers import AutoModelForImageTextToText, AutoProcessor\n\n'
                f'base = AutoModelForImageTextToText.from_pretrained("{base}")\n'
                f'model = PeftModel.from_pretrained(base, "{where}").merge_and_unload()\n'
                f'processor = AutoProcessor.from_pretrained("{where}")')  # fmt: skip
    else:
        code = (f'from transformers import AutoModelForImageTextToText\n\nmodel = '
                f'AutoModelForImageTextToText.from_pretrained("{where}")  # and its processor from the same place')
    said = f" Its captions continue the prompt `{prompt}`." if prompt else ""
    return text + f"\nWith transformers alone:{said}\n\n```python\n{code}\n```"
