"""The study's answers in SQLite (``STUDY_DIR/study.db``, WAL mode).

An answer is keyed by (participant, trial): a second copy of the same answer changes nothing, and every answer
is committed before the server replies, with ``synchronous=FULL``, so killing the server loses no answer that a
participant saw acknowledged.
"""

import contextlib
import json
import os
import sqlite3
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS participants (
    participant_id TEXT PRIMARY KEY,
    started_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    participant_id TEXT NOT NULL,
    trial INTEGER NOT NULL,          -- position in the participant's sequence of trials
    set_id TEXT NOT NULL,
    condition TEXT,                  -- NULL for attention checks
    attention INTEGER NOT NULL,
    image_order TEXT NOT NULL,       -- JSON: stimulus index of the image shown at each position
    choice INTEGER NOT NULL,         -- the position clicked (0-9)
    chosen INTEGER NOT NULL,         -- the stimulus index of the image clicked
    target INTEGER NOT NULL,         -- the stimulus index of the target
    correct INTEGER NOT NULL,
    answered_at REAL NOT NULL,
    PRIMARY KEY (participant_id, trial)
);
"""

ANSWER_COLUMNS = ("participant_id", "trial", "set_id", "condition", "attention", "image_order", "choice", "chosen",
                  "target", "correct", "answered_at")  # fmt: skip


def database_path(study_dir):
    return os.path.join(study_dir, "study.db")


def connect(path):
    """A connection in WAL mode that commits durably and waits for a busy database instead of failing."""
    # Autocommit: each statement is its own transaction.  A request's connection is opened and closed in
    # different worker threads (FastAPI runs a dependency's set-up and clean-up apart), never used by two at once.
    connection = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    return connection


def create(path):
    """Creates the tables (if missing)."""
    with contextlib.closing(connect(path)) as connection:
        connection.executescript(SCHEMA)


class Store:
    """Reads and writes one study's answers over one connection."""

    def __init__(self, connection):
        self.connection = connection

    def start(self, participant_id):
        """Records that the participant has read the instructions (once)."""
        self.connection.execute(
            "INSERT OR IGNORE INTO participants (participant_id, started_at) VALUES (?, ?)",
            (participant_id, time.time()),
        )

    def started(self, participant_id):
        row = self.connection.execute("SELECT 1 FROM participants WHERE participant_id = ?", (participant_id,))
        return row.fetchone() is not None

    def answered(self, participant_id):
        """The participant's stored answers, ``{trial: row}``."""
        rows = self.connection.execute("SELECT * FROM answers WHERE participant_id = ?", (participant_id,))
        return {row["trial"]: row for row in rows}

    def add_answer(self, answer):
        """Stores ``answer`` (a dict of ANSWER_COLUMNS) unless that trial is answered; returns the stored row.

        Returns ``(row, stored)``: ``stored`` is False when an answer to that trial was already there, in
        which case ``row`` is that earlier answer and nothing changed.
        """
        columns = ", ".join(ANSWER_COLUMNS)
        values = [answer[c] for c in ANSWER_COLUMNS]
        cursor = self.connection.execute(
            f"INSERT INTO answers ({columns}) VALUES ({', '.join('?' * len(values))}) ON CONFLICT DO NOTHING", values
        )
        row = self.connection.execute(
            "SELECT * FROM answers WHERE participant_id = ? AND trial = ?", (answer["participant_id"], answer["trial"])
        ).fetchone()
        return row, cursor.rowcount == 1

    def all_answers(self):
        """Every answer, as dicts, in (participant, trial) order."""
        rows = self.connection.execute("SELECT * FROM answers ORDER BY participant_id, trial")
        return [dict(row) for row in rows]

    def participants_started(self):
        return {row[0] for row in self.connection.execute("SELECT participant_id FROM participants")}


def answer_record(participant_id, trial_index, trial, target, choice):
    """The row stored for a participant's ``choice`` (screen position) on ``trial``."""
    chosen = trial["order"][choice]
    return {
        "participant_id": participant_id,
        "trial": trial_index,
        "set_id": trial["set_id"],
        "condition": trial["condition"],
        "attention": int(trial["attention"]),
        "image_order": json.dumps(trial["order"]),
        "choice": choice,
        "chosen": chosen,
        "target": target,
        "correct": int(chosen == target),
        "answered_at": time.time(),
    }


def read_answers(study_dir):
    """All stored answers of a study (an empty list before anyone answered)."""
    path = database_path(study_dir)
    if not os.path.exists(path):
        return []
    with contextlib.closing(connect(path)) as connection:
        connection.executescript(SCHEMA)
        return Store(connection).all_answers()
