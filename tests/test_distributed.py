"""Data-parallel finetuning: two CPU processes (gloo) against one process on the same global batches.

Each run goes through the real code paths: ``core.init`` detects the torchrun variables and starts the process
group, ``games.build_game`` makes the distractors span the global batch, ``data.training_loader`` hands each
rank its share, and the Trainer wraps the game in DistributedDataParallel.  Rollouts are greedy so that both
runs caption identically; everything downstream (rewards, baselines, KL, gradients, optimizer steps) must
agree.  The optimizer is SGD: Adam would turn the float noise of gradients that are zero in exact arithmetic
(GPT-2's attention key biases) into full-size steps, in one process as much as in two.
"""

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from egg.zoo.discriminative_captioner import distributed
from egg.zoo.discriminative_captioner.callbacks import EpochSetter
from egg.zoo.discriminative_captioner.captioners.clipcap import ClipCapCaptioner, ClipCapConfig, ClipCapModel
from egg.zoo.discriminative_captioner.clip_models import clip_transform
from egg.zoo.discriminative_captioner.core import core
from egg.zoo.discriminative_captioner.data import EncodedSplit, ImageSplit, retrieval_loader, training_loader
from egg.zoo.discriminative_captioner.errors import UsageError
from egg.zoo.discriminative_captioner.games import build_game, build_optimizer
from egg.zoo.discriminative_captioner.retrievers.clip import ClipRetriever
from egg.zoo.discriminative_captioner.synthetic.pretrain import word_tokenizer

from .tiny_models import tiny_clip, tiny_gpt2

GLOBAL_BATCH, N_IMAGES, FEATURES = 8, 16, 32  # two global batches per epoch
GAME_OPTIONS = dict(reward="logprob", reward_temperature=0.05, greedy_rollouts=True, num_beams=2)
# With greedy rollouts the greedy baseline cancels the reward, so that configuration's gradient is the entropy's.
CONFIGURATIONS = {
    "mean baseline, KL, entropy": dict(baseline="mean", kl_coeff=0.2, entropy_coeff=0.01, standardize_advantage=False),
    "standardised advantage": dict(baseline="none", kl_coeff=0.0, entropy_coeff=0.0, standardize_advantage=True),
    "greedy baseline": dict(baseline="greedy", kl_coeff=0.0, entropy_coeff=0.05, standardize_advantage=False),
}  # fmt: skip


class Recorder(core.Callback):
    """Keeps each batch's loss, the (gathered) logs, and the gradients the optimizer steps with."""

    def __init__(self, optimizer, parameters):
        self.losses, self.rewards, self.baselines, self.grads, self.epoch_losses = [], [], [], [], []
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

    def on_epoch_end(self, loss, logs, epoch):
        self.epoch_losses.append(loss)


def tiny_split(name):
    generator = torch.Generator().manual_seed(1)
    images = torch.nn.functional.normalize(torch.randn(N_IMAGES, FEATURES, generator=generator), dim=-1)
    features = torch.randn(N_IMAGES, FEATURES, generator=generator)
    split = ImageSplit(name, images=[None] * N_IMAGES, references=[["a caption"]] * N_IMAGES)
    return EncodedSplit(split, features, images)


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
    game_opts = argparse.Namespace(**GAME_OPTIONS, **configuration, distributed_context=context)
    game = build_game(game_opts, captioner, retriever)
    optimizer = build_optimizer(game)
    parameters = list(captioner.trainable_parameters())

    loader = training_loader(tiny_split("train"), GLOBAL_BATCH, seed=0, rank=context.rank,
                             world_size=context.world_size)  # fmt: skip
    recorder = Recorder(optimizer, parameters)
    trainer = core.Trainer(game, optimizer, loader, callbacks=[EpochSetter(loader.batch_sampler), recorder])
    trainer.train(n_epochs=1)
    _, logs = trainer.eval(retrieval_loader(tiny_split("test"), GLOBAL_BATCH, 0))  # every rank scores all sets
    return {
        "losses": recorder.losses,
        "epoch_loss": recorder.epoch_losses[0],
        "rewards": recorder.rewards,
        "baselines": recorder.baselines,
        "grads": recorder.grads,
        "parameters": [p.detach().clone() for p in parameters],
        "baseline_state": game.get_extra_state(),
        "eval_rewards": logs.aux["reward"],
        "eval_acc": logs.aux["acc"],
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
    for name, configuration in CONFIGURATIONS.items():
        compare([rank[name] for rank in ranks], train_one_epoch(configuration), name)


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
        for key, value in single["baseline_state"]["baseline"].items():
            assert_close(rank["baseline_state"]["baseline"][key], value, f"{name}: baseline {key}")
        # Evaluation: each retrieval batch split across the ranks and gathered gives the single-process P@1.
        # Every rank scores every set; the gathered logs hold one copy per rank of the single process's rows.
        copies = len(ranks)
        assert_close(rank["eval_rewards"].sort().values, single["eval_rewards"].repeat(copies).sort().values,
                     f"{name}: evaluation rewards")  # fmt: skip
        assert torch.equal(rank["eval_acc"].sort().values, single["eval_acc"].repeat(copies).sort().values)
        assert rank["eval_acc"].mean() == single["eval_acc"].mean()
    assert ranks[0]["losses"] != ranks[1]["losses"]  # the ranks did see different halves


def test_batch_sizes_must_split_evenly_across_processes():
    context = argparse.Namespace(is_distributed=True, world_size=3, rank=0, local_rank=0)
    opts = argparse.Namespace(distributed_context=context, batch_size=8, eval_candidates=9, random_seed=0)
    with pytest.raises(UsageError, match="--batch_size 8 must be divisible by the number of processes 3"):
        distributed.setup(opts)


@pytest.mark.slow  # two full runs of train (two to seven minutes on a shared 2-core machine)
def test_torchrun_trains_like_one_process(tiny_run_args, tmp_path):
    """``train`` under ``torchrun --nproc_per_node 2`` on the CPU: the leader alone prints and saves, and the
    run equals a single-process run with the same options (greedy rollouts, so both caption alike)."""
    args = tiny_run_args + ["--greedy_rollouts", "--random_seed", "1"]
    train = [sys.executable, "-m", "egg.zoo.discriminative_captioner.train", *args, "--checkpoint_dir"]
    command = train[:1] + ["-m", "torch.distributed.run", "--nproc_per_node", "2"] + train[1:] + [str(tmp_path / "two")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    two = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    single = subprocess.run(train + [str(tmp_path / "one")], capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]

    lines = [[json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")] for run in (two, single)]
    assert len(lines[0]) == len(lines[1]) == 4  # epoch-0 validation, train, validation, final test: printed once
    for got, expected in zip(*lines):
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == (pytest.approx(value, rel=1e-5, abs=1e-6) if isinstance(value, float) else value), key
    states = [torch.load(tmp_path / run / "final.tar", weights_only=False).model_state_dict for run in ("two", "one")]
    assert states[0].keys() == states[1].keys()
    for key, value in states[1].items():
        if torch.is_tensor(value) and value.is_floating_point():
            # 12 Adam steps; Adam turns the float noise of gradients that are zero in theory into small steps
            assert torch.allclose(states[0][key], value, atol=1e-4), key
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))
