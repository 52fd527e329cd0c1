"""The study server under load: simulated participants answer through the HTTP API of a real ``serve`` process.

Two phases, each on a freshly built study (synthetic stimuli: random images, made-up captions):

- steady: N participants (default 50) take the study at once, as a browser does it: the instructions page, the
  page's CSS and script, Start, then for each question the page and its 10 images, a pause to think (0.2-2 s,
  times --pause_scale), the answer.  Some reload the page before answering; some have a second tab open on the
  same question and answer it in both tabs at the same moment (the same image half of the time, another one
  otherwise), as a participant double-clicking in two windows would.
- kill: the same, but once half of the answers are acknowledged (and while an answer is on its way, if one comes
  within 5 s) the server is killed with SIGKILL, stays down for --downtime seconds and is restarted on the same
  port and database.  Clients retry on connection errors (the same request again, as the page's script lets a
  participant do), so an answer that was stored but whose reply was lost is sent a second time.

Afterwards the benchmark reads the SQLite database directly and checks it against what every client saw
acknowledged (HTTP 200): no acknowledged answer lost or changed, one stored answer per (participant, trial) even
with two tabs, no stored answer that no client sent, no gaps in a participant's trials, no page showing a
question that was already acknowledged, no two replies saying ``stored: true`` for one trial, no unexpected
status (5xx, 4xx other than the second tab's 409) and, in the steady phase, no connection failure.  It prints,
per phase, the answers sent / acknowledged / refused / stored, the errors and the p50 and p99 latency per
request type (of each request's attempt that got a reply), and exits 1 if a check fails.

Everything runs on 127.0.0.1; each phase stops its participants after --max_seconds (they finish the request in
flight and stop: the checks still hold, fewer participants finish).

    python benchmarks/study_load.py [--participants 50] [--pause_scale 1.0] [--max_seconds 300]
    python benchmarks/study_load.py --participants 5 --pause_scale 0.02   # a quick run
"""

import argparse
import contextlib
import http.client
import io
import json
import math
import os
import random
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from egg.zoo.discriminative_captioner.study.__main__ import main as study_main
from egg.zoo.discriminative_captioner.study.design import load_design

HOST = "127.0.0.1"
ADMIN_TOKEN = "study-load-benchmark"
CONDITIONS = ["human", "descriptive", "mismatched"]
ATTENTION_PER_PARTICIPANT = 2
IDLE_SECONDS = 4.0  # a browser drops a kept-alive connection before uvicorn's 5 s keep-alive timeout closes it
REQUEST_TIMEOUT = 30.0
KINDS = ["page", "static", "image", "start", "answer"]
ANOTHER_CHOICE = "already answered with another choice"  # the 409 of a second tab that lost the race


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    load = parser.add_argument_group("participants")
    load.add_argument("--participants", type=int, default=50, help="simulated participants (default: 50)")
    load.add_argument("--sets_per_participant", type=int, default=6,
                      help=f"sets each participant answers, plus {ATTENTION_PER_PARTICIPANT} attention checks "
                           "(default: 6)")
    load.add_argument("--pause_scale", type=float, default=1.0,
                      help="multiplies every pause (thinking 0.2-2 s, arrivals over 2 s); 0.02 for a quick run "
                           "(default: 1.0)")
    load.add_argument("--reload_rate", type=float, default=0.15,
                      help="chance that a participant reloads the page before answering a question (default: 0.15)")
    load.add_argument("--two_tab_participants", type=float, default=0.2,
                      help="fraction of participants with a second tab open on the study (default: 0.2)")
    load.add_argument("--two_tab_rate", type=float, default=0.5,
                      help="chance that such a participant answers a question in both tabs at once (default: 0.5)")
    load.add_argument("--seed", type=int, default=0, help="seed of the study and of the participants (default: 0)")
    run = parser.add_argument_group("run")
    run.add_argument("--phases", nargs="+", choices=["steady", "kill"], default=["steady", "kill"],
                     help="which phases to run (default: both)")
    run.add_argument("--max_seconds", type=float, default=300.0,
                     help="each phase stops its participants after this many seconds (default: 300)")
    run.add_argument("--downtime", type=float, default=0.5,
                     help="seconds the killed server stays down before it is restarted (default: 0.5)")
    run.add_argument("--work_dir", default=None,
                     help="where the studies and server logs go (default: a temporary directory, removed at the end)")
    return parser  # fmt: skip


