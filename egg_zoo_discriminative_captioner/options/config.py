"""The run config: every option of a run, typed and frozen, built once from the parsed command line.

The parser (``groups.py``, ``captioner.py``, ``egg.py``) holds each option's default, its help and its checks;
``RunConfig`` holds the values one run uses, and is what the commands pass to whatever needs them.  It cannot be
changed once built: a step that resolves a value (the data set's own models, a released file's local copy, the
checkpoint a run resumes, the other retrievers) makes a new config with ``replace``, so each config says what it
was used for.

``evaluate`` and ``caption`` add their own options (``EvaluateConfig``, ``CaptionConfig``).  A config is saved as
``opts.json`` (``saved_values``) and built again from such values by ``from_values``; the files of older versions
name some options differently (``current_names``).
"""

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

# Old names of options in saved opts.json files, as the current ones.
RENAMED = {"decoding": "decoder"}
# Set by the EGG core's init for this process: used by the run, never saved.
PROCESS_FIELDS = ("device", "distributed_context")
# Model options whose default depends on the data set: the released models unless the data set brings its own.
MODEL_DEFAULTS = {
    "clip_model": {"openai": "ViT-B/32", "open_clip": "ViT-B-32", "transformers": "openai/clip-vit-base-patch32"},
    "captioner_clip_model": "ViT-B/32",
    "clipcap_checkpoint": None,
    "language_model": "gpt2",
    "hf_model": None,  # --captioner hf: required, unless the data set brings one (the synthetic world)
}
MODEL_GROUPS = (("clipcap_checkpoint", "language_model", "captioner_clip_model"), ("clip_model",), ("hf_model",))


