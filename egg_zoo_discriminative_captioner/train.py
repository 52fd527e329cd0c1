"""DiscriTune finetuning: ``python -m egg.zoo.discriminative_captioner.train [--dataset synthetic] [options]``.

Options -> checks of paths and checkpoints -> data set and models -> encoded splits -> game -> optimizer ->
callbacks -> EGG Trainer (``finetuning.py``).  Validation runs before the first update (logged as epoch 0) and
after every epoch, with beam-search captions and P@1 among ``--eval_candidates`` images; the finetuned captioner
is evaluated on the test split at the end.  A run resumes exactly from any of its checkpoints, including the
mid-epoch ones of ``--checkpoint_every`` and the one written on SIGTERM / SIGINT.
"""

from .errors import run_command
from .opts import get_opts

PROG = "python -m egg.zoo.discriminative_captioner.train"


def main(params):
    """Finetunes a captioner with DiscriTune; returns the test-split metrics of the finetuned captioner."""
    opts = get_opts(params, prog=PROG, description=__doc__.splitlines()[0])  # --help and bad options end here
    from .finetuning import finetune  # torch and the models: imported once the options are known to be good

    return finetune(opts, params)


if __name__ == "__main__":
    run_command(main)
