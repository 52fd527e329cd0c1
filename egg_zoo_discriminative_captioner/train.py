"""DiscriTune finetuning: ``python -m egg.zoo.discriminative_captioner.train [--dataset synthetic] [options]``.

Options -> checks of paths and checkpoints -> data set and models -> encoded splits -> game -> optimizer ->
callbacks -> EGG Trainer.  Validation runs before the first update (logged as epoch 0) and
after every epoch, with beam-search captions and P@1 among ``--eval_candidates`` images; the finetuned captioner
is evaluated on the test split at the end.  A run resumes exactly from any of its checkpoints, including the
mid-epoch ones of ``--checkpoint_every`` and the one written on SIGTERM / SIGINT.
"""

import contextlib
import json
import os
import pickle
import shlex

from .options.parse import get_opts
from .runtime.errors import run_command

PROG = "python -m egg.zoo.discriminative_captioner.train"


def main(params):
    """Finetunes a captioner with DiscriTune; returns the test-split metrics of the finetuned captioner."""
    opts = get_opts(params, prog=PROG, description=__doc__.splitlines()[0])  # --help and bad options end here
    return finetune(opts, params)  # torch and the models: imported once the options are known to be good


def hand_to_egg(opts):
    """EGG's Trainer reads its options from the core's own namespace (``core.get_opts()``), not from the run
    config: of those it reads, the two that the run resolves after parsing are handed over here."""
    from .core import core
    from .runtime.precision import training_precision

    egg = core.get_opts()
    egg.load_from_checkpoint = opts.load_from_checkpoint  # --preemptable: the newest checkpoint of the directory
    egg.fp16 = training_precision(opts) == "fp16"  # EGG's Trainer keeps a GradScaler for fp16


def build_trainer(opts, game, optimizer, train_loader, validation_loader, callbacks, scheduler=None):
    """EGG's Trainer (with the learning-rate ``scheduler`` and ``--max_grad_norm``); a checkpoint that cannot be
    resumed becomes a one-line error."""
    from .core import core
    from .runtime.errors import UsageError

    try:
        return core.Trainer(
            game=game,
            optimizer=optimizer,
            optimizer_scheduler=scheduler,
            train_data=train_loader,
            validation_data=validation_loader,
            callbacks=callbacks,
            grad_norm=opts.max_grad_norm,
        )
    except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as error:
        if opts.load_from_checkpoint is None:
            raise
        reason = " ".join(str(error).split())[:300]
        raise UsageError(f"cannot resume from {opts.load_from_checkpoint}: {reason}") from error


def finetune(opts, params):
    """Finetunes a captioner with DiscriTune (``params``: the command line, for the printed resume command);
    returns the test-split metrics of the finetuned captioner."""
    from .options.resume import computing_options
    from .runtime.run_directory import FINAL_RESULTS, prepare_run

    options = computing_options(opts)  # as parsed, before the models' defaults fill some in
    opts, resume, results, lock = prepare_run(opts, options)  # opts: with the checkpoint it resumes
    with lock or contextlib.nullcontext():  # released however the run ends: done, an error, SIGTERM's exit
        if results is not None:  # e.g. a requeued --preemptable job whose run had ended
            directory = os.path.dirname(os.path.abspath(opts.load_from_checkpoint))
            print(f"run complete: its final test results are in {os.path.join(directory, FINAL_RESULTS)} "
                  f"(P@1 {results.get('acc', float('nan')):.4f}); nothing left to do (train further with a larger "
                  f"--n_epochs)", flush=True)  # fmt: skip
            return results
        return train_run(opts, params, resume, options)


