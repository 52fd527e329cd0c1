"""The argument groups of how a run goes: the step's memory and learning-rate schedule, checkpoints and resuming,
trackers and caption tables, and output (see ``groups.py`` for what each command uses)."""

LR_SCHEDULERS = ("constant", "linear", "cosine")
TRACKERS = ("none", "tensorboard", "wandb", "trackio")


def add_step_options(parser):
    group = parser.add_argument_group("the step's memory, learning-rate schedule and clipping")
    group.add_argument(
        "--micro_batch_size",
        type=int,
        default=None,
        help="images (each with its --rollouts_per_image captions) per scoring pass with gradients, and per pass "
        "of a frozen image encoder; the rewards, baselines and advantages still see the whole batch, and the "
        "update is the same up to float rounding, with less memory (default: the whole batch; in a data-parallel "
        "run, of each process's share)",
    )
    group.add_argument(
        "--rollout_batch_size",
        type=int,
        default=None,
        help="images decoded (and passed through a frozen image encoder) at a time, to bound the decoding's "
        "key-value cache (default: the whole batch); the captions then draw other random numbers, from the same "
        "distribution",
    )
    group.add_argument(
        "--lr_scheduler",
        choices=LR_SCHEDULERS,
        default="constant",
        help="learning rate over the optimizer updates: constant (the paper's), or linear or cosine decay to 0 at "
        "the run's last update (--n_epochs sets it), each after --warmup_steps",
    )
    group.add_argument(
        "--warmup_steps",
        type=int,
        default=0,
        help="optimizer updates over which the learning rate rises linearly from 0 to --lr",
    )
    group.add_argument(
        "--max_grad_norm",
        type=float,
        default=None,
        help="clip the gradient's global norm to this value before each update (EGG's Trainer grad_norm; "
        "default: no clipping)",
    )


def add_run_options(parser):
    group = parser.add_argument_group("checkpoints and resuming (with EGG's --checkpoint_dir, --load_from_checkpoint)")
    group.add_argument(
        "--checkpoint_every",
        type=int,
        default=0,
        help="also write a resumable checkpoint (latest.tar) every N optimizer updates, within epochs (0: off)",
    )
    group.add_argument(
        "--allow_option_change",
        nargs="+",
        default=None,
        metavar="NAME",
        help="resume a checkpoint with other values of these options (names without dashes, e.g. lr kl_coeff): "
        "a resume refuses any other change of what the run computes (how long, where and in how much memory it "
        "goes may change); opts.json records the new values and the epoch they hold from",
    )
    group.add_argument(
        "--allow_world_size_change",
        action="store_true",
        help="resume a checkpoint written by another number of processes: the interrupted epoch goes on from the "
        "saved batch, but the processes' random states cannot be carried over (the rollouts differ from an "
        "uninterrupted run's)",
    )


def add_tracking_options(parser):
    group = parser.add_argument_group("watching a run: trackers and caption tables")
    group.add_argument(
        "--report_to",
        nargs="+",
        choices=TRACKERS,
        default=["none"],
        metavar="TRACKER",
        help="log the run live to these trackers: none, tensorboard (RUN/tensorboard), wandb (offline without a "
        "network or an API key; WANDB_MODE decides when set), trackio (its local store, or its Space); several "
        'allowed (pip install ".[tracking]")',
    )
    group.add_argument(
        "--log_every",
        type=int,
        default=50,
        help="every N optimizer updates, log the mean loss, reward, P@1, KL, entropy and caption length of the "
        "updates since the last line, the learning rate, the gradient's norm and the images and tokens per "
        "second (RUN/updates.jsonl and the trackers; 0: only the epochs' lines)",
    )
    group.add_argument(
        "--log_captions_every",
        type=int,
        default=200,
        help="every N optimizer updates, a table of a few training images with their sampled captions, each "
        "caption's reward and advantage, the image the retriever ranked first and the target's rank "
        "(RUN/captions/epoch_<e>.jsonl and the trackers; 0: off); each validation adds the greedy captions of a "
        "fixed set of validation images",
    )
    group.add_argument(
        "--caption_table_images",
        type=int,
        default=4,
        help="images in each caption table",
    )
    group.add_argument(
        "--run_name",
        default=None,
        help="the run's name in the trackers (default: each tracker's own; a resumed run keeps its first name)",
    )
    group.add_argument(
        "--tracker_project",
        default="discriminative_captioner",
        help="the wandb or trackio project the run is logged in (WANDB_PROJECT, when set, for wandb)",
    )


def add_output_options(parser):
    group = parser.add_argument_group("output")
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="let a new run replace the checkpoints and finetuned captioner of another run in --checkpoint_dir",
    )
    group.add_argument("--push_to_hub", default=None, metavar="REPO_ID", help="once the run has finished, upload its "
                       "finetuned captioner, opts.json and model card (README.md) to this Hugging Face Hub model "
                       "repository (NAMESPACE/NAME, created if need be; its other files are replaced); needs "
                       "--checkpoint_dir and a login (hf auth login, or HF_TOKEN)")  # fmt: skip
    group.add_argument("--hub_private", action="store_true", help="make the --push_to_hub repository private")
