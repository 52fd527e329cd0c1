"""What the parse derives from the values given, and the checks that refuse values no run can use.

Both run on every parse, before torch is imported: ``derive`` fills in the values the others imply (the
retrievers of ``--clip_model A B ...``, the rollout strategy, evaluate's data sets, "no checkpoint directory"),
``check_options`` refuses impossible values in one line naming the option, and ``check_applicable`` refuses an
option of the command line that has no effect with the chosen captioner or retriever.
"""

from ..choices import GROUP_BASELINES
from ..data import OWN_MODELS, check_batch_size
from ..runtime.errors import UsageError
from .egg import EGG_OPTIMIZERS
from .groups import CAPTIONER_OPTIONS, HF_DATA_OPTIONS


def derive(opts, command):
    """Fills in ``opts``' values that the given ones imply, once per parse."""
    split_retrievers(opts)
    if opts.rollouts is None:  # --greedy_rollouts is --rollouts greedy unless --rollouts is given
        opts.rollouts = "greedy" if opts.greedy_rollouts else "sample"
    opts.greedy_rollouts = opts.rollouts == "greedy"
    opts.checkpoint_dir = opts.checkpoint_dir or None  # --checkpoint_dir "" switches a game file's one off
    if command == "evaluate":
        opts.datasets = opts.datasets or [opts.dataset]


def data_sets(opts, command):
    """The data sets a command reads: evaluate's --datasets, the others' --dataset."""
    return opts.datasets if command == "evaluate" else [opts.dataset]


def check_options(opts, command):
    """Rejects values no run can use, before anything is loaded: one UsageError naming the option.

    Evaluate and caption: ``--batch_size`` only groups images, so one image is enough.
    """
    training = command == "train"

    def at_least(name, minimum):
        value = getattr(opts, name)
        if value is not None and value < minimum:
            raise UsageError(f"--{name} must be at least {minimum}, got {value}")

    at_least("n_epochs", 1)
    at_least("max_len", 1)
    at_least("update_freq", 1)
    at_least("checkpoint_freq", 0)
    at_least("checkpoint_every", 0)
    at_least("num_beams", 1)
    at_least("eval_candidates", 2)
    at_least("num_workers", 0)
    at_least("micro_batch_size", 1)
    at_least("rollout_batch_size", 1)
    at_least("warmup_steps", 0)
    if opts.max_grad_norm is not None and not opts.max_grad_norm > 0:
        raise UsageError(f"--max_grad_norm must be positive, got {opts.max_grad_norm}")
    if opts.extra_clip_models and opts.hard_distractors:
        raise UsageError("--hard_distractors reads the first retriever's neighbours: give one --clip_model")
    if not training:
        at_least("batch_size", 1)
    else:
        check_batch_size(opts.batch_size)
    if opts.optimizer not in EGG_OPTIMIZERS:
        raise UsageError(f"--optimizer {opts.optimizer!r} is not one of {', '.join(EGG_OPTIMIZERS)}")
    if not opts.lr > 0:
        raise UsageError(f"--lr must be positive, got {opts.lr}")
    if opts.reward_temperature is not None and not opts.reward_temperature > 0:
        raise UsageError(f"--reward_temperature must be positive, got {opts.reward_temperature}")
    if opts.kl_coeff < 0:
        raise UsageError(f"--kl_coeff must not be negative, got {opts.kl_coeff}")
    datasets = data_sets(opts, command)
    if opts.data_root and set(datasets) <= OWN_MODELS:
        raise UsageError(f"--data_root is where a real data set is read from; {', '.join(datasets)} is built in "
                         "(its cache is --cache_dir): drop --data_root or choose a --dataset")  # fmt: skip
    rollouts, per_image, baseline = opts.rollouts, opts.rollouts_per_image, opts.baseline
    if training and per_image < 1:
        raise UsageError(f"--rollouts_per_image must be at least 1, got {per_image}")
    if training and baseline in GROUP_BASELINES and per_image < 2:
        raise UsageError(f"--baseline {baseline} compares an image's rollouts with each other: it needs "
                         "--rollouts_per_image 2 or more")  # fmt: skip
    if training and per_image > 1 and rollouts != "sample":
        raise UsageError(f"--rollouts_per_image {per_image} needs --rollouts sample: {rollouts} decoding gives "
                         "every rollout of an image the same caption")  # fmt: skip
    if rollouts == "greedy" and baseline == "greedy":
        raise UsageError(
            "--rollouts greedy (--greedy_rollouts) with --baseline greedy gives every caption an advantage of exactly "
            "zero (the rollout is the greedy caption): nothing would train; drop one of them"
        )
    # evaluate and caption neither roll out nor regularise: a game file's values for training stay unused there
    kl_on = training and opts.kl_coeff > 0
    if kl_on and rollouts in ("greedy", "beam") and opts.kl_estimator == "sampled":
        raise UsageError(f"--kl_coeff with --rollouts {rollouts} needs --kl_estimator exact: on {rollouts} "
                         "captions the sampled estimate log p - log p_ref is a log-ratio, not a KL, and can be "
                         "negative")  # fmt: skip
    check_hf_options(opts, datasets)
    if command != "caption":  # caption reads image files: --dataset names only the models it means there
        check_hf_dataset(opts, datasets)
    if training:
        check_tracking(opts)
    if training:
        check_push(opts)
    if kl_on and opts.kl_reference == "language_model" and opts.captioner == "blip":
        raise UsageError("--kl_reference language_model has no meaning for BLIP (its text decoder reads the "
                         "image in every layer; there is no plain language model to compare with): use "
                         "captioner")  # fmt: skip