# --- the study ----------------------------------------------------------------------------------------------


def write_stimuli(directory, n_sets, conditions, rng):
    """A ``discritune-stimuli/1`` directory of ``n_sets`` sets of 10 distinct random images (64x64 PNG)."""
    os.makedirs(os.path.join(directory, "images"))
    sets = []
    for number in range(n_sets):
        set_id = f"s{number:04d}"
        paths = []
        for k in range(10):
            base = rng.integers(0, 255, size=(4, 4, 3), dtype=np.uint8)  # a smooth colour field plus noise
            pixels = np.asarray(Image.fromarray(base).resize((64, 64), Image.BICUBIC), dtype=np.int16)
            pixels = np.clip(pixels + rng.integers(-20, 20, size=pixels.shape), 0, 255).astype(np.uint8)
            paths.append(f"images/{set_id}_{k}.png")
            Image.fromarray(pixels).save(os.path.join(directory, paths[-1]))
        captions = {c: f"{c} caption of set {number}" for c in conditions}
        sets.append({"set_id": set_id, "images": paths, "target": int(rng.integers(10)), "captions": captions})
    stimuli = {"format": "discritune-stimuli/1", "dataset": "synthetic", "split": "test",
               "source": "nearest_neighbours", "conditions": conditions, "sets": sets}  # fmt: skip
    with open(os.path.join(directory, "stimuli.json"), "w") as f:
        json.dump(stimuli, f)


def build_study(directory, n_participants, sets_per_participant, seed):
    """Builds a study with ``study build`` in ``directory/study``; returns ``(study_dir, design)``.

    Two blocks of sets in three conditions, and attention checks from a second stimuli directory.
    """
    rng = np.random.default_rng(seed)
    write_stimuli(os.path.join(directory, "stimuli"), 2 * sets_per_participant, CONDITIONS, rng)
    write_stimuli(os.path.join(directory, "attention"), 2 * ATTENTION_PER_PARTICIPANT, ["check"], rng)
    study_dir = os.path.join(directory, "study")
    with contextlib.redirect_stdout(io.StringIO()):  # build's own summary: not part of the benchmark's report
        study_main(["build", os.path.join(directory, "stimuli"), study_dir, "--participants", str(n_participants),
                    "--sets_per_participant", str(sets_per_participant), "--attention_checks",
                    os.path.join(directory, "attention"), "--attention_per_participant",
                    str(ATTENTION_PER_PARTICIPANT), "--seed", str(seed)])  # fmt: skip
    return study_dir, load_design(study_dir)


def free_port():
    with contextlib.closing(socket.socket()) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """``study serve`` as a subprocess on 127.0.0.1:``port``, its output appended to ``log_path``."""

    def __init__(self, study_dir, port, log_path):
        self.command = [sys.executable, "-m", "egg.zoo.discriminative_captioner.study", "serve", study_dir,
                        "--host", HOST, "--port", str(port), "--admin_token", ADMIN_TOKEN,
                        "--log_level", "warning"]  # fmt: skip
        self.port, self.log_path, self.process = port, log_path, None

    def start(self, timeout=60.0):
        """Starts the server and returns once it answers ``GET /``."""
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(OSError, http.client.HTTPException):
                connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
                try:
                    connection.request("GET", "/")
                    if connection.getresponse().status == 200:
                        return
                finally:
                    connection.close()
            time.sleep(0.05)
        self.stop()
        with open(self.log_path) as log:
            raise RuntimeError(f"the study server did not start; its log ({self.log_path}):\n{log.read()[-3000:]}")

    def kill(self):
        """SIGKILL: no shutdown, no flush, no checkpoint; the process is gone when this returns."""
        self.process.kill()
        self.process.wait()

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


# --- the clients --------------------------------------------------------------------------------------------


