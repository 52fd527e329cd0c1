"""The study's command line as an experimenter runs it: real processes, their output and their logs."""

import contextlib
import socket
import subprocess
import sys

import httpx
import pytest

from .test_study import TOKEN, build_tiny_study, tiny_stimuli  # noqa: F401
from .test_study_browser import free_port, server

STUDY = [sys.executable, "-m", "egg.zoo.discriminative_captioner.study"]


@pytest.mark.parametrize("command", [[], ["build"], ["serve"], ["export"]])
def test_help_does_not_import_torch(command):
    """``--help`` stays fast: nothing heavy (torch, FastAPI, matplotlib) is imported to print it."""
    done = subprocess.run([sys.executable, "-X", "importtime", *STUDY[1:], *command, "--help"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")}
    assert "argparse" in imported  # the list is complete
    heavy = sorted(name for name in imported if name.split(".")[0] in {"torch", "fastapi", "matplotlib", "uvicorn"})
    assert heavy == []


def test_the_server_never_logs_the_admin_token(tiny_stimuli, tmp_path):  # noqa: F811
    study_dir = str(tmp_path / "study")
    build_tiny_study(tiny_stimuli, study_dir)
    port, log = free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    with server(study_dir, port, str(log), log_level="info"), httpx.Client(timeout=10) as client:
        signed_in = client.get(f"{base}/admin/login", params={"token": TOKEN}, follow_redirects=True)
        assert signed_in.status_code == 200 and "Study progress" in signed_in.text
        assert str(signed_in.url) == f"{base}/admin"  # the token is gone from the address bar, too
        assert client.get(f"{base}/admin/progress.json").status_code == 200  # the cookie
        for query in [f"token={TOKEN}", f"x=1&token={TOKEN}", "tok%65n=" + TOKEN]:  # scripts may send the token
            assert httpx.get(f"{base}/admin/progress.json?{query}", timeout=10).status_code == 200, query
        assert httpx.get(f"{base}/admin?Token={TOKEN}&y=2", timeout=10).status_code == 403  # wrong name, not logged
        assert client.get(f"{base}/admin/login", params={"token": TOKEN + "x"}).status_code == 403
        client.post(f"{base}/admin/login", data={"token": TOKEN})
    lines = log.read_text().splitlines()
    assert any("GET /admin/login?token=REDACTED" in line for line in lines), lines  # access lines were logged
    assert any("GET /admin/progress.json?x=1&token=REDACTED" in line for line in lines), lines
    leaks = [line for line in lines if TOKEN in line]
    assert len(leaks) == 1 and leaks[0].startswith("admin page"), leaks  # only the address serve printed
    assert f"{base}/admin/login?token={TOKEN}" in leaks[0]


def test_a_busy_port_fails_before_the_admin_address_is_printed(tiny_stimuli, tmp_path):  # noqa: F811
    study_dir = str(tmp_path / "study")
    build_tiny_study(tiny_stimuli, study_dir)
    with contextlib.closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(STUDY + ["serve", study_dir, "--port", str(port), "--admin_token", TOKEN],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert output.strip().count("\n") == 0 and output.startswith("error: ") and "Traceback" not in output, output
    assert f"127.0.0.1:{port}" in output and "--port" in output
    assert "admin" not in output and TOKEN not in output


def test_serving_and_exporting_do_not_import_torch():
    """``serve`` and ``export`` start without torch: the study needs only FastAPI, numpy and matplotlib."""
    code = ("import sys, egg.zoo.discriminative_captioner.study.app, egg.zoo.discriminative_captioner.study.export;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout[-2000:] + done.stderr[-2000:]