def check_applicable(opts, given):
    """Refuses, in one line, an option of the command line (``given``: destinations) that has no effect with the
    chosen captioner or retriever, naming what it needs."""
    captioner = opts.captioner
    for needed, names in CAPTIONER_OPTIONS.items():
        wrong = sorted(f"--{name}" for name in names & given if captioner != needed)
        if wrong:
            raise UsageError(f"{', '.join(wrong)} {'needs' if len(wrong) == 1 else 'need'} --captioner {needed} "
                             f"(this run's captioner is {captioner})")  # fmt: skip
    if "retriever_mix" in given and opts.retriever_mix != "mean" and not opts.extra_clip_models:
        raise UsageError(f"--retriever_mix {opts.retriever_mix} mixes several retrievers: give --clip_model A B ...")
    if "clip_pretrained" in given and opts.clip_backend != "open_clip":
        raise UsageError("--clip_pretrained names open_clip weights: it needs --clip_backend open_clip")


def split_retrievers(opts):
    """``--clip_model A B ...`` -> ``clip_model`` A (the run's retriever) and ``extra_clip_models`` [B, ...] (with
    ``--clip_pretrained`` likewise), so that one retriever reads as it always did.

    A model given as ``BACKEND:MODEL[:PRETRAINED]`` (as ``--eval_retrievers`` takes it) brings its own backend,
    so that one run mixes backends; ``--clip_backend`` is the backend of the plain names.  The first model's spec
    becomes ``clip_backend``/``clip_model``/``clip_pretrained``; the other retrievers keep their text, plain names
    after a first spec of another backend written with the backend they were given under."""
    from ..retrievers.specs import names_backend, parse_retriever

    models, pretrained = opts.clip_model, opts.clip_pretrained
    if isinstance(models, (list, tuple)):
        specs = [parse_retriever(text, "--clip_model") if names_backend(text) else None for text in models]
        several_weights = isinstance(pretrained, (list, tuple)) and len(pretrained) > 1
        if any(specs) and several_weights:
            raise UsageError("--clip_model with BACKEND:MODEL specs takes each open_clip model's weights in its "
                             "spec (open_clip:MODEL:PRETRAINED), not several --clip_pretrained")  # fmt: skip
        plain_backend, first = opts.clip_backend, specs[0]
        if all(specs) and plain_backend not in ("openai", first.backend):  # set, and used by no model
            raise UsageError(f"--clip_backend {plain_backend} is the backend of plain --clip_model names, and each "
                             "--clip_model here names its own (BACKEND:MODEL): drop --clip_backend")  # fmt: skip
        if first is not None:
            if first.pretrained and pretrained:
                raise UsageError(f"--clip_model {first.text} names its weights: drop --clip_pretrained")
            opts.clip_backend, models = first.backend, [first.model] + list(models[1:])
            pretrained = [first.pretrained] if first.pretrained else pretrained
        extra = [text if spec or opts.clip_backend == plain_backend else f"{plain_backend}:{text}"
                 for text, spec in zip(models[1:], specs[1:])]  # fmt: skip
        opts.clip_model, opts.extra_clip_models = models[0], extra
    else:
        opts.extra_clip_models = []
    if isinstance(pretrained, (list, tuple)):
        if len(pretrained) not in (1, 1 + len(opts.extra_clip_models)):
            raise UsageError(f"--clip_pretrained gives {len(pretrained)} weights for {1 + len(opts.extra_clip_models)} "
                             "--clip_model: give one per model")  # fmt: skip
        opts.clip_pretrained, opts.extra_clip_pretrained = pretrained[0], list(pretrained[1:])
    else:
        opts.extra_clip_pretrained = []