class Recorder:
    """What all clients of a phase sent and saw, thread-safe."""

    def __init__(self, kill_after=None):
        self.lock = threading.Lock()
        self.latencies = defaultdict(list)  # kind -> seconds of each attempt that got a reply
        self.counts = Counter()
        self.errors = Counter()  # unexpected replies, by kind and status
        self.acks = []  # (participant, trial, choice, stored) of every 200 reply to an answer
        self.unreplied = set()  # (participant, trial, choice) sent without a reply before the deadline
        self.behind = []  # pages that showed a question already acknowledged, or not the expected one
        self.kill_after = kill_after  # acknowledgements after which the controller kills the server
        self.kill_now = threading.Event()
        self.answers_in_flight = 0  # sent, reply not yet read

    def count(self, name, n=1):
        with self.lock:
            self.counts[name] += n

    def latency(self, kind, seconds):
        with self.lock:
            self.latencies[kind].append(seconds)

    def error(self, what):
        with self.lock:
            self.errors[what] += 1

    def acknowledged(self, participant, trial, choice, stored):
        with self.lock:
            self.acks.append((participant, trial, choice, stored))
            if self.kill_after is not None and len(self.acks) >= self.kill_after:
                self.kill_now.set()

    def in_flight(self, change):
        with self.lock:
            self.answers_in_flight += change

    def no_reply(self, participant, trial, choice):
        with self.lock:
            self.unreplied.add((participant, trial, choice))

    def page_behind(self, what):
        with self.lock:
            self.behind.append(what)


