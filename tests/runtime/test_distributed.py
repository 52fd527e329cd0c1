"""Data-parallel finetuning: two CPU processes (gloo) against one process on the same global batches.

Each run goes through the real code paths: ``core.init`` detects the torchrun variables and starts the process
group, ``games.build_game`` makes the distractors span the global batch, ``data.training_loader`` (or
``hard_distractor_loader``) and ``data.retrieval_loader`` hand each rank its share, and the Trainer wraps the game
in DistributedDataParallel.
Rollouts are greedy so that both runs caption identically; everything downstream (rewards, baselines, KL,
gradients, optimizer steps, the logged validation and test scores) must agree.  The optimizer is SGD: Adam would
turn the float noise of gradients that are zero in exact arithmetic (GPT-2's attention key biases) into full-size
steps, in one process as much as in two.
"""

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from egg.zoo.discriminative_captioner import experiment, train
from egg.zoo.discriminative_captioner.callbacks import ConsoleLogger, EpochSetter
from egg.zoo.discriminative_captioner.captioners.clipcap import ClipCapCaptioner, ClipCapConfig, ClipCapModel
from egg.zoo.discriminative_captioner.core import Checkpoint, core
from egg.zoo.discriminative_captioner.data import EncodedSplit, ImageSplit, retrieval_loader, training_loader
from egg.zoo.discriminative_captioner.data.base import retrieval_share
from egg.zoo.discriminative_captioner.data.hard_distractors import hard_distractor_loader
from egg.zoo.discriminative_captioner.data.samplers import EpochBatchSampler
from egg.zoo.discriminative_captioner.games import build_game, build_optimizer
from egg.zoo.discriminative_captioner.options.parse import config_of
from egg.zoo.discriminative_captioner.retrievers.clip import ClipRetriever
from egg.zoo.discriminative_captioner.runtime import distributed
from egg.zoo.discriminative_captioner.runtime.checkpointing import save_checkpoint_pair
from egg.zoo.discriminative_captioner.runtime.clip_loading import clip_transform
from egg.zoo.discriminative_captioner.runtime.errors import UsageError
from egg.zoo.discriminative_captioner.synthetic.pretrain import word_tokenizer

from ..tiny_models import tiny_clip, tiny_gpt2

# Two processes on this machine; --standalone: a rendezvous on a free port of its own for every run, not the fixed
# 29500 that consecutive runs (an interrupted run, then its resumption) would otherwise share.
TORCHRUN = ["--standalone", "--nproc_per_node", "2"]
GLOBAL_BATCH, N_IMAGES, FEATURES = 8, 16, 32  # two global batches per epoch
# Candidate sets of 5, which two ranks cannot share evenly; neither split is a multiple of 5.  Validation: sets
# of 5, 5, 5 and 1 targets (rank 1 captions only padding for the last); test: 5, 5 and 3 targets.
CANDIDATES, EVAL_IMAGES = 5, {"validation": 16, "test": 13}
GAME_OPTIONS = dict(reward="logprob", reward_temperature=0.05, rollouts="greedy", greedy_rollouts=True, num_beams=2,
                    optimizer="sgd", lr=0.1)  # the optimizer as the core's init below is given it
# With greedy rollouts the greedy baseline cancels the reward, so that configuration's gradient is the entropy's.
CONFIGURATIONS = {
    "mean baseline, KL, entropy": dict(baseline="mean", kl_coeff=0.2, entropy_coeff=0.01, standardize_advantage=False),
    "standardised advantage": dict(baseline="none", kl_coeff=0.0, entropy_coeff=0.0, standardize_advantage=True),
    "greedy baseline": dict(baseline="greedy", kl_coeff=0.0, entropy_coeff=0.05, standardize_advantage=False),
    # Each caption against its target's 2 nearest neighbours, which travel with the rank's share, and 5 batch images.
    "hard distractors": dict(baseline="mean", kl_coeff=0.0, entropy_coeff=0.0, standardize_advantage=False,
                             hard_distractors=2),
    # The first configuration in micro-batches of one image: DDP sees each gradient arrive once, from the backward.
    "micro-batches": dict(baseline="mean", kl_coeff=0.2, entropy_coeff=0.01, standardize_advantage=False,
                          micro_batch_size=1),
    # Two retrievers in turn: each candidate's embeddings joined, the turn the same on every rank.
    "two retrievers, alternate": dict(baseline="mean", kl_coeff=0.0, entropy_coeff=0.0, standardize_advantage=False,
                                      retriever_mix="alternate", retrievers=2),
}  # fmt: skip