def train_run(opts, params, resume, options):
    """The run itself, once ``prepare_run`` has checked it (``resume``: the state it continues, or None;
    ``options``: the computing options each checkpoint keeps)."""
    from .callbacks import (
        CheckpointWriter,
        ConsoleLogger,
        EpochSetter,
        InitialValidation,
        ProgressBar,
        final_evaluation_left,
        log_line,
        logged_values,
        stop_on_signal,
    )
    from .core import core
    from .data import retrieval_loader, training_loader
    from .data.hard_distractors import hard_distractor_loader
    from .experiment import build_experiment, training_splits, write_data_counts
    from .games import build_game, build_optimizer, build_scheduler
    from .hub.card import write_model_cards
    from .hub.push import push_run
    from .runtime import distributed
    from .runtime.checkpointing import LOG_FILE, atomic_write_text
    from .runtime.host_memory import keep_freed_memory
    from .runtime.run_directory import FINAL_RESULTS, remove_run, resumes_in_place, save_options
    from .tracking import run_tracker

    data_seed = distributed.setup(opts)  # the same on every rank
    if opts.device.type == "cpu":
        keep_freed_memory()  # a CPU step then reuses its memory instead of faulting it in (runtime/host_memory.py)
    context = opts.distributed_context
    rank, world_size = context.rank, context.world_size
    with distributed.leader_first(opts):  # the leader builds and caches shared data first
        experiment = build_experiment(opts)
    opts = experiment.config  # with its models resolved: what opts.json records
    train_set, validation_set, test_set = training_splits(experiment, opts.device)  # --validation_images: held out

    loader_options = dict(seed=data_seed, num_workers=opts.num_workers, rank=rank, world_size=world_size)
    if opts.hard_distractors:
        train_loader = hard_distractor_loader(train_set, opts.hard_distractors, opts.batch_size, **loader_options)
    else:
        train_loader = training_loader(train_set, opts.batch_size, **loader_options)
    evaluation_options = dict(seed=opts.eval_seed, rank=rank, world_size=world_size)  # each rank captions its share
    validation_loader = retrieval_loader(validation_set, opts.eval_candidates, **evaluation_options)
    extra = [retriever for retriever, _ in experiment.extra_retrievers]
    game = build_game(opts, experiment.captioner, experiment.retriever, extra)
    optimizer = build_optimizer(opts, game)
    scheduler = build_scheduler(opts, optimizer, len(train_loader) // opts.update_freq)

    position = EpochSetter(train_loader.batch_sampler)
    if resume is not None:
        position.resume_from(resume)
    callbacks = [] if opts.load_from_checkpoint else [InitialValidation()]  # first: it runs in on_epoch_begin
    callbacks.append(position)
    if context.is_leader:  # the other ranks of a distributed run neither print nor save
        log_file = os.path.join(opts.checkpoint_dir, LOG_FILE) if opts.checkpoint_dir else None
        callbacks += [ConsoleLogger(log_file=log_file), ProgressBar(len(train_loader))]
        tracker = run_tracker(opts, game, train_set, validation_set, updates=resume["updates"] if resume else 0)
        callbacks.append(tracker)  # before CheckpointWriter: a tracker's start leaves the run's signal handlers
    resume_command = ("python -m egg.zoo.discriminative_captioner.train " + shlex.join(params)).strip()
    if opts.checkpoint_dir:  # on every rank: the ranks checkpoint and stop together, the leader writes
        callbacks.append(
            CheckpointWriter(opts.checkpoint_dir, position, checkpoint_freq=opts.checkpoint_freq,
                             checkpoint_every=opts.checkpoint_every, update_freq=opts.update_freq,
                             resume_command=resume_command, updates=resume["updates"] if resume else 0,
                             writes=context.is_leader, options=options)
        )  # fmt: skip
    hand_to_egg(opts)
    trainer = build_trainer(opts, game, optimizer, train_loader, validation_loader, callbacks, scheduler)
    if opts.checkpoint_dir and context.is_leader:
        if opts.overwrite and not resumes_in_place(opts):  # the other run's files go now, not earlier
            remove_run(opts.checkpoint_dir)
        save_options(opts, opts.checkpoint_dir, resume, options)
        write_data_counts(opts.checkpoint_dir, [train_set, validation_set, test_set])
    trainer.train(n_epochs=opts.n_epochs)

    writes = opts.checkpoint_dir and context.is_leader
    stopped = final_evaluation_left(opts.checkpoint_dir, resume_command) if writes else None  # the leader says it
    with stop_on_signal(stopped) if opts.checkpoint_dir else contextlib.nullcontext():
        loss, logs = trainer.eval(retrieval_loader(test_set, opts.eval_candidates, **evaluation_options))
        results = logged_values(loss, logs)
        if context.is_leader:
            log_line({**results, "mode": "final", "split": "test", "epoch": opts.n_epochs}, log_file)
            tracker.log_final(results)
        if writes:
            saved = experiment.captioner.save_pretrained(opts.checkpoint_dir)
            write_model_cards(opts.checkpoint_dir, {**results, "epoch": opts.n_epochs}, opts.push_to_hub)  # README.md
            final_json = json.dumps({**results, "epoch": opts.n_epochs}, indent=2)
            atomic_write_text(final_json, os.path.join(opts.checkpoint_dir, FINAL_RESULTS))  # last: the run is done
            logs = [name for name in (LOG_FILE, "updates.jsonl", "captions/")
                    if os.path.exists(os.path.join(opts.checkpoint_dir, name))]  # fmt: skip
            print(f"run in {opts.checkpoint_dir}/: checkpoints final.tar and <epoch>.tar, the finetuned captioner "
                  f"{saved}, its model card README.md, {FINAL_RESULTS}, opts.json, {', '.join(logs)}", flush=True)
    if context.is_leader:
        tracker.finish()
    core.close()
    distributed.close(trainer)
    if writes and opts.push_to_hub:  # the finished run's captioner, options and card
        push_run(opts.checkpoint_dir, opts.push_to_hub, private=opts.hub_private)
    return results


if __name__ == "__main__":
    run_command(main)