def check_hf_dataset(opts, datasets):
    """``--dataset hf``'s options: set only where a Hugging Face data set is read (none has a default), a data set
    to read, and splits given as SPLIT=SOURCE."""
    wrong = sorted(f"--{name}" for name in HF_DATA_OPTIONS if getattr(opts, name) is not None)
    if wrong and "hf" not in datasets:
        raise UsageError(f"{', '.join(wrong)} {'reads' if len(wrong) == 1 else 'read'} a Hugging Face data set: "
                         f"{'it needs' if len(wrong) == 1 else 'they need'} --dataset hf (this run reads "
                         f"{', '.join(datasets)})")  # fmt: skip
    if "hf" in datasets and not opts.hf_dataset:
        raise UsageError("--dataset hf needs --hf_dataset ID_OR_DIR: a Hugging Face hub data set id, or a directory "
                         "saved with save_to_disk or of the data set's parquet files")  # fmt: skip
    for item in opts.hf_splits or ():
        split, _, sources = item.partition("=")
        if split not in ("train", "validation", "test") or not all(sources.split("+")):
            raise UsageError(f"--hf_splits {item}: give SPLIT=SOURCE, SPLIT one of train, validation, test and "
                             "SOURCE a split of --hf_dataset (several joined with +, e.g. train=train+restval)")


def check_hf_options(opts, datasets):
    """``--captioner hf``'s options: a model to load, and LoRA settings that mean something."""
    if opts.lora_rank < 0:
        raise UsageError(f"--lora_rank must not be negative, got {opts.lora_rank}")
    if opts.hf_image_size is not None and opts.hf_image_size < 1:
        raise UsageError(f"--hf_image_size must be positive, got {opts.hf_image_size}")
    if opts.captioner != "hf":
        return
    if not opts.hf_model and not set(datasets) <= OWN_MODELS:  # the synthetic world brings its own
        raise UsageError("--captioner hf needs --hf_model: a transformers hub id or a local directory")
    lora_only = [f"--{name}" for name in ("lora_alpha", "lora_targets") if getattr(opts, name)]
    lora_only += ["--merge_lora"] if opts.merge_lora else []
    if lora_only and not opts.lora_rank:
        raise UsageError(f"{', '.join(lora_only)} set LoRA's adapters: give --lora_rank r too")
    if opts.lora_rank and opts.hf_train_vision:
        raise UsageError("--lora_rank trains adapters on the language model only: drop --hf_train_vision")
    if opts.kl_coeff > 0 and opts.kl_reference == "language_model":
        raise UsageError("--kl_reference language_model needs --captioner clipcap; use captioner")


# The extra that installs each tracker (setup.py's "tracking"), and the module it is imported as.
TRACKER_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def check_tracking(opts):
    """The trackers exist and have somewhere to write; the logging intervals are counts."""
    import importlib.util

    for name in ("log_every", "log_captions_every"):
        if getattr(opts, name) < 0:
            raise UsageError(f"--{name} must be 0 (off) or a number of updates, got {getattr(opts, name)}")
    if opts.caption_table_images < 1:
        raise UsageError(f"--caption_table_images must be at least 1, got {opts.caption_table_images}")
    trackers = list(opts.report_to)
    if "none" in trackers and len(trackers) > 1:
        others = " ".join(tracker for tracker in trackers if tracker != "none")
        raise UsageError(f"--report_to none logs nowhere: drop it, or drop {others}")
    if "tensorboard" in trackers and not opts.checkpoint_dir:
        raise UsageError("--report_to tensorboard writes its event files into the run directory "
                         "(RUN/tensorboard): give --checkpoint_dir")  # fmt: skip
    for tracker in trackers:
        if tracker != "none" and importlib.util.find_spec(TRACKER_MODULES[tracker]) is None:
            raise UsageError(f"--report_to {tracker} needs the {tracker} package: pip install \".[tracking]\" (or "
                             f"pip install {tracker})")  # fmt: skip


def check_push(opts):
    """``--push_to_hub`` uploads the finished run's files: it needs a run directory and a repository id the Hub
    can hold (checked here, before the run, not after it)."""
    from ..runtime.downloads import check_repo_id

    if opts.push_to_hub is None:
        if opts.hub_private:
            raise UsageError("--hub_private makes the --push_to_hub repository private: give --push_to_hub REPO_ID")
        return
    check_repo_id(opts.push_to_hub, "--push_to_hub")
    if opts.checkpoint_dir is None:
        raise UsageError("--push_to_hub uploads the finetuned captioner the run writes into --checkpoint_dir: set one")