class Recorder(core.Callback):
    """Keeps each batch's loss, the (gathered) logs, and the gradients the optimizer steps with."""

    def __init__(self, optimizer, parameters):
        self.losses, self.rewards, self.baselines, self.grads, self.epoch_losses = [], [], [], [], []
        self.eval_losses, self.eval_logs = [], []  # per evaluation batch, what upstream EGG's Trainer averages
        step = optimizer.step

        def recording_step(*args, **kwargs):
            self.grads.append([p.grad.clone() for p in parameters])
            return step(*args, **kwargs)

        optimizer.step = recording_step

    def on_batch_end(self, logs, loss, batch_id, is_training=True):
        if is_training:
            self.losses.append(loss.item())
            self.rewards.append(logs.aux["reward"])
            self.baselines.append(logs.aux["baseline"])
        else:
            self.eval_losses.append(loss.item())
            self.eval_logs.append(logs.aux)

    def on_epoch_end(self, loss, logs, epoch):
        self.epoch_losses.append(loss)


def tiny_split(name, n_images=N_IMAGES, retrievers=1):
    generator = torch.Generator().manual_seed(1)
    images = torch.nn.functional.normalize(torch.randn(n_images, FEATURES, generator=generator), dim=-1)
    features = torch.randn(n_images, FEATURES, generator=generator)
    for _ in range(retrievers - 1):  # more retrievers' embeddings of the same images, joined as the cache gives them
        more = torch.nn.functional.normalize(torch.randn(n_images, FEATURES, generator=generator), dim=-1)
        images = torch.cat([images, more], dim=1)
    split = ImageSplit(name, images=[None] * n_images, references=[["a caption"]] * n_images)
    return EncodedSplit(split, features, images)


def evaluation_loader(name, context, retrievers=1):
    return retrieval_loader(tiny_split(name, EVAL_IMAGES[name], retrievers), CANDIDATES, 0, rank=context.rank,
                            world_size=context.world_size)  # fmt: skip


def record_captioned(sender):
    """The ``aux_input`` of every batch the sender captions in evaluation: which targets this rank captioned."""
    captioned = []

    def record(module, args):
        if not module.training:
            captioned.append(args[1])

    sender.register_forward_pre_hook(record)
    return captioned


def train_one_epoch(configuration):
    """One epoch (two global batches) in this process's share; returns what the comparison needs."""
    torch.set_num_threads(1)
    opts = core.init(params=["--no_cuda", "--random_seed", "3", "--optimizer", "sgd", "--lr", "0.1"])
    context = opts.distributed_context
    torch.manual_seed(0)  # the same tiny models in every process
    tokenizer = word_tokenizer()
    model = ClipCapModel(ClipCapConfig(prefix_length=3, prefix_size=FEATURES), tiny_gpt2(len(tokenizer)))
    captioner = ClipCapCaptioner(model, tokenizer, image_encoder=None, max_len=6)
    retriever = ClipRetriever(tiny_clip(), clip_transform(32))
    game_options = {key: value for key, value in configuration.items() if key != "retrievers"}
    game_opts = config_of(distributed_context=context).replace(**GAME_OPTIONS, **game_options)
    retrievers = configuration.get("retrievers", 1)
    extra = [ClipRetriever(tiny_clip(seed=10 + i), clip_transform(32)) for i in range(retrievers - 1)]
    game = build_game(game_opts, captioner, retriever, extra)
    optimizer = build_optimizer(game_opts, game)
    parameters = list(captioner.trainable_parameters())

    shares = dict(seed=0, rank=context.rank, world_size=context.world_size)
    if configuration.get("hard_distractors"):
        loader = hard_distractor_loader(tiny_split("train"), configuration["hard_distractors"], GLOBAL_BATCH, **shares)
    else:
        loader = training_loader(tiny_split("train", retrievers=retrievers), GLOBAL_BATCH, **shares)
    recorder = Recorder(optimizer, parameters)
    captioned = record_captioned(game.sender)
    callbacks = [EpochSetter(loader.batch_sampler), recorder, ConsoleLogger()]  # on every rank, to compare them
    trainer = core.Trainer(game, optimizer, loader, callbacks=callbacks,
                           validation_data=evaluation_loader("validation", context, retrievers))  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        trainer.train(n_epochs=1)
    logged = [json.loads(line) for line in printed.getvalue().splitlines() if line.startswith("{")]
    loss, logs = trainer.eval(evaluation_loader("test", context, retrievers))
    final = {"loss": loss, **{key: value.mean().item() for key, value in logs.aux.items()}}  # as train.py reports
    return {
        "losses": recorder.losses,
        "epoch_loss": recorder.epoch_losses[0],
        "rewards": recorder.rewards,
        "baselines": recorder.baselines,
        "grads": recorder.grads,
        "parameters": [p.detach().clone() for p in parameters],
        "baseline_state": game.get_extra_state(),
        "validation": [line for line in logged if line["mode"] == "test"][0],
        "test": final,
        "eval_losses": recorder.eval_losses,
        "eval_logs": recorder.eval_logs,
        "captioned": captioned,
    }


