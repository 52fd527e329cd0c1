"""Upstream EGG's common options (``egg.core.init``), importable without torch (``--help`` needs no torch)."""

import argparse

NEEDS_EGG = "needs facebookresearch EGG (pip install from its git repository)"


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Add upstream EGG's common options, with its exact names, types and defaults."""
    parser.add_argument("--random_seed", type=int, default=None, help="Random seed (default: drawn at random)")
    parser.add_argument("--checkpoint_dir", type=str, default=None, help="Where checkpoints are stored")
    parser.add_argument(
        "--preemptable",
        default=False,
        action="store_true",
        help="Resume from the newest checkpoint of <checkpoint_dir>/<SLURM job>_<task> (with the automatic saver)",
    )
    parser.add_argument(
        "--checkpoint_freq", type=int, default=0, help="Save a checkpoint every k epochs; 0: only final.tar"
    )
    parser.add_argument("--validation_freq", type=int, default=1, help="Validate every k epochs (default: 1)")
    parser.add_argument("--n_epochs", type=int, default=10, help="Number of epochs to train (default: 10)")
    parser.add_argument(
        "--load_from_checkpoint",
        type=str,
        default=None,
        help="Load model, optimizer and epoch from this checkpoint file (default: None)",
    )
    parser.add_argument("--no_cuda", default=False, action="store_true", help="Disable CUDA")
    parser.add_argument("--batch_size", type=int, default=32, help="Batch size (default: 32)")
    parser.add_argument("--optimizer", type=str, default="adam", help="Optimizer: adam, sgd or adagrad (default: adam)")
    parser.add_argument("--lr", type=float, default=1e-2, help="Learning rate (default: 1e-2)")
    parser.add_argument("--update_freq", type=int, default=1, help="Update the weights every k batches (default: 1)")
    parser.add_argument("--vocab_size", type=int, default=10, help="Channel vocabulary size (default: 10)")
    parser.add_argument("--max_len", type=int, default=1, help="Maximal message length (default: 1)")
    parser.add_argument("--tensorboard", default=False, action="store_true", help=f"TensorBoard logging ({NEEDS_EGG})")
    parser.add_argument("--tensorboard_dir", type=str, default="runs/", help="TensorBoard log directory")
    parser.add_argument("--distributed_port", type=int, default=18363, help="Port for SLURM-launched distributed runs")
    parser.add_argument("--fp16", default=False, action="store_true", help="Mixed-precision training (CUDA only)")
