"""Learning-rate schedules by optimizer update and gradient clipping, handed to EGG's Trainer."""

import argparse

import pytest
import torch
from transformers import get_scheduler

from egg.zoo.discriminative_captioner import train
from egg.zoo.discriminative_captioner.games import build_scheduler


def options(kind, warmup=3, epochs=2):
    return argparse.Namespace(lr_scheduler=kind, warmup_steps=warmup, n_epochs=epochs)


def optimizer_of(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=lr)


def learning_rates(optimizer, scheduler, updates, updates_per_epoch):
    """The learning rate of each update, as EGG's Trainer runs them (its scheduler.step() once per epoch)."""
    rates = []
    for update in range(updates):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if (update + 1) % updates_per_epoch == 0:
            scheduler.step()
    return rates


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_the_learning_rate_follows_transformers_schedule_update_by_update(kind):
    optimizer = optimizer_of()
    scheduler = build_scheduler(options(kind), optimizer, updates_per_epoch=5)
    got = learning_rates(optimizer, scheduler, 10, 5)
    reference_optimizer = optimizer_of()
    name = "constant_with_warmup" if kind == "constant" else kind
    reference = get_scheduler(name, reference_optimizer, num_warmup_steps=3, num_training_steps=10)
    expected = []
    for _ in range(10):  # the reference steps after every update
        expected.append(reference_optimizer.param_groups[0]["lr"])
        reference_optimizer.step()
        reference.step()
    assert got == pytest.approx(expected, abs=1e-12)
    assert got[0] == 0 and got[3] == pytest.approx(0.1)  # the warm-up, then the peak
    if kind != "constant":
        assert got[-1] < got[4]


def test_the_paper_constant_learning_rate_needs_no_scheduler():
    assert build_scheduler(options("constant", warmup=0), optimizer_of(), 5) is None


def test_a_restored_schedule_goes_on_where_it_stopped():
    optimizer = optimizer_of()
    scheduler = build_scheduler(options("cosine"), optimizer, updates_per_epoch=5)
    straight = learning_rates(optimizer, scheduler, 10, 5)

    first = optimizer_of()
    first_scheduler = build_scheduler(options("cosine"), first, updates_per_epoch=5)
    learning_rates(first, first_scheduler, 4, 5)
    state = first.state_dict(), first_scheduler.state_dict()  # what a checkpoint keeps
    resumed = optimizer_of()
    resumed_scheduler = build_scheduler(options("cosine"), resumed, updates_per_epoch=5)
    resumed.load_state_dict(state[0])
    resumed_scheduler.load_state_dict(state[1])  # EGG's Trainer.load: the optimizer, then the scheduler
    assert learning_rates(resumed, resumed_scheduler, 6, 5) == pytest.approx(straight[4:], abs=1e-12)


def test_the_schedule_and_the_clipping_reach_the_trainer(tiny_run_args, monkeypatch):
    seen = {}
    build_trainer = train.build_trainer

    def recorded(opts, game, optimizer, *rest):
        trainer = build_trainer(opts, game, optimizer, *rest)
        seen.update(grad_norm=trainer.grad_norm, scheduler=trainer.optimizer_scheduler, rates=[])
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen["rates"].append(opt.param_groups[0]["lr"]))
        return trainer

    monkeypatch.setattr(train, "build_trainer", recorded)
    train.main(tiny_run_args + ["--lr_scheduler", "linear", "--warmup_steps", "2", "--max_grad_norm", "0.5",
                                "--lr", "0.001", "--validation_freq", "0"])  # fmt: skip
    assert seen["grad_norm"] == 0.5 and seen["scheduler"] is not None
    rates = seen["rates"]  # 12 updates: warm-up over 2, then linear decay to 0 at the 12th's end
    assert len(rates) == 12 and rates[:3] == pytest.approx([0.0, 0.0005, 0.001])
    assert rates[-1] == pytest.approx(0.001 * 1 / 10)