@dataclass(frozen=True)
class RunConfig:
    """The options of a run (train's; evaluate and caption share them), as parsed and checked."""

    # data
    dataset: str
    game: Optional[str]  # the game file's path (None: no game file)
    cache_dir: Optional[str]
    rebuild: bool
    data_root: Optional[str]
    feature_cache_dir: Optional[str]
    feature_batch_size: int
    hard_distractors: int
    validation_images: int
    synthetic_world: str
    eval_candidates: int
    eval_seed: int
    num_workers: int
    hf_dataset: Optional[str]  # --dataset hf: a hub id or a local directory; its columns and splits below
    image_column: Optional[str]
    caption_column: Optional[str]
    id_column: Optional[str]
    hf_splits: Optional[tuple]
    # captioner
    captioner: str
    clipcap_checkpoint: Optional[str]
    language_model: Optional[str]
    captioner_clip_model: Optional[str]
    mapping_type: str
    prefix_length: Optional[int]
    clip_length: Optional[int]
    normalize_prefix: Optional[bool]
    blip_model: str
    blip_prompt: str
    blip_train_vision: bool
    hf_model: Optional[str]
    hf_model_named: Optional[str]  # how messages name the hf model's option (evaluate's --models hf:DIR)
    hf_prompt: str
    hf_instruction: Optional[str]
    hf_image_size: Optional[int]
    hf_train_vision: bool
    lora_rank: int
    lora_alpha: Optional[float]
    lora_targets: Optional[tuple]
    merge_lora: bool
    gradient_checkpointing: bool
    num_beams: int
    decoder: str  # the decoder's implementation (auto, static, compiled, generate)
    stop_at_any_period: bool
    # retriever: the run's (``clip_model``) and the others of --clip_model A B ... (``extra_clip_models``)
    retriever: str
    clip_backend: str
    clip_model: Optional[str]
    clip_pretrained: Optional[str]
    extra_clip_models: tuple
    extra_clip_pretrained: tuple
    retriever_mix: str
    clip_download_root: Optional[str]
    retriever_precision: str
    # game (REINFORCE)
    reward: str
    reward_temperature: Optional[float]
    baseline: str
    rollouts_per_image: int
    entropy_coeff: float
    standardize_advantage: bool
    kl_coeff: float
    kl_in_baseline: bool
    kl_reference: str
    kl_estimator: str
    log_prob_normalization: str
    rollouts: str  # the rollout strategy (sample, greedy, beam); --greedy_rollouts is --rollouts greedy
    greedy_rollouts: bool
    precision: str
    # the step's memory, learning-rate schedule and clipping
    micro_batch_size: Optional[int]
    rollout_batch_size: Optional[int]
    lr_scheduler: str
    warmup_steps: int
    max_grad_norm: Optional[float]
    # watching a run: trackers and caption tables
    report_to: tuple
    log_every: int
    log_captions_every: int
    caption_table_images: int
    run_name: Optional[str]
    tracker_project: str
    # checkpoints, resuming, output
    checkpoint_every: int
    allow_option_change: Optional[tuple]
    allow_world_size_change: bool
    overwrite: bool
    push_to_hub: Optional[str]  # the Hub repository a finished run's captioner is uploaded to
    hub_private: bool
    # EGG's common options
    random_seed: Optional[int]  # None only in a config built without the core's init (config_of)
    seed_drawn: bool  # neither the command line nor the game file chose --random_seed
    checkpoint_dir: Optional[str]  # None: nowhere ('' on the command line)
    preemptable: bool
    checkpoint_freq: int
    validation_freq: int
    n_epochs: int
    load_from_checkpoint: Optional[str]
    no_cuda: bool
    batch_size: int
    optimizer: str
    lr: float
    update_freq: int
    vocab_size: int
    max_len: int
    tensorboard: bool
    tensorboard_dir: str
    distributed_port: int
    fp16: bool
    # this process (the EGG core's init): not options
    device: Any
    distributed_context: Any

    @classmethod
    def from_values(cls, values):
        """The config of ``values`` (a mapping with every field; lists become tuples, so nothing inside changes)."""
        names = [field.name for field in dataclasses.fields(cls)]
        missing = [name for name in names if name not in values]
        if missing:
            raise ValueError(f"{cls.__name__} needs values for {', '.join(missing)}")
        return cls(**{name: frozen(values[name]) for name in names})

    def saved_values(self):
        """The values ``opts.json`` holds (JSON types; not this process's device and ranks)."""
        return {name: thawed(getattr(self, name)) for name in field_names(self) if name not in PROCESS_FIELDS}

    def replace(self, **changes):
        """A new config with ``changes``."""
        return dataclasses.replace(self, **{name: frozen(value) for name, value in changes.items()})

    def with_model_defaults(self, own=None):
        """This config with its unset model options filled in: the data set's own models (``own``: option ->
        value, from its ``model_defaults``), else the released ones.

        A data set's own models come as a whole per model: once any of a model's files is given (say, a released
        ClipCap checkpoint), its other options default to the released models too.
        """
        own, changes = own or {}, {}
        for group in MODEL_GROUPS:
            use_own = all(getattr(self, key) is None for key in group)
            for key in group:
                if getattr(self, key) is None:
                    standard = MODEL_DEFAULTS[key][self.clip_backend] if key == "clip_model" else MODEL_DEFAULTS[key]
                    changes[key] = own.get(key, standard) if use_own else standard
        return self.replace(**changes)


@dataclass(frozen=True)
class EvaluateConfig(RunConfig):
    """``evaluate``'s options on top of the run's."""

    models: Optional[tuple]
    datasets: tuple  # --dataset when not given
    split: str
    output_dir: str
    nlg: bool
    spice: bool
    hard_sets: int
    near_duplicate_cosine: float
    training_log: tuple
    eval_retrievers: tuple
    clip_score_prompt: str  # put in front of each caption CLIP-S encodes ("": none, torchmetrics' CLIPScore)
    drift_language_model: Optional[str]  # None: the captioners' pretrained language model; "none": no NLL


@dataclass(frozen=True)
class CaptionConfig(RunConfig):
    """``caption``'s options on top of the run's."""

    images: tuple
    model: str
    output: Optional[str]


def current_names(values):
    """Option values (a game file's, a saved opts.json's) under the current names of options an older version named
    differently."""
    return {RENAMED.get(key, key): value for key, value in values.items()}


def field_names(config_class):
    """The names of a config class's (or config's) fields, in order."""
    return [field.name for field in dataclasses.fields(config_class)]


def frozen(value):
    """A list as a tuple, so that nothing inside a config changes either."""
    return tuple(value) if isinstance(value, list) else value


def thawed(value):
    """A tuple as the list JSON writes."""
    return list(value) if isinstance(value, tuple) else value


COMMAND_CONFIGS = {"train": RunConfig, "evaluate": EvaluateConfig, "caption": CaptionConfig}
