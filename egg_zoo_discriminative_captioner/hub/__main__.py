"""Pushes a finished run's captioner to the Hub: ``python -m egg.zoo.discriminative_captioner.hub RUN_DIR REPO_ID``.

Uploads what makes the run's finetuned captioner loadable (a transformers captioner's folder, or ClipCap's
``clipcap.pt``), its ``opts.json`` and its model card, in one commit that replaces the repository's other files;
never the checkpoints.  The repository is created if need be (``--private``: private).  Log in first (``hf auth
login``, or ``HF_TOKEN``).  ``evaluate --models hf:REPO_ID`` and ``caption --model hf:REPO_ID`` read it back.
"""

from ..options.parse import OneLineErrors
from ..runtime.downloads import check_repo_id
from ..runtime.errors import run_command

PROG = "python -m egg.zoo.discriminative_captioner.hub"


def build_parser():
    parser = OneLineErrors(prog=PROG, description=__doc__.replace("``", ""))  # reST quotes, not for a terminal
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's --checkpoint_dir (with its final.json)")
    parser.add_argument("repo_id", metavar="REPO_ID", help="the Hub model repository, NAMESPACE/NAME")
    parser.add_argument("--private", action="store_true", help="make the repository private (default: the Hub's)")
    parser.add_argument("--commit_message", default=None, help="the commit's message (default: names the captioner "
                        "and its data set)")  # fmt: skip
    return parser


def main(params):
    """Pushes the run; returns the repository's URL."""
    args = build_parser().parse_args(params)
    check_repo_id(args.repo_id, "REPO_ID")  # before huggingface_hub is imported
    from .push import push_run

    return push_run(args.run_dir, args.repo_id, private=args.private, commit_message=args.commit_message,
                    where=f"RUN_DIR {args.run_dir}")  # fmt: skip


if __name__ == "__main__":
    run_command(main)