class Tab:
    """One browser tab: a kept-alive HTTP/1.1 connection that retries a request on connection errors."""

    def __init__(self, port, recorder, deadline):
        self.port, self.recorder, self.deadline = port, recorder, deadline
        self.connection, self.last_used = None, 0.0
        self.failed_attempts = 0  # of the last request, before the attempt that got a reply
        self.cached = set()  # images (Cache-Control) and static files (ETag): a browser keeps them

    def request(self, kind, method, path, body=None):
        """``(status, bytes)`` of the first attempt that gets a reply, or None once the deadline has passed."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        delay = 0.05
        self.failed_attempts = 0
        while time.monotonic() < self.deadline:
            if self.connection is None or time.monotonic() - self.last_used > IDLE_SECONDS:
                self.close()
                self.connection = http.client.HTTPConnection(HOST, self.port, timeout=REQUEST_TIMEOUT)
            started = time.perf_counter()
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):  # refused, reset, closed mid-reply, timed out
                self.close()
                self.failed_attempts += 1
                self.recorder.count("connection failures")
                time.sleep(max(0.0, min(delay, self.deadline - time.monotonic())))
                delay = min(2 * delay, 0.5)
                continue
            self.recorder.latency(kind, time.perf_counter() - started)
            self.last_used = time.monotonic()
            if response.will_close:
                self.close()
            return response.status, data
        return None

    def get(self, kind, path):
        """GET ``path``; its text if the reply is 200 (anything else is recorded as an error), else None."""
        if kind in ("image", "static") and path in self.cached:
            return ""
        reply = self.request(kind, "GET", path)
        if reply is None:
            return None
        status, data = reply
        if status != 200:
            self.recorder.error(f"{kind}: HTTP {status}")
            return None
        if kind in ("image", "static"):
            self.cached.add(path)
        return data.decode("utf-8", errors="replace") if kind == "page" else ""

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None


TRIAL = re.compile(r'data-trial="(\d+)" data-set="([^"]+)"')
IMAGE = re.compile(r'<img src="\.\./images/([^"]+)"')
STATIC = re.compile(r'(?:href|src)="\.\./(static/[^"]+)"')


def read_page(text):
    """What a page shows: ``("instructions" | "end" | "trial" | "other", trial index, set id, image names)``."""
    if 'id="start"' in text:
        return "instructions", None, None, []
    if 'id="end"' in text:
        return "end", None, None, []
    match = TRIAL.search(text)
    if match:
        return "trial", int(match.group(1)), match.group(2), IMAGE.findall(text)
    return "other", None, None, []


class Participant:
    """One simulated participant: takes the study from their link to the end page, or until the deadline."""

    def __init__(self, participant_id, port, recorder, deadline, pause_scale, reload_rate, two_tab_rate, seed):
        self.id, self.port, self.recorder, self.deadline = participant_id, port, recorder, deadline
        self.pause_scale, self.reload_rate, self.two_tab_rate = pause_scale, reload_rate, two_tab_rate
        self.rng = random.Random(seed)
        self.tab = Tab(port, recorder, deadline)
        self.answered = set()  # trials acknowledged to this participant, in any tab
        self.finished = False

    def pause(self, low=0.2, high=2.0):
        seconds = self.rng.uniform(low, high) * self.pause_scale
        time.sleep(max(0.0, min(seconds, self.deadline - time.monotonic())))

    def open_page(self, tab):
        """The participant page with its static files and images, read; None if it could not be loaded."""
        text = tab.get("page", f"/p/{self.id}")
        if text is None:
            return None
        page = read_page(text)
        for path in STATIC.findall(text):
            tab.get("static", "/" + path)
        for name in page[3]:
            tab.get("image", f"/images/{name}")
        if page[0] == "trial" and page[1] != len(self.answered):
            self.recorder.page_behind(f"{self.id}: page shows trial {page[1]} with {len(self.answered)} "
                                      "acknowledged")  # fmt: skip
        return page

    def run(self):
        self.pause(0.0, 2.0)  # participants arrive over the first seconds, not all at once
        page = self.open_page(self.tab)
        while page is not None and time.monotonic() < self.deadline:
            kind, index, set_id, _ = page
            if kind == "end":
                self.finished = True
                break
            if kind == "instructions":
                self.pause()  # reading the instructions
                reply = self.tab.request("start", "POST", f"/api/{self.id}/start", b"{}")
                if reply is not None and reply[0] != 200:
                    self.recorder.error(f"start: HTTP {reply[0]}")
                    break
            elif kind == "trial":
                if self.rng.random() < self.reload_rate:
                    self.pause(0.2, 1.0)
                    self.recorder.count("reloads")
                    page = self.open_page(self.tab)
                    continue
                self.pause()  # thinking
                if self.two_tab_rate and self.rng.random() < self.two_tab_rate:
                    self.answer_in_two_tabs(index, set_id)
                else:
                    self.answer(self.tab, index, set_id, self.rng.randrange(10), two_tabs=False)
            else:
                self.recorder.error("page: neither instructions, a question nor the end page")
                break
            page = self.open_page(self.tab)
        self.tab.close()

    def answer(self, tab, index, set_id, choice, two_tabs):
        """Sends one answer (retrying on connection errors) and records what came back."""
        self.recorder.count("answers sent")
        body = json.dumps({"trial": index, "set_id": set_id, "choice": choice}).encode()
        self.recorder.in_flight(+1)
        reply = tab.request("answer", "POST", f"/api/{self.id}/answer", body)
        self.recorder.in_flight(-1)
        if tab.failed_attempts:
            self.recorder.count("answers resent")
        if reply is None:
            self.recorder.no_reply(self.id, index, choice)
            return
        status, data = reply
        if status == 200:
            result = json.loads(data)
            if result["trial"] != index or result["answered"] < index + 1:
                self.recorder.error(f"answer: reply {result} to trial {index}")
            if tab.failed_attempts and not two_tabs and not result["stored"]:
                self.recorder.count("resent, already stored")  # the first copy was stored, its reply lost
            self.answered.add(index)
            self.recorder.acknowledged(self.id, index, choice, result["stored"])
        elif status == 409 and two_tabs and ANOTHER_CHOICE in json.loads(data).get("detail", ""):
            self.recorder.count("refused: the other tab answered first")
        else:
            self.recorder.error(f"answer: HTTP {status}")

    def answer_in_two_tabs(self, index, set_id):
        """A second tab opens the same question; both tabs send their answer at the same moment."""
        self.recorder.count("two-tab questions")
        other = Tab(self.port, self.recorder, self.deadline)
        page = self.open_page(other)
        choice = self.rng.randrange(10)
        other_choice = choice if self.rng.random() < 0.5 else (choice + self.rng.randrange(1, 10)) % 10
        both = threading.Barrier(2)

        def send(tab, c):
            with contextlib.suppress(threading.BrokenBarrierError):
                both.wait(timeout=REQUEST_TIMEOUT)
            self.answer(tab, index, set_id, c, two_tabs=True)

        if page is not None and page[0] == "trial" and page[1] == index:
            second = threading.Thread(target=send, args=(other, other_choice))
            second.start()
            send(self.tab, choice)
            second.join()
        else:  # the second tab did not show this question (recorded by open_page): answer in the first only
            self.answer(self.tab, index, set_id, choice, two_tabs=False)
        other.close()


# --- a phase and its checks ---------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    """What one phase measured and which of its checks failed."""

    name: str
    participants: int
    two_tab_participants: int
    finished: int
    trials: int  # assigned to all participants
    seconds: float
    recorder: Recorder
    stored: int = 0
    kill: dict = field(default_factory=dict)  # acknowledged at the kill, seconds until the server answered again
    figures: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)


def run_phase(name, directory, args, kill):
    """Builds a study in ``directory``, serves it, runs the participants (killing the server midway if ``kill``)."""
    study_dir, design = build_study(directory, args.participants, args.sets_per_participant, args.seed)
    ids = [p["id"] for p in design["participants"]]
    trials = sum(len(p["trials"]) for p in design["participants"])
    rng = random.Random(args.seed)
    two_tabs = set(rng.sample(ids, round(args.two_tab_participants * len(ids))))
    recorder = Recorder(kill_after=trials // 2 if kill else None)
    port = free_port()
    server = Server(study_dir, port, os.path.join(directory, "server.log"))
    server.start()
    started = time.monotonic()
    deadline = started + args.max_seconds
    participants = [Participant(pid, port, recorder, deadline, args.pause_scale, args.reload_rate,
                                args.two_tab_rate if pid in two_tabs else 0.0, rng.getrandbits(32))
                    for pid in ids]  # fmt: skip
    threads = [threading.Thread(target=p.run, name=p.id, daemon=True) for p in participants]
    kill_info = {}
    try:
        for thread in threads:
            thread.start()
        if kill:
            recorder.kill_now.wait(timeout=args.max_seconds / 2)  # half the answers in, or half the time gone
            wait_until = time.monotonic() + 5  # then kill while an answer is on its way, if one comes within 5 s
            while recorder.answers_in_flight == 0 and time.monotonic() < wait_until:
                time.sleep(0.001)
            kill_info["acknowledged"], kill_info["in flight"] = len(recorder.acks), recorder.answers_in_flight
            killed = time.monotonic()
            server.kill()
            time.sleep(args.downtime)
            server.start()
            kill_info["back after s"] = time.monotonic() - killed
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()) + REQUEST_TIMEOUT + 5)
        seconds = time.monotonic() - started
    finally:
        server.stop()
    result = PhaseResult(name, len(ids), len(two_tabs), sum(p.finished for p in participants), trials, seconds,
                         recorder, kill=kill_info)  # fmt: skip
    if any(thread.is_alive() for thread in threads):
        result.failures.append("a participant did not stop after the deadline")
    check(result, study_dir, steady=not kill)
    return result


def stored_answers(study_dir):
    """``[(participant, trial, choice)]`` of every row of the answers table, after SQLite's integrity check."""
    with contextlib.closing(sqlite3.connect(os.path.join(study_dir, "study.db"))) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        rows = db.execute("SELECT participant_id, trial, choice FROM answers").fetchall()
    return integrity, rows


