"""The human retrieval study: design, stimuli reading, the web API (FastAPI's TestClient) and the export.

The stimuli are built here from the tiny synthetic world, as ``evaluate`` exports them: each target with its 9
nearest neighbours under the world's CLIP, one caption per condition, and the retriever's cosine per image.
"""

import asyncio
import contextlib
import csv
import json
import os
import re
import sqlite3
from collections import Counter
from urllib.parse import urljoin

import numpy as np
import pytest
from PIL import Image

from egg.zoo.discriminative_captioner.data import encode_images
from egg.zoo.discriminative_captioner.retrievers.clip import ClipRetriever
from egg.zoo.discriminative_captioner.runtime.clip_loading import load_clip
from egg.zoo.discriminative_captioner.runtime.errors import UsageError
from egg.zoo.discriminative_captioner.study.__main__ import main as study_main
from egg.zoo.discriminative_captioner.study.design import assign, load_design, trial_set
from egg.zoo.discriminative_captioner.study.export import CHANCE, bootstrap_accuracy, chart, export
from egg.zoo.discriminative_captioner.study.stimuli import read_stimuli
from egg.zoo.discriminative_captioner.synthetic import load_world

CONDITIONS = ["human", "descriptive", "mismatched"]
TOKEN = "test-admin-token"


def write_stimuli(directory, split, retriever, embeddings, sets, conditions):
    """Writes ``sets`` (``(image indices, target, {condition: caption})``) in the stimuli format."""
    os.makedirs(os.path.join(directory, "images"), exist_ok=True)
    entries = []
    for number, (indices, target, captions) in enumerate(sets):
        set_id = f"s{number:04d}"
        paths = []
        for k, index in enumerate(indices):
            paths.append(f"images/{set_id}_{k}.png")
            split.images[index].save(os.path.join(directory, paths[-1]))
        texts = retriever.encode_texts([captions[c] for c in conditions])  # [C, D]
        scores = (texts @ embeddings[list(indices)].T).tolist()  # [C, 10] cosines
        entries.append({
            "set_id": set_id, "images": paths, "image_ids": [split.ids[i] for i in indices], "target": target,
            "captions": captions, "retriever_scores": dict(zip(conditions, scores)),
        })  # fmt: skip
    stimuli = {"format": "discritune-stimuli/1", "dataset": "synthetic", "split": "test",
               "source": "nearest_neighbours", "conditions": conditions, "sets": entries}  # fmt: skip
    with open(os.path.join(directory, "stimuli.json"), "w") as f:
        json.dump(stimuli, f, indent=1)


@pytest.fixture(scope="session")
def tiny_stimuli(world_cache, tmp_path_factory):
    """``(stimuli_dir, attention_dir)``: 12 hard-distractor sets x 3 conditions, and 6 easy attention sets."""
    world = load_world(world_cache, "tiny", progress=False)
    split, descriptive = world.split("test"), world.descriptive_references("test")
    model, transform = load_clip(os.path.join(world.directory, "retriever.pt"), "--clip_model")
    retriever = ClipRetriever(model, transform)
    embeddings = encode_images(split, retriever.image_transform, retriever.encode_images)  # [N, D]
    rng = np.random.default_rng(0)
    targets = rng.choice(len(split), 18, replace=False)
    hard = []
    for target in targets[:12]:
        neighbours = [int(i) for i in (embeddings @ embeddings[target]).argsort(descending=True) if i != target][:9]
        indices = [int(target)] + neighbours
        order = rng.permutation(10)  # the target somewhere in the set's fixed order
        other = int(rng.choice([i for i in range(len(split)) if i not in indices]))
        captions = {"human": split.references[target][0], "descriptive": descriptive[target][0],
                    "mismatched": descriptive[other][0]}  # fmt: skip
        hard.append(([indices[i] for i in order], int(np.argmax(order == 0)), captions))
    easy = []
    for target in targets[12:]:  # random distractors and a caption that names the target exactly
        distractors = rng.choice([i for i in range(len(split)) if i != target], 9, replace=False)
        easy.append(([int(target)] + distractors.tolist(), 0, {"check": descriptive[target][0]}))
    root = tmp_path_factory.mktemp("stimuli")
    write_stimuli(str(root / "hard"), split, retriever, embeddings, hard, CONDITIONS)
    write_stimuli(str(root / "easy"), split, retriever, embeddings, easy, ["check"])
    return str(root / "hard"), str(root / "easy")


