"""The reuse example of docs/egg.md: DiscriTune's agents in another EGG experiment, trained on the user's own data.

``python -m tests.reuse_example`` runs it on random data with tiny models, on whichever core is active (the test
suite runs it on the bundled core, and on facebookresearch EGG when ``EGG_SOURCE`` is set), with upstream
callbacks where that core has them; it prints one JSON line per callback event.
"""

import json

import torch

from egg.zoo.discriminative_captioner.archs import CaptionerSender, DiscriminativeGame, RetrieverReceiver
from egg.zoo.discriminative_captioner.callbacks import InitialValidation
from egg.zoo.discriminative_captioner.core import USING_EGG, core
from egg.zoo.discriminative_captioner.losses import DiscriminationLoss


def user_batches(sender_inputs, receiver_inputs, batch_size):
    """EGG batches ``(sender_input, labels, receiver_input, aux_input)`` with in-batch distractors.

    sender_inputs   [N, ...]  what the captioner reads (ClipCap: CLIP image features [N, prefix_size])
    receiver_inputs [N, D]    the candidates' normalised retriever image embeddings (or pixels [N, 3, H, W])
    labels          [B]       int64, the target's index among the batch's candidates: arange(B)
    """
    batches = []
    for start in range(0, len(sender_inputs) - batch_size + 1, batch_size):
        rows = slice(start, start + batch_size)
        labels = torch.arange(batch_size)
        batches.append((sender_inputs[rows], labels, receiver_inputs[rows], {"image_index": labels + start}))
    return batches


def build_game(captioner, retriever):
    """Sender (captioner), Receiver (frozen retriever), reward loss and the REINFORCE game, from Python."""
    return DiscriminativeGame(
        sender=CaptionerSender(captioner, greedy_rollouts=False, num_beams=2),
        receiver=RetrieverReceiver(retriever),
        loss=DiscriminationLoss(reward="logprob", temperature=retriever.temperature),
    )


class Recorder(core.Callback):
    """Prints every callback event it receives as a JSON line."""

    def __init__(self):
        self.events = []

    def record(self, *event):
        self.events.append(list(event))
        print(json.dumps(list(event)), flush=True)

    def on_train_begin(self, trainer_instance):
        super().on_train_begin(trainer_instance)
        self.record("train_begin")

    def on_validation_begin(self, epoch):
        self.record("validation_begin", epoch)

    def on_validation_end(self, loss, logs, epoch):
        self.record("validation_end", epoch, sorted(logs.aux))

    def on_epoch_begin(self, epoch):
        self.record("epoch_begin", epoch)

    def on_epoch_end(self, loss, logs, epoch):
        self.record("epoch_end", epoch)

    def on_early_stopping(self, train_loss, train_logs, epoch, test_loss=None, test_logs=None):
        self.record("early_stopping", epoch)

    def on_train_end(self):
        self.record("train_end")


class ScalarWriter:
    """A stand-in for TensorBoard's SummaryWriter (tensorboard is not a dependency): keeps the scalars."""

    def __init__(self):
        self.tags = []

    def add_scalar(self, tag, scalar_value, global_step):
        self.tags.append((tag, float(scalar_value), global_step))

    def close(self):
        print(json.dumps(["tensorboard", sorted({tag for tag, _, _ in self.tags})]), flush=True)


def main(interactions_dir, n_epochs=3):
    """Trains the tiny game on random data with a recorder and EGG's upstream callbacks; returns the recorder."""
    from egg.zoo.discriminative_captioner.captioners.clipcap import ClipCapCaptioner, ClipCapConfig, ClipCapModel
    from egg.zoo.discriminative_captioner.retrievers.clip import ClipRetriever
    from egg.zoo.discriminative_captioner.runtime.clip_loading import clip_transform
    from egg.zoo.discriminative_captioner.synthetic.pretrain import word_tokenizer

    from .tiny_models import tiny_clip, tiny_gpt2

    core.init(params=["--no_cuda", "--random_seed", "0", "--lr", "1e-4"])  # core.init comes first
    tokenizer = word_tokenizer()
    model = ClipCapModel(ClipCapConfig(prefix_length=3, prefix_size=32), tiny_gpt2(len(tokenizer)))
    captioner = ClipCapCaptioner(model, tokenizer, image_encoder=None, max_len=6)
    retriever = ClipRetriever(tiny_clip(), clip_transform(32))
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(16, 32, generator=generator)  # the user's own data
    embeddings = retriever.encode_images(torch.rand(16, 3, 32, 32, generator=generator))  # [16, 32], normalised
    data = user_batches(features, embeddings, batch_size=8)

    game = build_game(captioner, retriever)
    optimizer = core.build_optimizer(captioner.trainable_parameters())
    recorder = Recorder()
    callbacks = [InitialValidation(), recorder, core.EarlyStopperAccuracy(threshold=0.0),
                 core.InteractionSaver(train_epochs=[1], test_epochs=[1], checkpoint_dir=interactions_dir)]  # fmt: skip
    if USING_EGG:
        callbacks.append(core.TensorboardLogger(writer=ScalarWriter()))
    trainer = core.Trainer(game=game, optimizer=optimizer, train_data=data, validation_data=data, callbacks=callbacks)
    trainer.train(n_epochs=n_epochs)
    return recorder


if __name__ == "__main__":
    import sys

    main(sys.argv[1])
