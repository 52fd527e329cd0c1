"""The study server as participants meet it: a real uvicorn process, killed with SIGKILL, and a real browser.

The browser test drives Debian's headless Chromium through selenium (``apt-get install chromium
chromium-driver``; .ci/run installs them) and is skipped, with the reason, where they are missing.
"""

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from egg.zoo.discriminative_captioner.study.__main__ import main as study_main
from egg.zoo.discriminative_captioner.study.design import trial_set

from .test_study import CONDITIONS, TOKEN, build_tiny_study, target_position, tiny_stimuli  # noqa: F401

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def free_port():
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(study_dir, port, log_path, log_level="warning"):
    """``serve STUDY_DIR`` in a subprocess on 127.0.0.1:``port``; yields the process once it answers."""
    command = [sys.executable, "-m", "egg.zoo.discriminative_captioner.study", "serve", study_dir,
               "--port", str(port), "--admin_token", TOKEN, "--log_level", log_level]  # fmt: skip
    with open(log_path, "a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.time() > deadline:
                pytest.fail(f"the study server did not start:\n{open(log_path).read()}")
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def stored(study_dir):
    """``{(participant, trial): choice}`` of every stored answer, after checking the database's integrity."""
    with contextlib.closing(sqlite3.connect(os.path.join(study_dir, "study.db"))) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT participant_id, trial, choice FROM answers").fetchall()
    assert len(rows) == len({(p, t) for p, t, _ in rows})
    return {(p, t): c for p, t, c in rows}


def started_participants(study_dir):
    """The participants whose start (they read the instructions) is stored."""
    with contextlib.closing(sqlite3.connect(os.path.join(study_dir, "study.db"))) as db:
        return {row[0] for row in db.execute("SELECT participant_id FROM participants")}


def test_killing_the_server_between_answers_loses_nothing(tiny_stimuli, tmp_path):  # noqa: F811
    study_dir = str(tmp_path / "study")
    design = build_tiny_study(tiny_stimuli, study_dir)
    port, log = free_port(), str(tmp_path / "server.log")
    url = f"http://127.0.0.1:{port}"
    plan = [(p, index, (index * 7 + n) % 10) for n, p in enumerate(design["participants"])
            for index in range(len(p["trials"]))]  # fmt: skip
    acknowledged = []

    def participants_answer(client):
        for p, index, choice in plan:
            body = {"trial": index, "set_id": p["trials"][index]["set_id"], "choice": choice}
            try:
                if index == 0:
                    client.post(f"{url}/api/{p['id']}/start").raise_for_status()
                response = client.post(f"{url}/api/{p['id']}/answer", json=body)
            except httpx.TransportError:
                return  # the server is gone
            assert response.json()["stored"] is True
            acknowledged.append((p["id"], index, choice))

    with server(study_dir, port, log) as process, httpx.Client(timeout=10) as client:
        sender = threading.Thread(target=participants_answer, args=(client,))
        sender.start()
        while len(acknowledged) < 15 and sender.is_alive():
            time.sleep(0.01)
        process.kill()  # SIGKILL, while answers are being sent
        process.wait()
        sender.join()
    answers, started = stored(study_dir), started_participants(study_dir)
    assert 15 <= len(acknowledged) < len(plan)
    assert all(answers[(p, t)] == c for p, t, c in acknowledged)  # every acknowledged answer survived
    assert len(answers) - len(acknowledged) <= 1  # at most the one in flight was stored without a reply

    with server(study_dir, port, log), httpx.Client(timeout=10) as client:
        for p, index, choice in plan:
            body = {"trial": index, "set_id": p["trials"][index]["set_id"], "choice": choice}
            if (p["id"], index) in answers:  # a participant whose answer was stored sends it again: no copy
                assert client.post(f"{url}/api/{p['id']}/answer", json=body).json()["stored"] is False
                continue
            if index == len([k for k in answers if k[0] == p["id"]]):  # resumes where the participant stopped
                page = client.get(f"{url}/p/{p['id']}").text
                # the kill may fall between a participant's start and first answer: then question 1 is next
                expected = f"Question {index + 1} of {len(p['trials'])}" if p["id"] in started else "Find the image"
                assert expected in page
            if index == 0:
                client.post(f"{url}/api/{p['id']}/start").raise_for_status()
            assert client.post(f"{url}/api/{p['id']}/answer", json=body).json()["stored"] is True
    assert stored(study_dir) == {(p["id"], index): choice for p, index, choice in plan}


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}"]:  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_window_size(1280, 900)
    yield driver
    driver.quit()


