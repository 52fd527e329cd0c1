"""The evaluation plots read at a glance: curves labelled by split, integer epochs, plain reward ticks, and the
chance level on the P@1 bars."""

import json

import pytest

from egg.zoo.discriminative_captioner.evaluation.plots import log_series, p_at_1_plot, training_curves

# The JSON lines of a real run (train --synthetic_world tiny --n_epochs 3): validation before training and after
# each epoch ("mode": "test", "split": "validation"), one training line per epoch, the final test line last.
LOG = """building the synthetic world (tiny) in /tmp/plotcache/synthetic-tiny-8761ddccbb
data synthetic train: 600 images used of 600 listed (0 missing, 0 unreadable)
{"acc": 0.0099, "reward": -4.605270, "mode": "test", "split": "validation", "epoch": 0}
{"acc": 0.0199, "reward": -3.912143, "mode": "train", "epoch": 1}
{"acc": 0.0099, "reward": -4.605270, "mode": "test", "split": "validation", "epoch": 1}
{"acc": 0.0183, "reward": -3.912286, "mode": "train", "epoch": 2}
{"acc": 0.0099, "reward": -4.605270, "mode": "test", "split": "validation", "epoch": 2}
{"acc": 0.0216, "reward": -3.911959, "mode": "train", "epoch": 3}
{"acc": 0.0099, "reward": -4.605270, "mode": "test", "split": "validation", "epoch": 3}
{"acc": 0.0099, "reward": -4.605269, "mode": "final", "split": "test", "epoch": 3}
"""


def draw(fig):
    fig.canvas.draw()  # tick labels and offset texts are decided when the figure is drawn
    return fig.axes


def curve(ax, label):
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    return list(line.get_xdata()), list(line.get_ydata())


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "tiny_train.log"
    path.write_text(LOG)
    return path


def test_training_curves_are_labelled_by_split_with_the_final_test_apart(log, tmp_path):
    reward_ax, acc_ax = draw(training_curves(str(log), str(tmp_path / "training.png")))
    assert (tmp_path / "training.png").read_bytes()[:4] == b"\x89PNG"
    for ax in (reward_ax, acc_ax):
        labels = [text.get_text() for text in ax.get_legend().get_texts()]
        assert labels == ["train (in-batch distractors)", "validation", "final test"]
    assert curve(reward_ax, "validation") == ([0, 1, 2, 3], [-4.60527] * 4)
    assert curve(reward_ax, "final test") == ([3], [-4.605269])
    assert curve(acc_ax, "train (in-batch distractors)")[0] == [1, 2, 3]
    assert curve(acc_ax, "validation")[1] == pytest.approx([0.99] * 4)


def test_training_curves_have_integer_epoch_ticks_and_no_offset_on_the_reward_axis(log, tmp_path):
    reward_ax, acc_ax = draw(training_curves(str(log), str(tmp_path / "training.png")))
    for ax in (reward_ax, acc_ax):
        low, high = ax.get_xlim()
        shown = [text.get_text() for text, x in zip(ax.get_xticklabels(), ax.get_xticks()) if low <= x <= high]
        assert shown == ["0", "1", "2", "3"]
    # rewards that differ in the fifth decimal, which matplotlib would show as "-3.912 + 1e-5 x"
    close = tmp_path / "close.log"
    close.write_text("".join(json.dumps({"acc": 0.02 + 1e-5 * epoch, "reward": -3.9121 - 1e-5 * epoch, "mode": "train",
                                         "epoch": epoch}) + "\n" for epoch in range(1, 13)))  # fmt: skip
    reward_ax, acc_ax = draw(training_curves(str(close), str(tmp_path / "close.png")))
    for ax in (reward_ax, acc_ax):
        assert ax.yaxis.get_offset_text().get_text() == ""
        assert all(text.get_text().startswith(("−3.912", "-3.912", "2.0")) for text in ax.get_yticklabels())


def test_an_egg_log_without_splits_calls_its_test_lines_validation():
    assert log_series({"mode": "test", "epoch": 1}) == "validation"
    assert log_series({"mode": "test", "split": "validation", "epoch": 1}) == "validation"
    assert log_series({"mode": "final", "split": "test", "epoch": 3}) == "test"
    assert log_series({"mode": "train", "epoch": 1}) == "train"


@pytest.mark.parametrize("candidates, label", [(100, "chance (1%)"), (10, "chance (10%)")])
def test_p_at_1_plot_draws_the_chance_line_behind_the_bar_values(candidates, label, tmp_path):
    scores = {"pretrained": 0.004, "discritune": 0.5}
    records = [{"model": model, "dataset": dataset, "p_at_1": p, "p_at_1_references": 0.3, "candidates": candidates}
               for dataset in ("coco", "flickr") for model, p in scores.items()]  # fmt: skip
    (ax,) = draw(p_at_1_plot(records, str(tmp_path / "p_at_1.png")))
    assert (tmp_path / "p_at_1.png").read_bytes()[:4] == b"\x89PNG"
    (chance,) = [line for line in ax.get_lines() if line.get_label() == label]
    assert list(chance.get_ydata()) == [100 / candidates] * 2 and chance.get_linestyle() == "--"
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["pretrained", "discritune", "human captions", label]
    values = [text for text in ax.texts if text.get_text() in ("0.4", "50.0", "30.0")]
    assert len(values) == 6  # each bar's value, drawn over the line on an opaque box
    for text in values:
        assert text.get_zorder() > chance.get_zorder() and text.get_bbox_patch().get_facecolor()[:3] == (1, 1, 1)


def test_a_data_set_without_references_has_no_human_bar(tmp_path):
    records = [
        {"model": "m", "dataset": "imagecode", "p_at_1": 0.2, "p_at_1_references": None, "candidates": 100},
        {"model": "m", "dataset": "coco", "p_at_1": 0.3, "p_at_1_references": 0.5, "candidates": 100},
    ]
    fig = p_at_1_plot(records, str(tmp_path / "p.png"))
    labels = [text.get_text() for text in fig.axes[0].texts]
    assert labels == ["20.0", "30.0", "", "50.0"] and (tmp_path / "p.png").stat().st_size > 0
