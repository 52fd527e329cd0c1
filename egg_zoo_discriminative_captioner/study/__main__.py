"""Command line of the study: ``build``, ``serve`` and ``export`` (see ``--help`` of each)."""

import argparse
import logging
import os
import secrets
import socket

from ..runtime.errors import UsageError, run_command


def get_parser():
    parser = argparse.ArgumentParser(
        prog="python -m egg.zoo.discriminative_captioner.study", description=__doc__.replace("``", "")
    )  # the docstring's reST quotes are not for a terminal
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build a study from a stimuli directory (written by evaluate)")
    build.add_argument("stimuli_dir", help="a directory with stimuli.json and its images")
    build.add_argument("study_dir", help="the new study's directory (must not exist or be empty)")
    build.add_argument("--sets_per_participant", type=int, default=100,
                       help="sets each participant sees (default: 100)")
    ids = build.add_mutually_exclusive_group()
    ids.add_argument("--participants", type=int, default=None,
                     help="number of participants (default: one per list, so every set is seen once per condition)")
    ids.add_argument("--participant_ids", default=None, help="a file of participant ids, one per line")
    build.add_argument("--conditions", nargs="+", default=None,
                       help="the conditions to study, in this order (default: all of the stimuli's)")
    build.add_argument("--attention_checks", default=None,
                       help="a stimuli directory of easy sets whose caption names the target exactly (default: none)")
    build.add_argument("--attention_condition", default=None,
                       help="the attention stimuli's condition whose captions are used (default: its first)")
    build.add_argument("--attention_per_participant", type=int, default=5,
                       help="attention checks mixed into each participant's trials (default: 5)")
    build.add_argument("--seed", type=int, default=0, help="seed of the assignment and orders (default: 0)")

    serve = commands.add_parser("serve", help="serve the study (FastAPI app on uvicorn)")
    serve.add_argument("study_dir")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--admin_token", default=os.environ.get("STUDY_ADMIN_TOKEN"),
                       help="token of the admin page (default: $STUDY_ADMIN_TOKEN, else a new random one)")
    serve.add_argument("--public_url", default=None,
                       help="the URL participants use (e.g. https://example.org/study), for the printed links")
    serve.add_argument("--forwarded_allow_ips", default="127.0.0.1",
                       help="reverse proxies whose X-Forwarded-* headers are trusted (default: 127.0.0.1)")
    serve.add_argument("--log_level", default="info", choices=["critical", "error", "warning", "info", "debug"])

    export = commands.add_parser("export", help="write answers.csv, the accuracy table and its bar chart")
    export.add_argument("study_dir")
    export.add_argument("--output_dir", default=None, help="where to write (default: STUDY_DIR/results)")
    export.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export's files in the output directory (default: refuse a "
                             "directory that is not empty)")
    export.add_argument("--max_attention_errors", type=int, default=1,
                        help="exclude participants with more attention-check errors than this (default: 1)")
    export.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates (default: 2000)")
    export.add_argument("--confidence", type=float, default=0.95, help="confidence level (default: 0.95)")
    export.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    return parser  # fmt: skip


def build(args):
    from .design import build_study, read_participant_ids
    from .stimuli import read_stimuli

    stimuli = read_stimuli(args.stimuli_dir)
    attention = read_stimuli(args.attention_checks) if args.attention_checks else None
    ids = read_participant_ids(args.participant_ids) if args.participant_ids else None
    if args.participants is not None and args.participants < 1:
        raise UsageError("--participants must be at least 1")
    design = build_study(stimuli, args.study_dir, args.sets_per_participant, ids, args.participants,
                         args.conditions, attention, args.attention_condition, args.attention_per_participant,
                         args.seed)  # fmt: skip
    n = len(design["participants"])
    print(f"study built in {args.study_dir}: {len(design['sets'])} sets x {len(design['conditions'])} conditions, "
          f"{design['lists']} lists, {n} participants, {len(design['participants'][0]['trials'])} trials for the "
          f"first ({len(design['attention_sets'])} attention sets available)")  # fmt: skip
    if len(design["sets"]) % args.sets_per_participant:
        print(f"note: the last block has {len(design['sets']) % args.sets_per_participant} sets: its participants "
              f"see fewer than {args.sets_per_participant}")
    if n < design["lists"]:
        print(f"note: {n} participants cover {n} of the {design['lists']} lists; "
              "not every set is seen in every condition")
    print(f"participant links: {os.path.join(args.study_dir, 'participants.csv')}")


def listening_socket(host, port):
    """A socket bound to ``host:port``, or a UsageError naming the port: a busy port fails before anything starts."""
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY on accepted connections only then; without it, a reused
    # connection's replies waited ~44 ms on Nagle's algorithm (benchmarks/study_load.py)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart may reuse a TIME_WAIT port
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({error.strerror or error}); another server may be "
                         "using it: pick another with --port") from None  # fmt: skip
    return sock


def serve(args):
    sock = listening_socket(args.host, args.port)  # first: on a busy port no admin address is ever printed
    try:
        import uvicorn

        from .app import AccessLogRedaction, create_app

        token = args.admin_token or secrets.token_urlsafe(24)
        app = create_app(args.study_dir, token)
        port = sock.getsockname()[1]  # the port chosen by the system for --port 0
        config = uvicorn.Config(app, host=args.host, port=port, log_level=args.log_level, proxy_headers=True,
                                forwarded_allow_ips=args.forwarded_allow_ips)  # fmt: skip
        logging.getLogger("uvicorn.access").addFilter(AccessLogRedaction([token]))  # after Config set up logging
        address = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address goes in brackets
        base = (args.public_url or f"http://{address}:{port}").rstrip("/")
        print(f"admin page (opening it signs you in): {base}/admin/login?token={token}", flush=True)
        print(f"participant links: {base}/p/<id>, ids in {os.path.join(args.study_dir, 'participants.csv')}",
              flush=True)  # fmt: skip
        print(f"listening on http://{address}:{port} (Ctrl+C stops)", flush=True)
        server = uvicorn.Server(config)
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        if not server.started:
            raise UsageError("the server did not start (see uvicorn's messages above)")
    finally:
        sock.close()


def export(args):
    from .export import export as write_results
    from .export import markdown_table

    output_dir = args.output_dir or os.path.join(args.study_dir, "results")
    summary = write_results(args.study_dir, output_dir, args.max_attention_errors, args.bootstrap, args.seed,
                            args.confidence, overwrite=args.overwrite)  # fmt: skip
    print(markdown_table(summary), end="")
    print(f"written to {output_dir}: answers.csv, accuracy.csv, accuracy.md, accuracy.json, accuracy.png")


def main(params):
    args = get_parser().parse_args(params)
    {"build": build, "serve": serve, "export": export}[args.command](args)


if __name__ == "__main__":
    run_command(main)