def build_tiny_study(tiny_stimuli, study_dir, *options):
    """Builds the tiny study: 6 sets per participant (2 blocks x 3 rotations), 2 attention checks each."""
    stimuli_dir, attention_dir = tiny_stimuli
    study_main(["build", stimuli_dir, str(study_dir), "--sets_per_participant", "6", "--attention_checks",
                attention_dir, "--attention_per_participant", "2", *options])  # fmt: skip
    return load_design(str(study_dir))


@pytest.fixture
def tiny_study(tiny_stimuli, tmp_path):
    study_dir = tmp_path / "study"
    return str(study_dir), build_tiny_study(tiny_stimuli, study_dir)


def target_position(design, trial):
    """The on-screen position of the trial's target."""
    return trial["order"].index(trial_set(design, trial)[2])


def stored_rows(study_dir):
    """Everything in the database, for before/after comparisons."""
    with contextlib.closing(sqlite3.connect(os.path.join(study_dir, "study.db"))) as db:
        return (db.execute("SELECT * FROM answers ORDER BY participant_id, trial").fetchall(),
                db.execute("SELECT * FROM participants ORDER BY participant_id").fetchall())  # fmt: skip


@pytest.fixture
def client(tiny_study):
    from fastapi.testclient import TestClient

    from egg.zoo.discriminative_captioner.study.app import create_app

    with TestClient(create_app(tiny_study[0], TOKEN)) as test_client:
        yield test_client


# --- design -------------------------------------------------------------------------------------------------


def test_latin_square_assignment_is_balanced_and_seeded():
    set_ids = [f"s{i}" for i in range(30)]
    attention_ids = [f"a{i}" for i in range(8)]
    ids = [f"p{i}" for i in range(18)]  # two full replications of 3 blocks x 3 rotations
    participants = assign(set_ids, CONDITIONS, ids, 10, attention_ids, 3, seed=5)
    seen = Counter()
    for p in participants:
        main = [t for t in p["trials"] if not t["attention"]]
        checks = [t for t in p["trials"] if t["attention"]]
        assert len(main) == 10 and len(checks) == 3 and len({t["set_id"] for t in checks}) == 3
        assert len({t["set_id"] for t in main}) == 10  # each set once per participant, in one condition
        per_condition = Counter(t["condition"] for t in main)
        assert sorted(per_condition.values()) == [3, 3, 4]
        assert all(sorted(t["order"]) == list(range(10)) for t in p["trials"])
        seen.update((t["set_id"], t["condition"]) for t in main)
    # every set in every condition, once per replication
    assert seen == Counter({(s, c): 2 for s in set_ids for c in CONDITIONS})
    for first in range(0, 18, 3):  # any 3 consecutive participants of a block see each of its sets in all conditions
        group = participants[first : first + 3]
        sets = {t["set_id"] for t in group[0]["trials"] if not t["attention"]}
        for s in sets:
            assert {t["condition"] for p in group for t in p["trials"] if t["set_id"] == s} == set(CONDITIONS)
    assert assign(set_ids, CONDITIONS, ids, 10, attention_ids, 3, seed=5) == participants
    assert assign(set_ids, CONDITIONS, ids, 10, attention_ids, 3, seed=6) != participants
    orders = [tuple(t["order"]) for p in participants for t in p["trials"]]
    assert len(set(orders)) > 0.9 * len(orders)  # the on-screen orders are random, not a fixed pattern