def test_a_participant_takes_the_study_in_a_real_browser(browser, tiny_stimuli, tmp_path):  # noqa: F811
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    study_dir = str(tmp_path / "study")
    design = build_tiny_study(tiny_stimuli, study_dir)
    participant = design["participants"][0]
    trials = participant["trials"]
    assert any(t["attention"] for t in trials)
    wait = WebDriverWait(browser, 30, ignored_exceptions=[StaleElementReferenceException])  # pages get replaced

    def question_shown(index):
        expected = f"Question {index + 1} of {len(trials)}"
        wait.until(lambda d: [e.text for e in d.find_elements(By.ID, "progress-text")] == [expected])
        wait.until(lambda d: d.execute_script(
            "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"))  # fmt: skip
        caption, images, _ = trial_set(design, trials[index])
        assert browser.find_element(By.ID, "caption").text == caption
        shown = [i.get_attribute("src").rsplit("/", 1)[1] for i in browser.find_elements(By.CSS_SELECTOR, "#trial img")]
        assert shown == [images[i] for i in trials[index]["order"]]  # the recorded on-screen order

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    chosen = {}
    with server(study_dir, port, str(tmp_path / "server.log")):
        browser.get(f"{base}/p/{participant['id']}")
        assert "Find the image that the description is about" in browser.find_element(By.TAG_NAME, "h1").text
        browser.find_element(By.ID, "start").click()
        for index, trial in enumerate(trials):
            question_shown(index)
            if index == 3:  # reload in the middle of the study: the same question comes back
                browser.save_screenshot(str(tmp_path / "trial.png"))
                browser.refresh()
                question_shown(index)
            right = target_position(design, trial)
            choice = right if trial["attention"] or index % 3 == 0 else (right + 1 + index) % 10
            if index % 2 == 0:
                browser.find_elements(By.CSS_SELECTOR, "#trial button.choice")[choice].click()
            else:  # keys 1-9 are the first nine images, 0 the tenth
                browser.find_element(By.TAG_NAME, "body").send_keys(str((choice + 1) % 10))
            chosen[index] = choice
        wait.until(lambda d: d.find_elements(By.ID, "end"))
        assert "You answered all 8 questions" in browser.find_element(By.ID, "end").text
        browser.refresh()  # a participant who comes back after the end sees the end page again
        assert browser.find_elements(By.ID, "end")

        browser.get(f"{base}/admin")  # not signed in: the sign-in form
        browser.find_element(By.ID, "token").send_keys("wrong")
        browser.find_element(By.CSS_SELECTOR, "form.login button").click()
        wait.until(lambda d: "not the admin token" in d.page_source)
        browser.get(f"{base}/admin/login?token={TOKEN}")  # the address serve prints: sets the cookie, redirects
        assert browser.current_url == f"{base}/admin"
        table = browser.find_element(By.ID, "conditions").text
        assert all(c in table for c in CONDITIONS) and "attention check" in table
        browser.save_screenshot(str(tmp_path / "admin.png"))
        browser.get(f"{base}/admin")  # the cookie signs the next visits in
        assert browser.find_elements(By.ID, "conditions")

    with contextlib.closing(sqlite3.connect(os.path.join(study_dir, "study.db"))) as db:
        rows = db.execute("SELECT trial, set_id, choice, chosen, correct, image_order FROM answers "
                          "WHERE participant_id = ? ORDER BY trial", (participant["id"],)).fetchall()  # fmt: skip
    assert [(r[0], r[1], r[2]) for r in rows] == [(i, t["set_id"], chosen[i]) for i, t in enumerate(trials)]
    for (_, _, choice, image, correct, order), trial in zip(rows, trials):
        assert json.loads(order) == trial["order"] and image == trial["order"][choice]
        assert correct == int(image == trial_set(design, trial)[2])

    study_main(["export", study_dir, "--bootstrap", "200"])
    with open(os.path.join(study_dir, "results", "accuracy.json")) as f:
        summary = json.load(f)
    for row in summary["conditions"]:
        mine = [i for i, t in enumerate(trials) if t["condition"] == row["condition"]]
        right = sum(chosen[i] == target_position(design, trials[i]) for i in mine)
        assert row["answers"] == len(mine) and row["accuracy"] == pytest.approx(100 * right / len(mine), abs=1e-3)
    for name in ("trial.png", "admin.png"):
        assert os.path.getsize(tmp_path / name) > 10_000
    print(f"screenshots: {tmp_path / 'trial.png'} {tmp_path / 'admin.png'}")
