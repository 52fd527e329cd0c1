"""Behaviour of the bundled EGG-compatible core (used when facebookresearch EGG is absent)."""

import json
import os

import pytest
import torch
import torch.distributed as dist
from torch import nn

from egg.zoo.discriminative_captioner import egg_compat
from egg.zoo.discriminative_captioner.egg_compat import distributed as compat_distributed
from egg.zoo.discriminative_captioner.egg_compat.baselines import BuiltInBaseline, MeanBaseline, NoBaseline
from egg.zoo.discriminative_captioner.egg_compat.callbacks import Checkpoint

Interaction = egg_compat.Interaction
LoggingStrategy = egg_compat.LoggingStrategy


def init(*params):
    """``egg_compat.init`` on CPU with a fixed seed; never reads sys.argv."""
    return egg_compat.init(params=["--no_cuda", "--random_seed", "7", *params])


class RegressionGame(nn.Module):
    """A one-layer game: squared error of a linear map, with a per-sample ``acc`` in aux."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, sender_input, labels, receiver_input=None, aux_input=None):
        prediction = self.linear(sender_input).squeeze(-1)  # [B]
        loss = (prediction - labels) ** 2  # [B]
        aux = {"acc": (loss < 0.5).float()}
        interaction = LoggingStrategy().filtered_interaction(
            sender_input, receiver_input, labels, aux_input, prediction.detach(), None, None, aux
        )
        return loss.mean(), interaction


class LinearCostGame(nn.Module):
    """loss = w * c for the batch's constant c, so each batch's gradient on w is exactly c."""

    def __init__(self, weight=0.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(weight))

    def forward(self, sender_input, labels=None, receiver_input=None, aux_input=None):
        loss = self.w * sender_input.mean()
        return loss, Interaction(sender_input, None, None, None, None, None, None, {})


def regression_data(n_batches=3, batch_size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch_size, 2, generator=generator), torch.randn(batch_size, generator=generator))
        for _ in range(n_batches)
    ]


class EventRecorder(egg_compat.Callback):
    """Records every hook call as a tuple."""

    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer_instance):
        super().on_train_begin(trainer_instance)
        self.events.append(("train_begin",))

    def on_train_end(self):
        self.events.append(("train_end",))

    def on_early_stopping(self, train_loss, train_logs, epoch, test_loss=None, test_logs=None):
        self.events.append(("early_stopping", epoch))

    def on_validation_begin(self, epoch):
        self.events.append(("validation_begin", epoch))

    def on_validation_end(self, loss, logs, epoch):
        self.events.append(("validation_end", epoch, loss))

    def on_epoch_begin(self, epoch):
        self.events.append(("epoch_begin", epoch))

    def on_epoch_end(self, loss, logs, epoch):
        self.events.append(("epoch_end", epoch, loss))

    def on_batch_end(self, logs, loss, batch_id, is_training=True):
        self.events.append(("batch_end", batch_id, is_training, loss))


def make_trainer(game=None, callbacks=None, **kwargs):
    game = game if game is not None else RegressionGame()
    optimizer = egg_compat.build_optimizer(game.parameters())
    return egg_compat.Trainer(
        game=game, optimizer=optimizer, train_data=regression_data(), callbacks=callbacks, **kwargs
    )


# --- init -----------------------------------------------------------------------------------------------


def test_init_defaults_and_derived_attributes():
    opts = egg_compat.init(params=["--no_cuda"])
    expected = {
        "checkpoint_dir": None,
        "preemptable": False,
        "checkpoint_freq": 0,
        "validation_freq": 1,
        "n_epochs": 10,
        "load_from_checkpoint": None,
        "batch_size": 32,
        "optimizer": "adam",
        "lr": 1e-2,
        "update_freq": 1,
        "vocab_size": 10,
        "max_len": 1,
        "tensorboard": False,
        "tensorboard_dir": "runs/",
        "distributed_port": 18363,
        "fp16": False,
    }
    assert {key: getattr(opts, key) for key in expected} == expected
    assert isinstance(opts.random_seed, int)  # drawn when not given
    assert (opts.cuda, opts.no_cuda, opts.device) == (False, True, torch.device("cpu"))
    context = opts.distributed_context
    assert (context.is_distributed, context.rank, context.world_size, context.mode) == (False, 0, 1, "none")
    assert context.is_leader
    assert egg_compat.get_opts() is opts


def test_init_seeds_and_selects_optimizer():
    init("--optimizer", "sgd", "--lr", "0.5")
    first = torch.rand(3)
    optimizer = egg_compat.build_optimizer([nn.Parameter(torch.zeros(1))])
    init("--optimizer", "sgd", "--lr", "0.5")
    assert torch.equal(torch.rand(3), first)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["lr"] == 0.5


def test_init_rejects_tensorboard_which_needs_egg(capsys):
    with pytest.raises(SystemExit) as exit_info:
        init("--tensorboard")
    assert exit_info.value.code == 2
    assert "needs facebookresearch EGG" in capsys.readouterr().err


def test_preemptable_resumes_from_the_newest_checkpoint_of_the_slurm_job(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_PROCID", "0")
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    init("--checkpoint_dir", str(tmp_path), "--checkpoint_freq", "1", "--preemptable")
    first = make_trainer()
    assert first.checkpoint_path == tmp_path / "42_0" and first.start_epoch == 0  # upstream's directory
    first.train(n_epochs=2)
    requeued = make_trainer(game=RegressionGame())
    assert requeued.start_epoch == 2
    assert torch.equal(requeued.game.linear.weight, first.game.linear.weight)


def test_a_checkpoint_written_by_facebookresearch_egg_loads_on_the_bundled_core(tmp_path, monkeypatch):
    import sys
    import types
    from typing import NamedTuple, Optional

    import egg.zoo.discriminative_captioner.core  # noqa: F401  (registers the classes, as the plugin does)

    class UpstreamCheckpoint(NamedTuple):  # egg.core.callbacks.Checkpoint's fields
        epoch: int
        model_state_dict: dict
        optimizer_state_dict: dict
        optimizer_scheduler_state_dict: Optional[dict]

    module = types.ModuleType("egg.core.callbacks")
    UpstreamCheckpoint.__module__, UpstreamCheckpoint.__qualname__ = "egg.core.callbacks", "Checkpoint"
    module.Checkpoint = UpstreamCheckpoint
    monkeypatch.setitem(sys.modules, "egg.core.callbacks", module)
    torch.save(UpstreamCheckpoint(3, {"w": torch.ones(2)}, {}, None), tmp_path / "egg.tar")
    monkeypatch.delitem(sys.modules, "egg.core.callbacks")
    if getattr(egg.zoo.discriminative_captioner.core, "USING_EGG", False):
        pytest.skip("facebookresearch EGG is installed: its own class loads it")
    loaded = torch.load(tmp_path / "egg.tar", weights_only=True)
    assert isinstance(loaded, Checkpoint) and loaded.epoch == 3
    assert torch.equal(loaded.model_state_dict["w"], torch.ones(2))


def set_environment(monkeypatch, **values):
    for key, value in values.items():
        monkeypatch.setenv(key, str(value))


def test_init_under_torchrun_joins_a_gloo_process_group_on_the_cpu(monkeypatch, free_port):
    set_environment(monkeypatch, MASTER_ADDR="127.0.0.1", MASTER_PORT=free_port, WORLD_SIZE=1, RANK=0, LOCAL_RANK=0)
    try:
        opts = init()
        context = opts.distributed_context
        assert (context.is_distributed, context.rank, context.world_size, context.mode) == (True, 0, 1, "launch")
        assert dist.get_backend() == "gloo" and dist.get_world_size() == 1
        assert opts.random_seed == 7  # rank 0 keeps the given seed; rank r would get 7 + r, as upstream
    finally:
        dist.destroy_process_group()


def test_init_under_slurm_meets_at_the_first_node_on_distributed_port(monkeypatch):
    set_environment(monkeypatch, SLURM_LOCALID=1, SLURM_PROCID=3, SLURM_NTASKS=4, SLURM_NODEID=1,
                    SLURM_JOB_NODELIST="node[1-2]")  # fmt: skip
    for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.setenv(key, "")  # recorded, so the values init() writes are removed after the test
        monkeypatch.delenv(key)
    calls = []
    monkeypatch.setattr(compat_distributed, "_slurm_leader_address", lambda: "node1")
    monkeypatch.setattr(compat_distributed.dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(compat_distributed.dist, "is_initialized", lambda: False)
    opts = init("--distributed_port", "1234")
    context = opts.distributed_context
    assert (context.is_distributed, context.rank, context.local_rank, context.world_size) == (True, 3, 1, 4)
    assert context.mode == "slurm" and not context.is_leader
    assert calls == [dict(backend="gloo", init_method="env://", world_size=4, rank=3)]
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"], os.environ["RANK"]) == ("node1", "1234", "3")
    assert opts.random_seed == 7 + 3


def test_a_one_task_slurm_job_stays_single_process(monkeypatch):
    set_environment(monkeypatch, SLURM_LOCALID=0, SLURM_PROCID=0, SLURM_NTASKS=1, SLURM_NODEID=0,
                    SLURM_JOB_NODELIST="node1")  # fmt: skip
    assert not init().distributed_context.is_distributed


def test_init_rejects_bad_update_freq_and_optimizer():
    with pytest.raises(RuntimeError, match="update_freq"):
        init("--update_freq", "0")
    with pytest.raises(NotImplementedError, match="rmsprop"):
        init("--optimizer", "rmsprop")


def test_move_to_and_batch():
    aux = {"ids": torch.zeros(2), "names": ("a", "b")}
    moved = egg_compat.move_to((torch.ones(1), aux, "text"), torch.device("cpu"))
    assert isinstance(moved, list) and moved[2] == "text"
    assert moved[1] is aux and aux["names"] == ["a", "b"]  # dicts in place, tuples become lists

    batch = egg_compat.Batch(torch.ones(1), torch.zeros(1))
    sender_input, labels, receiver_input, aux_input = batch.to(torch.device("cpu"))
    assert batch[0] is sender_input and batch[1] is labels and receiver_input is None and aux_input is None
    with pytest.raises(IndexError):
        batch[4]


# --- Interaction and LoggingStrategy ---------------------------------------------------------------------


def test_from_iterable_concatenates_fields_and_aux():
    aux = {"acc": torch.ones(2), "baseline": torch.zeros(1)}  # per-sample and per-batch values
    parts = [
        Interaction(torch.full((2, 3), float(i)), None, torch.arange(2), {"id": torch.arange(2)}, None, None, None, aux)
        for i in range(3)
    ]
    merged = Interaction.from_iterable(parts)
    assert merged.size == 6
    assert merged.sender_input.shape == (6, 3)
    assert merged.receiver_input is None and merged.message is None
    assert merged.aux["acc"].shape == (6,) and merged.aux["baseline"].shape == (3,)
    assert merged.aux_input["id"].tolist() == [0, 1, 0, 1, 0, 1]


def test_from_iterable_errors():
    a = Interaction(torch.ones(1), None, None, {}, torch.ones(1), None, None, {})
    b = Interaction(torch.ones(1), torch.ones(1), None, {}, torch.ones(1), None, None, {})
    with pytest.raises(RuntimeError, match="Appending empty and non-empty interactions logs"):
        Interaction.from_iterable([a, b])

    with_acc = Interaction(torch.ones(1), None, None, {}, None, None, None, {"acc": torch.ones(1)})
    with pytest.raises(AssertionError):
        Interaction.from_iterable([a, with_acc])

    with_id = Interaction(torch.ones(1), None, None, {"id": torch.ones(1)}, None, None, None, {})
    with pytest.raises(AssertionError, match="different aux_info size"):
        Interaction.from_iterable([a, with_id])


def test_from_iterable_skips_empty_interactions():
    a = Interaction(torch.ones(2), None, None, {}, None, None, None, {})
    assert Interaction.from_iterable([Interaction.empty(), a, Interaction.empty()]).size == 2
    with pytest.raises(RuntimeError, match="empty"):
        _ = Interaction.empty().size


def test_interaction_add_merges_different_aux_keys():
    i0 = Interaction(torch.zeros(1), None, None, {"a": torch.zeros(1), "b": torch.zeros(1)}, None, None, None, {})
    i1 = Interaction(torch.ones(1), None, None, {"b": torch.ones(1), "c": torch.ones(1)}, None, None, None, {})
    total = i0 + i1
    assert total.sender_input.tolist() == [0.0, 1.0]
    assert total.aux_input["b"].tolist() == [0.0, 1.0] and total.aux_input["c"].tolist() == [1.0]


def test_logging_strategy_minimal_keeps_only_aux():
    strategy = LoggingStrategy.minimal()
    assert strategy == LoggingStrategy(False, False, False, False, False, False, False)
    assert LoggingStrategy.maximal() == LoggingStrategy()
    aux = {"acc": torch.ones(2)}
    kept = strategy.filtered_interaction(
        torch.ones(2),
        torch.ones(2),
        torch.ones(2),
        {"id": torch.ones(2)},
        torch.ones(2),
        torch.ones(2),
        torch.ones(2),
        aux,
    )
    assert kept == Interaction(None, None, None, None, None, None, None, aux)


# --- baselines -------------------------------------------------------------------------------------------


def test_mean_baseline_is_running_mean_of_batch_means():
    baseline = MeanBaseline()
    prediction = baseline.predict(torch.ones(4))
    assert prediction.shape == (1,) and prediction.item() == 0.0

    baseline.update(torch.tensor([1.0, 1.0, 1.0, 1.0]))  # batch mean 1
    logged = baseline.predict(torch.ones(1))
    baseline.update(torch.tensor([2.0, 4.0]))  # batch mean 3, half the batch size: weighs the same
    assert baseline.predict(torch.ones(1)).item() == pytest.approx(2.0)
    assert logged.item() == 1.0  # an earlier prediction is not changed by later updates


def test_no_and_builtin_baselines():
    assert NoBaseline().predict(torch.ones(3)).tolist() == [0.0]
    loss = torch.tensor([1.0, 2.0, 6.0])
    assert BuiltInBaseline().predict(loss).tolist() == pytest.approx([4.0, 3.5, 1.5])


# --- callbacks and Trainer -------------------------------------------------------------------------------


def test_console_logger_json_lines(capsys):
    init("--validation_freq", "1")
    trainer = make_trainer(
        callbacks=[egg_compat.ConsoleLogger(print_train_loss=True, as_json=True)],
        validation_data=regression_data(seed=1),
    )
    trainer.train(n_epochs=2)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["mode"], line["epoch"]) for line in lines] == [("train", 1), ("test", 1), ("train", 2), ("test", 2)]
    assert all(list(line) == ["loss", "acc", "mode", "epoch"] for line in lines)
    assert all(isinstance(line["loss"], float) and 0.0 <= line["acc"] <= 1.0 for line in lines)


def test_console_logger_text_line(capsys):
    logs = Interaction(torch.ones(2), None, None, None, None, None, None, {"acc": torch.tensor([0.0, 1.0])})
    egg_compat.ConsoleLogger().on_validation_end(0.25, logs, 3)
    assert capsys.readouterr().out == "test: epoch 3, loss 0.25, acc=0.5, loss=0.25\n"
    egg_compat.ConsoleLogger(print_train_loss=False).on_epoch_end(0.25, logs, 3)
    assert capsys.readouterr().out == ""


def test_callback_order_and_arguments():
    init("--validation_freq", "2")
    recorder = EventRecorder()
    trainer = make_trainer(callbacks=[recorder], validation_data=regression_data(n_batches=1, seed=1))
    trainer.train(n_epochs=2)

    # Drop the loss values; keep hook name, epoch / batch id and is_training.
    names = [tuple(x for x in event if not isinstance(x, (float, torch.Tensor))) for event in recorder.events]
    train_batches = [("batch_end", i, True) for i in range(3)]
    assert names == [
        ("train_begin",),
        ("epoch_begin", 1),
        *train_batches,
        ("epoch_end", 1),
        ("epoch_begin", 2),
        *train_batches,
        ("epoch_end", 2),
        ("validation_begin", 2),
        ("batch_end", 0, False),
        ("validation_end", 2),
        ("train_end",),
    ]
    assert recorder.trainer is trainer
    batch_losses = [event[3] for event in recorder.events if event[0] == "batch_end"]
    assert all(torch.is_tensor(loss) for loss in batch_losses)
    assert batch_losses[0].requires_grad and not batch_losses[-1].requires_grad  # train vs validation
    epoch_losses = [event[2] for event in recorder.events if event[0] in ("epoch_end", "validation_end")]
    assert len(epoch_losses) == 3 and all(isinstance(loss, float) for loss in epoch_losses)


def test_should_stop_triggers_early_stopping():
    class StopAfterFirstEpoch(EventRecorder):
        def on_epoch_end(self, loss, logs, epoch):
            super().on_epoch_end(loss, logs, epoch)
            self.trainer.should_stop = True

    init()
    recorder = StopAfterFirstEpoch()
    make_trainer(callbacks=[recorder]).train(n_epochs=5)
    assert [event[:2] for event in recorder.events if event[0] != "batch_end"] == [
        ("train_begin",),
        ("epoch_begin", 1),
        ("epoch_end", 1),
        ("early_stopping", 1),
        ("train_end",),
    ]


def test_no_callbacks_by_default(capsys):
    init()
    trainer = make_trainer(validation_data=regression_data(seed=1))
    trainer.train(n_epochs=1)
    assert trainer.callbacks == [] and capsys.readouterr().out == ""
    assert trainer.checkpoint_path is None


def test_checkpoint_files_every_epoch_and_final(tmp_path):
    init("--checkpoint_dir", str(tmp_path), "--checkpoint_freq", "1")
    trainer = make_trainer()
    assert isinstance(trainer.callbacks[-1], egg_compat.CheckpointSaver)
    assert trainer.checkpoint_path == tmp_path
    trainer.train(n_epochs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.tar", "2.tar", "final.tar"]

    torch.serialization.add_safe_globals([Checkpoint])  # as core.py does
    final = torch.load(tmp_path / "final.tar", weights_only=True)
    assert isinstance(final, Checkpoint)
    assert final.epoch == 2 and final.optimizer_scheduler_state_dict is None
    assert torch.equal(final.model_state_dict["linear.weight"], trainer.game.linear.weight)


def test_default_checkpoint_freq_saves_only_final(tmp_path):
    init("--checkpoint_dir", str(tmp_path))
    make_trainer().train(n_epochs=2)
    assert [p.name for p in tmp_path.iterdir()] == ["final.tar"]


def test_max_checkpoints_prunes_oldest_and_prefix(tmp_path):
    init("--checkpoint_dir", str(tmp_path / "unused"))
    saver = egg_compat.CheckpointSaver(tmp_path / "kept", checkpoint_freq=1, max_checkpoints=2)
    trainer = make_trainer(callbacks=[saver])
    trainer.train(n_epochs=6)
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["5.tar", "6.tar", "final.tar"]
    assert not hasattr(trainer, "checkpoint_path") and not (tmp_path / "unused").exists()

    init()
    make_trainer(callbacks=[egg_compat.CheckpointSaver(tmp_path / "named", checkpoint_freq=2, prefix="run")]).train(3)
    assert sorted(p.name for p in (tmp_path / "named").iterdir()) == ["run_2.tar", "run_final.tar"]


def test_resume_restores_epoch_parameters_and_optimizer(tmp_path):
    init("--checkpoint_dir", str(tmp_path), "--checkpoint_freq", "1")
    original = make_trainer()
    original.train(n_epochs=2)
    saved_state = {k: v.clone() for k, v in original.game.state_dict().items()}
    saved_optimizer = original.optimizer.state_dict()

    init("--load_from_checkpoint", str(tmp_path / "2.tar"))
    recorder = EventRecorder()
    resumed = make_trainer(game=RegressionGame(), callbacks=[recorder])
    assert resumed.start_epoch == 2
    for key, value in resumed.game.state_dict().items():
        assert torch.equal(value, saved_state[key])
    resumed_optimizer = resumed.optimizer.state_dict()
    assert resumed_optimizer["state"][0]["step"] == saved_optimizer["state"][0]["step"]
    assert torch.equal(resumed_optimizer["state"][0]["exp_avg"], saved_optimizer["state"][0]["exp_avg"])

    resumed.train(n_epochs=3)
    assert [event[1] for event in recorder.events if event[0] == "epoch_begin"] == [3]
    # Loading must leave Checkpoint allowed for later weights_only loads (torch's safe_globals() would not).
    assert torch.load(tmp_path / "final.tar", weights_only=True).epoch == 2


def test_resume_from_missing_file_is_a_clear_error(tmp_path):
    init("--load_from_checkpoint", str(tmp_path / "missing.tar"))
    with pytest.raises(FileNotFoundError, match="missing.tar"):
        make_trainer()


def test_update_freq_accumulates_mean_gradients():
    init("--optimizer", "sgd", "--lr", "1", "--update_freq", "2")
    game = LinearCostGame()
    costs = [1.0, 3.0, 5.0, 7.0]
    optimizer = egg_compat.build_optimizer(game.parameters())
    trainer = egg_compat.Trainer(game, optimizer, train_data=[(torch.full((2,), c),) for c in costs])
    epoch_loss, logs = trainer.train_epoch()
    # Two steps, each by the mean gradient of its two batches: -(1+3)/2 - (5+7)/2.
    assert game.w.item() == pytest.approx(-8.0)
    # The epoch loss averages the losses as backpropagated, i.e. divided by update_freq (upstream behaviour).
    assert epoch_loss == pytest.approx((0 * 1 + 0 * 3 - 2 * 5 - 2 * 7) / 2 / 4)
    assert logs.size == 8


def test_grad_norm_clips_and_scheduler_steps_once_per_epoch():
    init("--optimizer", "sgd", "--lr", "1")
    game = LinearCostGame()
    optimizer = egg_compat.build_optimizer(game.parameters())
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    data = [(torch.full((1,), 100.0),)] * 2
    trainer = egg_compat.Trainer(game, optimizer, train_data=data, optimizer_scheduler=scheduler, grad_norm=1.0)
    trainer.train(n_epochs=2)
    # Clipped to unit gradients: epoch 1 takes two steps at lr 1, epoch 2 two steps at lr 0.5.
    assert game.w.item() == pytest.approx(-3.0)
    assert scheduler.get_last_lr() == [0.25]