def run_rank(rank, world_size, port, directory):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank),
                      LOCAL_RANK=str(rank))  # fmt: skip, as torchrun sets them
    results = {name: train_one_epoch(configuration) for name, configuration in CONFIGURATIONS.items()}
    torch.save(results, os.path.join(directory, f"rank{rank}.pt"))
    distributed.close()


def assert_close(actual, expected, what):
    assert torch.allclose(torch.as_tensor(actual), torch.as_tensor(expected), rtol=1e-5, atol=1e-6), what


def test_two_processes_match_one_process_on_the_same_global_batches(tmp_path, free_port):
    mp.spawn(run_rank, args=(2, free_port, str(tmp_path)), nprocs=2, join=True)  # one process group for all
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(2)]
    singles = {name: train_one_epoch(configuration) for name, configuration in CONFIGURATIONS.items()}
    for name in CONFIGURATIONS:
        compare([rank[name] for rank in ranks], singles[name], name)
    # micro-batches change the memory, not the update
    whole, micro = singles["mean baseline, KL, entropy"], singles["micro-batches"]
    for step in range(2):
        for got, expected in zip(micro["grads"][step], whole["grads"][step]):
            assert_close(got, expected, f"micro-batches: step {step} gradients")


def compare(ranks, single, name):
    """Asserts that two ranks' results of one configuration equal the single process's."""
    for step in range(2):
        # Rewards: each caption met the whole global batch; the gathered logs are in global order.
        for rank in ranks:
            assert_close(rank["rewards"][step], single["rewards"][step], f"{name}: step {step} rewards")
            baseline = rank["baselines"][step]  # the same running mean on both ranks, or per-sample greedy costs
            assert_close(baseline, single["baselines"][step].expand_as(baseline), f"{name}: step {step} baseline")
        # Losses: each rank's mean over its half; the halves average to the global mean.
        assert_close((ranks[0]["losses"][step] + ranks[1]["losses"][step]) / 2, single["losses"][step], name)
        # Gradients: DDP's average equals the single-process gradient of the mean loss, on every rank.
        for rank in ranks:
            for got, expected in zip(rank["grads"][step], single["grads"][step]):
                assert_close(got, expected, f"{name}: step {step} gradients")
    assert any(g.abs().sum() > 0 for g in single["grads"][1]), f"{name}: the comparison needs non-zero gradients"
    for rank in ranks:
        assert rank["epoch_loss"] == pytest.approx(single["epoch_loss"], rel=1e-5)
        for got, expected in zip(rank["parameters"], single["parameters"]):
            assert_close(got, expected, f"{name}: parameters after two SGD steps")
        for key, value in single["baseline_state"]["baselines"][0].items():
            assert_close(rank["baseline_state"]["baselines"][0][key], value, f"{name}: baseline {key}")
    assert ranks[0]["losses"] != ranks[1]["losses"]  # the ranks did see different halves
    compare_evaluation(ranks, single, name)