def check(result, study_dir, steady):
    """Compares the database with what the clients saw; appends each failed check to ``result.failures``."""
    recorder = result.recorder
    integrity, rows = stored_answers(study_dir)
    result.stored = len(rows)
    stored = {}
    copies = Counter((p, t) for p, t, _ in rows)
    for p, t, c in rows:
        stored[(p, t)] = c
    acked = defaultdict(set)
    said_stored = Counter()
    for p, t, c, was_stored in recorder.acks:
        acked[(p, t)].add(c)
        said_stored[(p, t)] += bool(was_stored)
    lost = [k for k, choices in acked.items() if stored.get(k) not in choices]
    unexplained = [(p, t, c) for (p, t), c in stored.items()
                   if c not in acked.get((p, t), ()) and (p, t, c) not in recorder.unreplied]  # fmt: skip
    per_participant = defaultdict(list)
    for p, t in stored:
        per_participant[p].append(t)
    gaps = [p for p, ts in per_participant.items() if sorted(ts) != list(range(len(ts)))]
    figures = {
        "lost": len(lost),
        "duplicated": sum(n - 1 for n in copies.values()),
        "conflicting acknowledgements": sum(len(choices) > 1 for choices in acked.values()),
        "two 'stored' replies": sum(n > 1 for n in said_stored.values()),
        "unexplained rows": len(unexplained),
        "gaps": len(gaps),
        "pages behind": len(recorder.behind),
        "errors": sum(recorder.errors.values()),
    }
    if steady:
        figures["connection failures"] = recorder.counts["connection failures"]
    result.figures = figures
    result.failures += [f"{name}: {n}" for name, n in figures.items() if n]
    if integrity != "ok":
        result.failures.append(f"integrity check: {integrity}")
    if recorder.errors:
        result.failures.append("unexpected replies: " + ", ".join(f"{k} x{n}" for k, n in recorder.errors.items()))
    result.failures += [f"page: {b}" for b in recorder.behind[:3]]
    if lost:
        result.failures.append(f"lost, e.g. {lost[:3]}")
    if result.kill and result.kill["acknowledged"] >= len(recorder.acks):
        result.failures.append("the server was killed after the last answer: nothing was tested")


