"""benchmarks/study_load.py, small: 5 participants with tiny pauses, a real server, SIGKILLed and restarted.

The benchmark's own checks (the database against every client's acknowledged answers) must pass, and they must
notice an acknowledged answer that is missing from the database.
"""

import contextlib
import os
import sqlite3
import subprocess
import sys

from ..paths import ROOT, load_script

BENCHMARK = os.path.join(ROOT, "benchmarks", "study_load.py")


def load_benchmark():
    return load_script("benchmarks", "study_load.py")


def test_no_answer_is_lost_or_duplicated_under_load_two_tabs_and_a_kill(tmp_path):
    bench = load_benchmark()
    args = bench.get_parser().parse_args(["--participants", "5", "--pause_scale", "0.02", "--two_tab_participants",
                                          "0.4", "--two_tab_rate", "0.6", "--max_seconds", "60"])  # fmt: skip
    for name, kill in (("steady", False), ("kill", True)):
        result = bench.run_phase(name, str(tmp_path / name), args, kill=kill)
        report = bench.report(result)
        assert result.failures == [], report
        assert result.finished == 5 and result.stored == result.trials == 5 * 8, report  # everyone got to the end
        counts = result.recorder.counts
        assert counts["two-tab questions"] > 0 and counts["answers sent"] > result.trials, report
        assert {p for p, *_ in result.recorder.acks} == {p["id"] for p in bench.load_design(
            str(tmp_path / name / "study"))["participants"]}  # fmt: skip
        if kill:
            assert result.kill["acknowledged"] < len(result.recorder.acks), report  # killed in the middle
            assert counts["connection failures"] > 0, report  # the clients met the dead server and retried
        else:
            assert counts["connection failures"] == 0, report

    # the check is not vacuous: an acknowledged answer missing from the database is reported as lost
    participant, trial, _, _ = result.recorder.acks[0]
    with contextlib.closing(sqlite3.connect(str(tmp_path / "kill" / "study" / "study.db"))) as db, db:
        db.execute("DELETE FROM answers WHERE participant_id = ? AND trial = ?", (participant, trial))
    result.failures = []
    bench.check(result, str(tmp_path / "kill" / "study"), steady=False)
    assert "lost: 1" in result.failures


def test_help_explains_the_benchmark():
    done = subprocess.run([sys.executable, BENCHMARK, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    for words in ["SIGKILL", "--participants", "--pause_scale", "--max_seconds", "two tabs", "p99"]:
        assert words in done.stdout, words