def test_build_writes_the_design_images_and_links(tiny_stimuli, tiny_study):
    study_dir, design = tiny_study
    stimuli = read_stimuli(tiny_stimuli[0])
    assert design["conditions"] == CONDITIONS and design["lists"] == 6 and len(design["participants"]) == 6
    for participant in design["participants"]:
        assert len(participant["trials"]) == 8 and sum(t["attention"] for t in participant["trials"]) == 2
    for s in stimuli.sets:  # the images are byte-for-byte the stimuli's, under names that say nothing of the set
        entry = design["sets"][s.set_id]
        assert entry["target"] == s.target and entry["captions"] == s.captions
        for source, name in zip(s.images, entry["images"]):
            with open(source, "rb") as a, open(os.path.join(study_dir, "images", name), "rb") as b:
                assert a.read() == b.read()
            assert s.set_id not in name
    with open(os.path.join(study_dir, "participants.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["participant_id"] for r in rows] == [p["id"] for p in design["participants"]]
    assert rows[0]["link"] == f"/p/{rows[0]['participant_id']}"
    again = build_tiny_study(tiny_stimuli, os.path.join(os.path.dirname(study_dir), "again"))
    assert again == design  # the same seed gives the same study


def test_bad_stimuli_and_options_end_with_one_line(tiny_stimuli, tmp_path, tiny_study):
    stimuli_dir, attention_dir = tiny_stimuli
    with pytest.raises(UsageError, match="stimuli.json not found"):
        read_stimuli(str(tmp_path))
    with open(os.path.join(stimuli_dir, "stimuli.json")) as f:
        good = json.load(f)

    def broken(change, match):
        data = json.loads(json.dumps(good))
        change(data)
        directory = tmp_path / f"broken{len(os.listdir(tmp_path))}"
        directory.mkdir()
        os.symlink(os.path.join(stimuli_dir, "images"), directory / "images")
        (directory / "stimuli.json").write_text(json.dumps(data))
        with pytest.raises(UsageError, match=match):
            read_stimuli(str(directory))

    broken(lambda d: d.update(format="other/1"), "expected \"format\"")
    broken(lambda d: d["sets"][0]["images"].pop(), "must list 10 paths")
    broken(lambda d: d["sets"][0]["images"].__setitem__(0, "../../etc/passwd"), "is not inside")
    broken(lambda d: d["sets"][0]["images"].__setitem__(0, "images/missing.png"), "not found")
    broken(lambda d: d["sets"][0].update(target=10), "\"target\" must be an index")
    broken(lambda d: d["sets"][0]["captions"].pop("human"), "needs a caption for each condition")
    broken(lambda d: d["sets"][1].update(set_id=d["sets"][0]["set_id"]), "appears twice")
    broken(lambda d: d["sets"][0]["retriever_scores"]["human"].pop(), "retriever_scores")

    with pytest.raises(UsageError, match="already exists and is not empty"):
        build_tiny_study(tiny_stimuli, tiny_study[0])
    with pytest.raises(UsageError, match="unknown condition 'pretrained'"):
        build_tiny_study(tiny_stimuli, tmp_path / "new", "--conditions", "human", "pretrained")
    with pytest.raises(UsageError, match="the attention stimuli have 6 sets"):
        build_tiny_study(tiny_stimuli, tmp_path / "new", "--attention_per_participant", "7")
    assert not (tmp_path / "new").exists()  # nothing left behind by a failed build
    corrupted = tmp_path / "corrupted"
    corrupted.mkdir()
    os.makedirs(corrupted / "images")
    for name in os.listdir(os.path.join(stimuli_dir, "images")):
        os.symlink(os.path.join(stimuli_dir, "images", name), corrupted / "images" / name)
    os.remove(corrupted / "images" / "s0003_4.png")
    (corrupted / "images" / "s0003_4.png").write_bytes(b"\x89PNG not really")
    (corrupted / "stimuli.json").write_text(json.dumps(good))
    with pytest.raises(UsageError, match="s0003_4.png is corrupted"):
        study_main(["build", str(corrupted), str(tmp_path / "new")])
    assert not (tmp_path / "new").exists()


# --- the web API --------------------------------------------------------------------------------------------


def answer(client, participant, index, choice):
    trial = participant["trials"][index]
    return client.post(f"/api/{participant['id']}/answer",
                       json={"trial": index, "set_id": trial["set_id"], "choice": choice})  # fmt: skip


def test_a_participant_reads_the_instructions_answers_and_resumes(client, tiny_study):
    study_dir, design = tiny_study
    participant = design["participants"][0]
    page = client.get(f"/p/{participant['id']}")
    assert page.status_code == 200 and "Find the image that the description is about" in page.text
    assert client.post(f"/api/{participant['id']}/start").json() == {"started": True}
    for index in range(3):
        page = client.get(f"/p/{participant['id']}")
        caption, images, _ = trial_set(design, participant["trials"][index])
        assert f"Question {index + 1} of 8" in page.text and caption in page.text
        shown = [images[i] for i in participant["trials"][index]["order"]]
        assert [page.text.index(f"images/{name}") for name in shown] == sorted(
            page.text.index(f"images/{name}") for name in shown
        )  # the images appear in the recorded order
        assert answer(client, participant, index, index).json() == {"stored": True, "trial": index,
                                                                     "answered": index + 1}  # fmt: skip
    # a reload (or a new visit) continues at the first unanswered trial, without the instructions
    page = client.get(f"/p/{participant['id']}")
    assert "Question 4 of 8" in page.text and "Find the image" not in page.text
    rows, _ = stored_rows(study_dir)
    assert [(r[1], r[6]) for r in rows] == [(0, 0), (1, 1), (2, 2)]
    for index in range(3, 8):
        assert answer(client, participant, index, 9).status_code == 200
    page = client.get(f"/p/{participant['id']}")
    assert "Thank you" in page.text and "all 8 questions" in page.text
    rows, _ = stored_rows(study_dir)
    for row, trial in zip(rows, participant["trials"]):  # what is stored is what was shown and chosen
        assert json.loads(row[5]) == trial["order"] and row[7] == trial["order"][row[6]]
        assert row[9] == int(row[7] == trial_set(design, trial)[2])


def test_an_answer_sent_twice_is_stored_once(client, tiny_study):
    study_dir, design = tiny_study
    participant = design["participants"][1]
    client.post(f"/api/{participant['id']}/start")
    assert answer(client, participant, 0, 4).json()["stored"] is True
    before = stored_rows(study_dir)
    assert answer(client, participant, 0, 4).json() == {"stored": False, "trial": 0, "answered": 1}
    assert answer(client, participant, 0, 5).status_code == 409  # a different second answer is refused
    assert stored_rows(study_dir) == before and len(before[0]) == 1


def test_a_copy_from_another_tab_that_loses_the_race_still_counts_the_answer(client, tiny_study, monkeypatch):
    """Two tabs send the same answer at once: both find the trial unanswered, the other tab's insert wins.

    The losing copy stores nothing, yet its reply must count the trial as answered (it used to say
    ``answered: 0`` for trial 0: benchmarks/study_load.py found it with two tabs).
    """
    from egg.zoo.discriminative_captioner.study import store

    study_dir, design = tiny_study
    participant = design["participants"][3]
    client.post(f"/api/{participant['id']}/start")
    add_answer = store.Store.add_answer

    def other_tab_first(self, record):
        with contextlib.closing(store.connect(store.database_path(study_dir))) as other:
            assert add_answer(store.Store(other), dict(record))[1]  # the other tab's copy is stored first
        return add_answer(self, record)

    monkeypatch.setattr(store.Store, "add_answer", other_tab_first)
    assert answer(client, participant, 0, 3).json() == {"stored": False, "trial": 0, "answered": 1}
    assert [(r[0], r[1], r[6]) for r in stored_rows(study_dir)[0]] == [(participant["id"], 0, 3)]


def test_every_bad_request_is_refused_and_writes_nothing(client, tiny_study):
    study_dir, design = tiny_study
    first, second = design["participants"][:2]
    client.post(f"/api/{first['id']}/start")
    assert answer(client, first, 0, 1).status_code == 200
    url = f"/api/{first['id']}/answer"
    trial = first["trials"][1]
    other_set = next(s for s in design["sets"] if s not in {t["set_id"] for t in first["trials"]})
    bad = [
        ("post", "/api/nobody/answer", {"json": {"trial": 1, "set_id": trial["set_id"], "choice": 0}}, 404),
        ("post", "/api/nobody/start", {}, 404),
        ("post", url, {"json": {"trial": 8, "set_id": trial["set_id"], "choice": 0}}, 404),
        ("post", url, {"json": {"trial": 1, "set_id": other_set, "choice": 0}}, 409),  # not assigned to them
        ("post", url, {"json": {"trial": 1, "set_id": first["trials"][2]["set_id"], "choice": 0}}, 409),
        ("post", url, {"json": {"trial": 2, "set_id": first["trials"][2]["set_id"], "choice": 0}}, 409),  # ahead
        ("post", url, {"json": {"trial": 1, "set_id": trial["set_id"], "choice": 10}}, 422),
        ("post", url, {"json": {"trial": 1, "set_id": trial["set_id"], "choice": -1}}, 422),
        ("post", url, {"json": {"trial": 1, "set_id": trial["set_id"], "choice": "3"}}, 422),
        ("post", url, {"json": {"trial": 1, "set_id": trial["set_id"], "choice": 2.5}}, 422),
        ("post", url, {"json": {"trial": -1, "set_id": trial["set_id"], "choice": 0}}, 422),
        ("post", url, {"json": {"trial": 1, "set_id": trial["set_id"]}}, 422),
        ("post", url, {"json": {"trial": 1, "set_id": trial["set_id"], "choice": 0, "correct": 1}}, 422),
        ("post", url, {"json": [1, trial["set_id"], 0]}, 422),
        ("post", url, {"content": b"trial=1&choice=0", "headers": {"content-type": "text/plain"}}, 422),
        ("post", url, {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
        ("get", url, {}, 405),
        ("post", f"/api/{second['id']}/answer", {"json": {"trial": 0, "set_id": second["trials"][0]["set_id"],
                                                           "choice": 0}}, 409),  # instructions not read yet
        ("get", "/p/nobody", {}, 404),
        ("get", "/p/..%2Fstudy.json", {}, 404),
    ]  # fmt: skip
    before = stored_rows(study_dir)
    for method, path, kwargs, status in bad:
        response = getattr(client, method)(path, **kwargs)
        assert response.status_code == status, (path, kwargs, response.text)
        assert stored_rows(study_dir) == before, (path, kwargs)
    assert client.get(f"/p/{first['id']}").text.count("Question 2 of 8") == 2  # title and header: still trial 2


def test_images_are_served_only_from_the_study(client, tiny_study):
    study_dir, design = tiny_study
    name = design["sets"]["s0000"]["images"][0]
    response = client.get(f"/images/{name}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    with open(os.path.join(study_dir, "images", name), "rb") as f:
        assert response.content == f.read()
    secret = open(os.path.join(study_dir, "study.json")).read()[:50]
    for path in ["/images/../study.json", "/images/..%2Fstudy.json", "/images/%2e%2e/study.json",
                 "/images/study.db", "/images/" + name.replace(".png", ".jpg"), "/static/../study.json",
                 "/static/..%2F..%2Fstudy.json", "/images/%2Fetc%2Fpasswd", "/images//etc/passwd"]:  # fmt: skip
        response = client.get(path)
        assert response.status_code in (404, 400), path
        assert secret not in response.text and "root:" not in response.text
    assert client.get("/static/study.css").status_code == 200


def test_the_admin_page_needs_the_token_and_shows_progress(client, tiny_study):
    _, design = tiny_study
    assert client.get("/admin").status_code == 403
    assert client.get("/admin", params={"token": "wrong"}).status_code == 403
    assert client.get("/admin/progress.json", params={"token": TOKEN[:-1]}).status_code == 403
    participant = design["participants"][2]
    client.post(f"/api/{participant['id']}/start")
    for index in range(4):
        answer(client, participant, index, target_position(design, participant["trials"][index]))
    state = client.get("/admin/progress.json", params={"token": TOKEN}).json()
    answered = Counter(t["condition"] or "attention check" for t in participant["trials"][:4])
    for row in state["conditions"]:
        assert row["answered"] == answered[row["condition"]]
        assert row["assigned"] == 12  # each of the 12 sets once per condition; 6 participants x 2 checks
        if row["answered"]:
            assert row["accuracy"] == 100.0
    assert state["started"] == 1 and state["finished"] == 0
    page = client.get("/admin", params={"token": TOKEN})
    assert page.status_code == 200 and all(c in page.text for c in CONDITIONS) and participant["id"] in page.text


def test_signing_in_sets_an_http_only_cookie_that_opens_the_admin_pages(client):
    assert client.get("/admin").status_code == 403 and 'name="token"' in client.get("/admin").text  # a sign-in form
    for path in ["/admin", "/admin/login"]:  # behind a proxy at /study/, the form still posts to the app
        links = re.findall(r'(?:href|src|action)="([^"]*)"', client.get(path).text)
        proxied = [urljoin(f"https://example.org/study{path}", link) for link in links]
        assert "https://example.org/study/admin/login" in proxied
        assert all(p.startswith("https://example.org/study/") for p in proxied), links
    assert client.get("/admin/progress.json").status_code == 403
    refused = client.get("/admin/login", params={"token": "wrong"}, follow_redirects=False)
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    signed_in = client.get("/admin/login", params={"token": TOKEN}, follow_redirects=False)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "../admin"  # relative: any sub-path
    cookie = signed_in.headers["set-cookie"]
    attributes = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")[1:]}
    assert "httponly" in attributes and attributes["samesite"].lower() == "samesite=strict"
    assert "secure" not in attributes and "path" not in attributes  # plain http here; path: the admin directory
    assert TOKEN not in cookie  # the cookie holds a value derived from the token
    assert client.get("/admin").status_code == 200 and client.get("/admin/progress.json").status_code == 200
    client.cookies.clear()
    assert client.get("/admin").status_code == 403
    behind_tls = client.get("/admin/login", params={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"},
                            follow_redirects=False)  # fmt: skip
    assert "secure" in behind_tls.headers["set-cookie"].lower()
    client.cookies.clear()
    form = client.post("/admin/login", content=f"token={TOKEN}",
                       headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert form.status_code == 200 and "Study progress" in form.text  # redirected to the admin page, signed in
    client.cookies.clear()
    scripted = client.get("/admin/progress.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert scripted.status_code == 200 and "conditions" in scripted.json()


def test_a_large_body_is_refused_unread_and_no_error_quotes_the_request(client, tiny_study):
    study_dir, design = tiny_study
    participant = design["participants"][0]
    client.post(f"/api/{participant['id']}/start")
    url = f"/api/{participant['id']}/answer"
    before = stored_rows(study_dir)
    huge = json.dumps({"trial": 0, "set_id": "x" * (5 << 20), "choice": 0})
    response = client.post(url, content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413 and len(response.content) < 200
    marker = "MARKER-d41d8cd9"
    malformed = [
        {"json": {"trial": 0, "set_id": participant["trials"][0]["set_id"], "choice": marker}},
        {"json": {"trial": marker, "set_id": participant["trials"][0]["set_id"], "choice": 0}},
        {"json": {"trial": 0, "set_id": participant["trials"][0]["set_id"], "choice": 0, marker: marker}},
        {"content": '{"trial": 0, "' + marker, "headers": {"content-type": "application/json"}},
        {"json": {"trial": 0, "set_id": marker, "choice": 0}},  # a set not assigned: 409, without the set id
    ]
    for kwargs in malformed:
        response = client.post(url, **kwargs)
        assert response.status_code in (409, 422) and marker not in response.text, (kwargs, response.text)
    problem = client.post(url, json={"trial": 0, "set_id": participant["trials"][0]["set_id"], "choice": marker})
    assert problem.json() == {"detail": "invalid request: body.choice: Input should be a valid integer"}
    assert stored_rows(study_dir) == before

    # a body streamed without a Content-Length is cut off once it passes the limit: the rest is never read
    chunks, sent = [], []

    async def receive():
        chunks.append(1)
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}  # an endless body

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": url, "raw_path": url.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}  # fmt: skip
    asyncio.run(client.app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert len(chunks) == 17  # 16 KiB accepted, the 17th chunk crosses the limit
    assert stored_rows(study_dir) == before


def test_each_image_is_labelled_with_its_number_and_key(client, tiny_study):
    participant = tiny_study[1]["participants"][0]
    client.post(f"/api/{participant['id']}/start")
    page = client.get(f"/p/{participant['id']}").text
    expected = [f"image {n} (key {n % 10})" for n in range(1, 11)]  # the tenth image's key is 0
    assert re.findall(r'aria-label="(image [^"]*)"', page) == expected
    assert re.findall(r'alt="(image [^"]*)"', page) == expected


# --- results ------------------------------------------------------------------------------------------------


def retriever_choice(design, trial, stimuli):
    """The on-screen position of the image the retriever ranks highest for the trial's caption."""
    scores = stimuli[trial["set_id"]]["retriever_scores"][trial["condition"]]
    return trial["order"].index(int(np.argmax(scores)))


def test_participants_who_pick_the_retrievers_choice_reproduce_its_p_at_1(client, tiny_stimuli, tiny_study):
    """Acceptance: simulated participants answering with the retriever's top image give the retriever's P@1."""
    study_dir, design = tiny_study
    with open(os.path.join(tiny_stimuli[0], "stimuli.json")) as f:
        stimuli = {s["set_id"]: s for s in json.load(f)["sets"]}
    expected = {  # the retriever's own P@1 per condition on the same sets, straight from the stimuli
        c: 100.0 * np.mean([np.argmax(s["retriever_scores"][c]) == s["target"] for s in stimuli.values()])
        for c in CONDITIONS
    }
    for participant in design["participants"]:  # every set in every condition once
        client.post(f"/api/{participant['id']}/start")
        for index, trial in enumerate(participant["trials"]):
            choice = target_position(design, trial) if trial["attention"] else retriever_choice(design, trial, stimuli)
            assert answer(client, participant, index, choice).json()["stored"]
    study_main(["export", study_dir, "--bootstrap", "500"])
    results = os.path.join(study_dir, "results")
    with open(os.path.join(results, "accuracy.json")) as f:
        summary = json.load(f)
    assert summary["excluded_participants"] == []
    for row in summary["conditions"]:
        assert row["accuracy"] == pytest.approx(expected[row["condition"]], abs=1e-3)
        assert row["answers"] == 12 and row["sets"] == 12 and row["participants"] == 6
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
    with open(os.path.join(results, "accuracy.csv")) as f:
        table = {r["condition"]: float(r["accuracy"]) for r in csv.DictReader(f)}
    assert table == pytest.approx(expected, abs=1e-3)
    with open(os.path.join(results, "answers.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 * 8 and sum(r["attention"] == "1" for r in rows) == 12
    for row in rows:  # answer by answer, too: right exactly where the retriever's top image is the target
        if row["attention"] == "0":
            top = int(np.argmax(stimuli[row["set_id"]]["retriever_scores"][row["condition"]]))
            assert row["correct"] == str(int(top == stimuli[row["set_id"]]["target"])) and row["chosen"] == str(top)
    assert "| descriptive |" in open(os.path.join(results, "accuracy.md")).read()
    with Image.open(os.path.join(results, "accuracy.png")) as png:
        assert png.format == "PNG" and png.size[0] > 300


def test_export_excludes_participants_who_fail_the_attention_checks(client, tiny_study):
    study_dir, design = tiny_study
    careless, careful = design["participants"][:2]
    for participant in (careless, careful):
        client.post(f"/api/{participant['id']}/start")
        for index, trial in enumerate(participant["trials"]):
            right = target_position(design, trial)
            choice = (right + 1) % 10 if participant is careless else right  # careless: always wrong
            answer(client, participant, index, choice)
    summary = export(study_dir)
    assert summary["excluded_participants"] == [careless["id"]]
    assert all(r["accuracy"] in (None, 100.0) for r in summary["conditions"])  # only the careful participant
    assert sum(r["answers"] for r in summary["conditions"]) == 6
    with open(os.path.join(study_dir, "results", "answers.csv")) as f:
        excluded = {r["participant_id"]: r["excluded"] for r in csv.DictReader(f)}
    assert excluded == {careless["id"]: "1", careful["id"]: "0"}
    # with a more lenient rule, nobody is excluded
    assert study_main(["export", study_dir, "--max_attention_errors", "2", "--output_dir",
                       os.path.join(study_dir, "lenient")]) is None  # fmt: skip
    with open(os.path.join(study_dir, "lenient", "accuracy.json")) as f:
        assert json.load(f)["excluded_participants"] == []


def test_export_refuses_to_overwrite_earlier_results_unless_told(client, tiny_study):
    study_dir, design = tiny_study
    participant = design["participants"][0]
    client.post(f"/api/{participant['id']}/start")
    for index, trial in enumerate(participant["trials"]):
        answer(client, participant, index, target_position(design, trial))
    results = os.path.join(study_dir, "results")
    study_main(["export", study_dir, "--bootstrap", "50"])
    with open(os.path.join(results, "accuracy.md"), "w") as f:
        f.write("an earlier export\n")
    with open(os.path.join(results, "notes.txt"), "w") as f:
        f.write("the experimenter's own notes\n")
    with pytest.raises(UsageError) as refused:
        study_main(["export", study_dir, "--bootstrap", "50"])
    assert results in str(refused.value) and "--overwrite" in str(refused.value) and "\n" not in str(refused.value)
    assert open(os.path.join(results, "accuracy.md")).read() == "an earlier export\n"  # untouched
    study_main(["export", study_dir, "--bootstrap", "50", "--overwrite"])
    assert "| human |" in open(os.path.join(results, "accuracy.md")).read()
    assert open(os.path.join(results, "notes.txt")).read() == "the experimenter's own notes\n"  # not an export's
    assert sorted(os.listdir(results)) == sorted(["answers.csv", "accuracy.csv", "accuracy.md", "accuracy.json",
                                                  "accuracy.png", "notes.txt"])  # no temporary files left


def test_the_chart_keeps_its_labels_clear_of_whiskers_and_the_chance_line(tmp_path):
    rows = [("human", 98.0, 95.0, 100.0), ("ClipCap", 22.0, 9.0, 35.0), ("DiscriTune", 5.0, 1.0, 10.0),
            ("typical", 45.0, 37.0, 53.0)]  # near the top, an interval reaching the base, below chance
    summary = {"confidence": 0.95, "conditions": [{"condition": c, "accuracy": a, "ci_low": low, "ci_high": high}
                                                  for c, a, low, high in rows]}  # fmt: skip
    import matplotlib.pyplot as plt
    from matplotlib.transforms import Bbox

    figure = chart(summary)
    axis = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    pixels = axis.transData.transform
    chance = [c for c in axis.collections if c.get_linestyle()[0][1] and len(c.get_segments()) == 1]
    assert len(chance) == 1 and {y for _, y in chance[0].get_segments()[0]} == {CHANCE}  # dashed, at 10%
    (x0, y), (x1, _) = pixels(chance[0].get_segments()[0])
    labels = {t.get_text(): t.get_window_extent(renderer) for t in axis.texts}
    assert sorted(labels) == sorted(["98.0", "22.0", "5.0", "45.0", "chance\n10%"])
    assert not labels["chance\n10%"].overlaps(Bbox.from_extents(x0, y - 1, x1, y + 1))
    cap = 5 * figure.dpi / 72  # the caps are 5 pt long: a whisker with its cap lies within ±5 pt of its centre
    for position, (name, value, low, high) in enumerate(rows):
        (wx, wy0), (_, wy1) = pixels([(position, low), (position, high)])
        whisker = Bbox.from_extents(wx - cap, wy0 - 2, wx + cap, wy1 + 2)
        assert not labels[f"{value:.1f}"].overlaps(whisker), name
    assert labels["45.0"].y1 < pixels((3, 37.0))[1] and labels["5.0"].y0 > pixels((2, 10.0))[1]  # inside; above
    figure.savefig(tmp_path / "chart.png")
    plt.close(figure)
    with Image.open(tmp_path / "chart.png") as png:
        assert png.format == "PNG" and png.size[0] > 300


def test_export_without_answers_is_a_usage_error(tiny_study):
    with pytest.raises(UsageError, match="no answers to summarise"):
        study_main(["export", tiny_study[0]])
    assert not os.path.exists(os.path.join(tiny_study[0], "results", "accuracy.json"))


def test_two_way_bootstrap_reflects_participant_and_set_variation():
    rng = np.random.default_rng(0)
    participants, sets = np.repeat(np.arange(20), 30), np.tile(np.arange(30), 20)
    homogeneous = (rng.random(600) < 0.5).astype(float)
    skill = np.where(np.arange(20) < 10, 0.1, 0.9)  # half the participants nearly always right, half nearly never
    heterogeneous = (rng.random(600) < skill[participants]).astype(float)
    groups = np.zeros(600, dtype=int)
    acc, low, high = bootstrap_accuracy(participants, sets, homogeneous, groups, 1, 1000, np.random.default_rng(1))
    assert acc[0] == pytest.approx(100 * homogeneous.mean()) and low[0] < acc[0] < high[0]
    binomial = 100 * 1.96 * np.sqrt(0.25 / 600)
    assert binomial < (high[0] - low[0]) / 2 < 2 * binomial  # crossed resampling: wider than trials alone
    acc2, low2, high2 = bootstrap_accuracy(participants, sets, heterogeneous, groups, 1, 1000,
                                           np.random.default_rng(1))  # fmt: skip
    assert (high2[0] - low2[0]) > 2 * (high[0] - low[0])  # between-participant variation widens the interval
    again = bootstrap_accuracy(participants, sets, homogeneous, groups, 1, 1000, np.random.default_rng(1))
    assert np.array_equal(again[1], low) and np.array_equal(again[2], high)