def percentile(values, q):
    """The nearest-rank ``q``-th percentile of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def report(result):
    """The phase's figures as a short text table."""
    r, counts = result.recorder, result.recorder.counts
    lines = [f"phase {result.name}: {result.participants} participants ({result.two_tab_participants} with two "
             f"tabs), {result.finished} finished, {result.seconds:.1f} s"]  # fmt: skip
    if result.kill:
        lines.append(f"  server SIGKILLed after {result.kill['acknowledged']} acknowledged answers, with "
                     f"{result.kill['in flight']} answers in flight; answering again "
                     f"{result.kill['back after s']:.2f} s later")  # fmt: skip
    lines.append(f"  answers sent {counts['answers sent']}, acknowledged {len(r.acks)}, refused as already "
                 f"answered by the other tab {counts['refused: the other tab answered first']}, no reply "
                 f"{len(r.unreplied)}; stored {result.stored} (of {result.trials} assigned trials)")  # fmt: skip
    lines.append(f"  two-tab questions {counts['two-tab questions']}, reloads {counts['reloads']}, connection "
                 f"failures retried {counts['connection failures']}, answers resent {counts['answers resent']} "
                 f"({counts['resent, already stored']} of them already stored), errors "
                 f"{sum(r.errors.values())}")  # fmt: skip
    lines.append(f"  {'request':<8} {'count':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for kind in KINDS:
        values = r.latencies.get(kind, [])
        if values:
            lines.append(f"  {kind:<8} {len(values):>7} {1000 * percentile(values, 50):>8.1f} "
                         f"{1000 * percentile(values, 99):>8.1f}")  # fmt: skip
    checks = ", ".join(f"{k} {v}" for k, v in result.figures.items())
    lines.append(f"  checks: {checks}: {'FAIL' if result.failures else 'pass'}")
    lines += [f"  failed: {f}" for f in result.failures]
    return "\n".join(lines)


def main(argv=None):
    """Runs the phases; returns 0 if every check passed, else 1."""
    args = get_parser().parse_args(argv)
    if args.participants < 1 or args.sets_per_participant < 1 or args.max_seconds <= 0 or args.pause_scale < 0:
        get_parser().error("--participants, --sets_per_participant, --max_seconds must be positive, "
                           "--pause_scale not negative")  # fmt: skip
    with contextlib.ExitStack() as stack:
        work_dir = args.work_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="study_load_"))
        failed = False
        for name in args.phases:
            result = run_phase(name, os.path.join(work_dir, name), args, kill=name == "kill")
            print(report(result), flush=True)
            failed |= bool(result.failures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