def compare_evaluation(ranks, single, name):
    """Validation and test: each rank captioned its share of every candidate set, and logged one process's scores."""
    targets = [EVAL_IMAGES[split] for split in ("validation", "test")]
    sets = [[CANDIDATES] * (n // CANDIDATES) + [n % CANDIDATES] for n in targets]  # targets per set, in order
    assert [len(batch["image_index"]) for batch in single["captioned"]] == sets[0] + sets[1]
    shares = [[], []]  # per split, the targets captioned by some rank (padding rows left out)
    for rank in ranks:
        assert [len(batch["image_index"]) for batch in rank["captioned"]] == [-(-t // 2) for t in sets[0] + sets[1]]
        for split, batches in enumerate((rank["captioned"][: len(sets[0])], rank["captioned"][len(sets[0]) :])):
            shares[split] += [i for batch in batches for i in batch["image_index"][~batch["padding"]].tolist()]
    assert [sorted(share) for share in shares] == [list(range(n)) for n in targets]  # each target once, by one rank

    for rank in ranks:
        # Each evaluation batch: the game returned the whole set's loss and logs on every rank (upstream EGG's
        # Trainer logs the leader's batch losses), and the Trainer's gathering holds one copy per rank.
        assert_close(rank["eval_losses"], single["eval_losses"], f"{name}: evaluation batch losses")
        assert len(rank["eval_logs"]) == len(single["eval_logs"])
        for got, expected in zip(rank["eval_logs"], single["eval_logs"]):
            assert got.keys() == expected.keys()
            for key in ("acc", "reward", "length"):
                assert_close(got[key], expected[key].repeat(len(ranks)), f"{name}: evaluation {key}")
        # What the ConsoleLogger prints for validation and train.py reports for the test split.
        for split in ("validation", "test"):
            got, expected = rank[split], single[split]
            assert got.keys() == expected.keys()
            assert got["acc"] == expected["acc"], f"{name}: {split} P@1"
            for key, value in expected.items():
                assert got[key] == (pytest.approx(value, rel=1e-6, abs=1e-7) if isinstance(value, float) else value)


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("n_targets", [1, 2, 5, 100])
def test_the_ranks_shares_of_a_candidate_set_are_its_targets_in_order(n_targets, world_size):
    shares = [retrieval_share(n_targets, rank, world_size) for rank in range(world_size)]
    assert len({len(positions) for positions, _ in shares}) == 1  # every rank captions as many rows
    kept = [p for positions, padding in shares for p, is_padding in zip(positions, padding) if not is_padding]
    assert kept == list(range(n_targets))  # gathered in rank order, without padding: the set's targets in order
    assert sum(sum(padding) for _, padding in shares) < world_size


def test_batch_sizes_must_split_evenly_across_processes():
    context = argparse.Namespace(is_distributed=True, world_size=3, rank=0, local_rank=0)
    opts = argparse.Namespace(distributed_context=context, batch_size=8, eval_candidates=9, random_seed=0)
    with pytest.raises(UsageError, match="--batch_size 8 must be divisible by the number of processes 3"):
        distributed.setup(opts)


@pytest.mark.slow  # two full runs of train (two to seven minutes on a shared 2-core machine)
def test_torchrun_trains_like_one_process(tiny_run_args, tmp_path):
    """``train`` under ``torchrun --nproc_per_node 2`` on the CPU: the leader alone prints and saves, and the
    run equals a single-process run with the same options (greedy rollouts, so both caption alike)."""
    # no KL penalty: a sampled estimate on a greedy path is refused, and the game-level tests above cover the KL
    args = tiny_run_args + ["--greedy_rollouts", "--kl_coeff", "0", "--random_seed", "1", "--report_to", "tensorboard"]
    train = [sys.executable, "-m", "egg.zoo.discriminative_captioner.train", *args, "--checkpoint_dir"]
    command = train[:1] + ["-m", "torch.distributed.run", *TORCHRUN] + train[1:] + [str(tmp_path / "two")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    two = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    single = subprocess.run(train + [str(tmp_path / "one")], capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]

    printed = [[line for line in run.stdout.splitlines() if line.startswith("{")] for run in (two, single)]
    assert len(printed[0]) == len(printed[1]) == 4  # epoch-0 validation, train, validation, final test: printed once
    # compared at full precision: the run's log, not the rounded console
    lines = [[json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
             for run in ("two", "one")]  # fmt: skip
    for got, expected in zip(*lines):
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == (pytest.approx(value, rel=1e-5, abs=1e-6) if isinstance(value, float) else value), key
    states = [torch.load(tmp_path / run / "final.tar", weights_only=False).model_state_dict for run in ("two", "one")]
    assert states[0].keys() == states[1].keys()
    for key, value in states[1].items():
        if torch.is_tensor(value) and value.is_floating_point():
            # 12 Adam steps; Adam turns the float noise of gradients that are zero in theory into small steps.
            # GPT-2's key bias is one such: it adds the same score to every key a query meets, which the softmax
            # cancels; its noise moves it by up to lr per step (lr 1e-4, 12 updates).
            got, tolerance = states[0][key].clone(), torch.full_like(value, 1e-4)
            if key.endswith("attn.c_attn.bias"):
                width = value.shape[0] // 3  # query, key, value biases
                tolerance[width : 2 * width] = 12 * 1e-4
            assert ((got - value).abs() <= tolerance).all(), key
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))
    assert len(os.listdir(tmp_path / "two" / "tensorboard")) == 1  # the leader's events alone


def torchrun(args, env, **kwargs):
    """``train`` under ``torchrun --nproc_per_node 2`` (two CPU processes, gloo)."""
    command = [sys.executable, "-m", "torch.distributed.run", *TORCHRUN, "-m", "egg.zoo.discriminative_captioner.train",
               *args]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def finished(process):
    """Waits for a torchrun process (reading its pipes, which could otherwise fill up); returns its stderr, or
    fails with the lines that say why it failed."""
    _, stderr = process.communicate(timeout=600)
    reasons = [line for line in stderr.splitlines() if "Error" in line or "error" in line or "rank" in line.lower()]
    assert process.returncode == 0, "\n".join(reasons[-60:])
    return stderr


@pytest.mark.slow  # three two-process runs per case (one to three minutes on a shared 2-core machine)
@pytest.mark.parametrize("options", [[], ["--hard_distractors", "3"]], ids=["random", "hard-distractors"])
def test_two_processes_stopped_by_sigterm_mid_epoch_resume_to_the_straight_runs_end(options, tiny_run_args, tmp_path):
    """SIGTERM to torchrun (which passes it to both ranks) mid-epoch: the ranks agree on the update to stop at,
    the leader's checkpoint holds both ranks' random states, and the resumed run ends bitwise where the straight
    two-process run ends.  Rollouts are sampled, so each rank's own random state matters."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = tiny_run_args + ["--random_seed", "3"] + options
    finished(torchrun(args + ["--checkpoint_dir", str(tmp_path / "straight")], env))

    run = tmp_path / "run"
    interrupted = torchrun(args + ["--checkpoint_dir", str(run), "--checkpoint_every", "1"], env)
    deadline = time.monotonic() + 600
    while not (run / "latest.resume.pt").exists():
        assert interrupted.poll() is None and time.monotonic() < deadline, interrupted.communicate()[1][-3000:]
        time.sleep(0.02)
    interrupted.send_signal(signal.SIGTERM)
    _, stderr = interrupted.communicate(timeout=600)
    assert f"SIGTERM: checkpoint written to {run / 'latest.tar'}" in stderr, stderr[-3000:]
    state = torch.load(run / "latest.resume.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rank_rng"]) == 2 and 0 < state["batches_done"] < 12
    assert not torch.equal(state["rank_rng"][0]["torch"], state["rank_rng"][1]["torch"])

    finished(torchrun(args + ["--checkpoint_dir", str(run), "--load_from_checkpoint", str(run / "latest.tar")], env))
    expected = torch.load(tmp_path / "straight" / "clipcap.pt", weights_only=True)
    actual = torch.load(run / "clipcap.pt", weights_only=True)
    assert all(torch.equal(actual[key], expected[key]) for key in expected)  # bitwise
    final = [json.loads((directory / "final.json").read_text()) for directory in (tmp_path / "straight", run)]
    assert final[0] == final[1]


def test_a_checkpoint_resumes_only_with_the_number_of_processes_that_wrote_it(tiny_run_args, tmp_path, monkeypatch):
    def refuse(opts):
        raise AssertionError("heavy work started")

    monkeypatch.setattr(experiment, "build_experiment", refuse)
    state = EpochSetter(EpochBatchSampler(600, 50, seed=0)).state(epoch=1, batches_done=5, updates=5)
    state.update(world_size=2, rank_rng=[state["rng"], state["rng"]])  # as two processes write it
    checkpoint = Checkpoint(epoch=0, model_state_dict={}, optimizer_state_dict={}, optimizer_scheduler_state_dict=None)
    save_checkpoint_pair(checkpoint, state, str(tmp_path / "latest.tar"))
    resume = tiny_run_args + ["--load_from_checkpoint", str(tmp_path / "latest.tar")]
    with pytest.raises(UsageError, match="written by 2 processes, this run has 1: resume it with 2, or pass "
                                         "--allow_world_size_change"):  # fmt: skip
        train.main(resume)
    with pytest.raises(AssertionError, match="heavy work started"):  # allowed: it goes ahead
        train.main(resume + ["--allow_world_size_change"])


def close_after_a_step(rank, world_size, port, directory):
    """A rank that trains one step under DistributedDataParallel, then leaves the group as a run ends; records
    whether any DDP wrapper (which holds the process group) was still alive when the group was destroyed."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank),
                      LOCAL_RANK=str(rank))  # fmt: skip
    import gc

    import torch.distributed as dist

    torch.set_num_threads(1)
    opts = core.init(params=["--no_cuda", "--random_seed", "3", "--optimizer", "sgd", "--lr", "0.1"])
    torch.manual_seed(0)
    tokenizer = word_tokenizer()
    model = ClipCapModel(ClipCapConfig(prefix_length=3, prefix_size=FEATURES), tiny_gpt2(len(tokenizer)))
    captioner = ClipCapCaptioner(model, tokenizer, image_encoder=None, max_len=6)
    game_opts = config_of(distributed_context=opts.distributed_context).replace(**GAME_OPTIONS,
                                                                               **CONFIGURATIONS["micro-batches"])
    game = build_game(game_opts, captioner, ClipRetriever(tiny_clip(), clip_transform(32)))
    loader = training_loader(tiny_split("train"), GLOBAL_BATCH, seed=0, rank=rank, world_size=world_size)
    callbacks = [EpochSetter(loader.batch_sampler), ConsoleLogger()]  # they point back at the trainer: a cycle
    trainer = core.Trainer(game, build_optimizer(game_opts, game), loader, callbacks=callbacks)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train(n_epochs=1)
    alive, destroy = [], dist.destroy_process_group

    def recorded_destroy(*args, **kwargs):
        gc.collect()
        alive.append(sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects()))
        return destroy(*args, **kwargs)

    dist.destroy_process_group = recorded_destroy
    distributed.close(trainer)
    with open(os.path.join(directory, f"rank{rank}.json"), "w") as f:
        json.dump({"alive": alive, "unwrapped": not isinstance(trainer.game, torch.nn.parallel.DistributedDataParallel)}, f)


def test_the_process_group_goes_down_after_the_data_parallel_wrapper_that_holds_it(tmp_path, free_port):
    mp.spawn(close_after_a_step, args=(2, free_port, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        recorded = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert recorded == {"alive": [0], "unwrapped": True}


@pytest.mark.slow  # three two-process runs (one to two minutes on a shared 2-core machine)
def test_finished_two_process_runs_exit_zero_every_time(tiny_run_args, tmp_path):
    """A data-parallel run that has written its results ends with exit status 0, run after run (the scheduler
    that launched it would otherwise requeue a finished job)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for run in range(3):
        stderr = finished(torchrun(tiny_run_args + ["--random_seed", str(run), "--checkpoint_dir",
                                                    str(tmp_path / str(run))], env))  # fmt: skip
        assert "terminate called" not in stderr and (tmp_path / str(run) / "final.json").exists()
