"""DiscriTune finetuning: ``python -m egg.zoo.discriminative_captioner.train [--dataset synthetic] [options]``.

Options -> data set and models -> encoded splits -> game -> optimizer -> callbacks -> EGG Trainer.  Validation
runs before the first update (logged as epoch 0) and after every epoch, with beam-search captions and P@1 among
``--eval_candidates`` images; the finetuned captioner is evaluated on the test split at the end.
"""

import json
import os
import pickle

from . import distributed
from .callbacks import AtomicCheckpointSaver, EpochSetter, InitialValidation, ProgressBar
from .checkpointing import atomic_write_text
from .core import core
from .data import check_batch_size, retrieval_loader, training_loader
from .errors import UsageError, run_command
from .experiment import build_experiment, encode_split
from .games import build_game, build_optimizer
from .opts import get_opts

PROG = "python -m egg.zoo.discriminative_captioner.train"


def check_opts(opts):
    """Rejects impossible option combinations before anything heavy is loaded."""
    check_batch_size(opts.batch_size)
    if opts.load_from_checkpoint is not None and not os.path.isfile(opts.load_from_checkpoint):
        raise UsageError(f"checkpoint not found: {opts.load_from_checkpoint} (--load_from_checkpoint)")
    if opts.max_len < 1:
        raise UsageError(f"--max_len must be at least 1 token, got {opts.max_len}")
    opts.checkpoint_dir = opts.checkpoint_dir or None  # --checkpoint_dir "" switches the game file's one off


def save_options(opts, directory):
    """Writes the run's resolved options next to its checkpoints."""
    values = {key: value for key, value in vars(opts).items() if key not in ("distributed_context", "optimizer")}
    atomic_write_text(json.dumps(values, indent=2, sort_keys=True, default=str), os.path.join(directory, "opts.json"))


def build_trainer(opts, game, optimizer, train_loader, validation_loader, callbacks):
    """EGG's Trainer; a checkpoint that cannot be resumed becomes a one-line error."""
    try:
        return core.Trainer(
            game=game,
            optimizer=optimizer,
            train_data=train_loader,
            validation_data=validation_loader,
            callbacks=callbacks,
        )
    except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError) as error:
        if opts.load_from_checkpoint is None:
            raise
        raise UsageError(f"cannot resume from {opts.load_from_checkpoint}: {error}") from error


def main(params):
    """Finetunes a captioner with DiscriTune; returns the test-split metrics of the finetuned captioner."""
    distributed.check_launch(params)
    opts = get_opts(params, prog=PROG, description=__doc__.splitlines()[0])
    check_opts(opts)
    data_seed = distributed.setup(opts)  # the same on every rank
    context = opts.distributed_context
    rank, world_size = context.rank, context.world_size
    with distributed.leader_first(opts):  # the leader builds and caches shared data first
        experiment = build_experiment(opts)
    train_set = encode_split(experiment, "train", opts.device)
    validation_set = encode_split(experiment, "validation", opts.device)
    test_set = encode_split(experiment, "test", opts.device)

    train_loader = training_loader(train_set, opts.batch_size, seed=data_seed, num_workers=opts.num_workers,
                                   rank=rank, world_size=world_size)  # fmt: skip
    validation_loader = retrieval_loader(validation_set, opts.eval_candidates, opts.eval_seed, rank, world_size)
    game = build_game(opts, experiment.captioner, experiment.retriever)
    optimizer = build_optimizer(game)

    callbacks = [InitialValidation(), EpochSetter(train_loader.batch_sampler)]
    if context.is_leader:  # the other ranks of a distributed run neither print nor save
        callbacks += [core.ConsoleLogger(as_json=True, print_train_loss=True), ProgressBar(len(train_loader))]
    if opts.checkpoint_dir and context.is_leader:
        save_options(opts, opts.checkpoint_dir)
        callbacks.append(AtomicCheckpointSaver(opts.checkpoint_dir, checkpoint_freq=opts.checkpoint_freq))
    trainer = build_trainer(opts, game, optimizer, train_loader, validation_loader, callbacks)
    trainer.train(n_epochs=opts.n_epochs)

    loss, logs = trainer.eval(retrieval_loader(test_set, opts.eval_candidates, opts.eval_seed, rank, world_size))
    results = {"loss": loss, **{key: value.mean().item() for key, value in logs.aux.items()}}
    if context.is_leader:
        print(json.dumps({**results, "mode": "final", "split": "test", "epoch": opts.n_epochs}), flush=True)
    if opts.checkpoint_dir and context.is_leader:
        experiment.captioner.save_pretrained(opts.checkpoint_dir)
    core.close()
    distributed.close()
    return results


if __name__ == "__main__":
    run_command(main)
