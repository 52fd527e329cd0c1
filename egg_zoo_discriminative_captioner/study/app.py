"""The study's web app: ``create_app(study_dir, admin_token)`` returns a FastAPI application.

Pages (all links inside them are relative, so the app works unchanged behind a reverse proxy at a sub-path):

    GET  /p/{participant}          instructions, then the participant's next unanswered trial, then the end page
    POST /api/{participant}/start  the participant has read the instructions
    POST /api/{participant}/answer {"trial": int, "set_id": str, "choice": 0-9}: stores one answer, once
    GET  /images/{name}            an image of the study (only names listed in the design)
    GET  /admin?token=...          progress per condition and per participant
    GET  /admin/progress.json?token=...

A request that names an unknown participant, a trial or set not assigned to them, a choice out of range or a
malformed body gets a 4xx reply and writes nothing.
"""

import os
import secrets
from collections import Counter
from importlib import resources

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from . import store
from .design import IMAGE_TYPES, load_design, trial_set
from .stimuli import N_IMAGES

PACKAGE_FILES = resources.files(__package__)


class Answer(BaseModel):
    """The body of an answer: the trial's position in the participant's sequence, its set, the position clicked."""

    model_config = ConfigDict(extra="forbid")
    trial: StrictInt = Field(ge=0)
    set_id: StrictStr = Field(min_length=1, max_length=200)
    choice: StrictInt = Field(ge=0, le=N_IMAGES - 1)


def progress(design, answers, started):
    """Progress per condition (answered / assigned trials, accuracy so far) and per participant."""
    assigned, answered, correct = Counter(), Counter(), Counter()
    for participant in design["participants"]:
        for trial in participant["trials"]:
            assigned[_condition_label(trial)] += 1
    per_participant = {p["id"]: {"answered": 0, "attention_errors": 0} for p in design["participants"]}
    for answer in answers:
        label = _condition_label(answer)
        answered[label] += 1
        correct[label] += answer["correct"]
        per_participant[answer["participant_id"]]["answered"] += 1
        per_participant[answer["participant_id"]]["attention_errors"] += answer["attention"] and not answer["correct"]
    conditions = [
        {
            "condition": label,
            "assigned": assigned[label],
            "answered": answered[label],
            "percent": 100.0 * answered[label] / max(assigned[label], 1),
            "accuracy": 100.0 * correct[label] / answered[label] if answered[label] else None,
        }
        for label in design["conditions"] + (["attention check"] if assigned["attention check"] else [])
    ]
    participants = [
        {
            "id": p["id"],
            "list": p["list"],
            "trials": len(p["trials"]),
            "started": p["id"] in started,
            **per_participant[p["id"]],
        }
        for p in design["participants"]
    ]
    return {
        "conditions": conditions,
        "participants": participants,
        "started": sum(p["started"] for p in participants),
        "finished": sum(p["answered"] == p["trials"] for p in participants),
    }


def _condition_label(trial):
    return "attention check" if trial["attention"] else trial["condition"]


def create_app(study_dir, admin_token=None):
    """The app serving the study in ``study_dir`` (its design must exist; the database is created if missing)."""
    design = load_design(study_dir)
    participants = {p["id"]: p for p in design["participants"]}
    images_dir = os.path.join(os.path.abspath(study_dir), "images")
    image_names = {
        name for entries in (design["sets"], design["attention_sets"]) for e in entries.values() for name in e["images"]
    }
    db_path = store.database_path(study_dir)
    store.create(db_path)
    admin_token = admin_token or secrets.token_urlsafe(24)

    app = FastAPI(title="Image retrieval study", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.admin_token = admin_token
    app.mount("/static", StaticFiles(directory=str(PACKAGE_FILES / "static")), name="static")
    templates = Jinja2Templates(directory=str(PACKAGE_FILES / "templates"))

    def open_store():
        connection = store.connect(db_path)
        try:
            yield store.Store(connection)
        finally:
            connection.close()

    def participant_of(participant_id: str):
        if participant_id not in participants:
            raise HTTPException(404, "unknown participant id")
        return participants[participant_id]

    def check_token(token: str = Query("")):
        if not secrets.compare_digest(token.encode(), admin_token.encode()):
            raise HTTPException(403, "a valid admin token is required (?token=...)")

    def page(request, name, status_code=200, **context):
        root = "../" * (request.url.path.count("/") - 1) or "./"  # relative links: any proxy prefix works
        return templates.TemplateResponse(request, name, {"root": root, **context}, status_code=status_code)

    @app.exception_handler(HTTPException)
    async def html_or_json_error(request, error):
        if request.url.path.startswith("/p/"):
            return page(request, "message.html", error.status_code, title="Not found", message=error.detail)
        return await http_exception_handler(request, error)

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request):
        return page(request, "message.html", title="Image retrieval study",
                    message="Please open the personal link you were given to take part.")  # fmt: skip

    @app.get("/p/{participant_id}", response_class=HTMLResponse)
    def participant_page(request: Request, participant=Depends(participant_of), db=Depends(open_store)):
        trials = participant["trials"]
        if not db.started(participant["id"]):
            return page(request, "instructions.html", participant=participant, n_trials=len(trials))
        answered = db.answered(participant["id"])
        if len(answered) == len(trials):
            return page(request, "end.html", participant=participant, n_trials=len(trials))
        index = len(answered)  # answers are accepted only in order, so the first gap is the next trial
        trial = trials[index]
        caption, images, _ = trial_set(design, trial)
        shown = [images[i] for i in trial["order"]]
        keys = [str((k + 1) % 10) for k in range(N_IMAGES)]
        return page(request, "trial.html", participant=participant, index=index, n_trials=len(trials),
                    trial=trial, caption=caption, images=list(zip(keys, shown)))  # fmt: skip

    @app.post("/api/{participant_id}/start")
    def start(participant=Depends(participant_of), db=Depends(open_store)):
        db.start(participant["id"])
        return {"started": True}

    @app.post("/api/{participant_id}/answer")
    def answer(body: Answer, participant=Depends(participant_of), db=Depends(open_store)):
        trials = participant["trials"]
        if body.trial >= len(trials):
            raise HTTPException(404, f"trial {body.trial} is not assigned to this participant")
        trial = trials[body.trial]
        if trial["set_id"] != body.set_id:
            raise HTTPException(409, f"set {body.set_id!r} is not this participant's trial {body.trial}")
        if not db.started(participant["id"]):
            raise HTTPException(409, "read the instructions first")
        answered = db.answered(participant["id"])
        if body.trial > len(answered):
            raise HTTPException(409, f"answer trial {len(answered)} first")
        row = answered.get(body.trial)
        stored = False
        if row is None:  # a copy sent at the same time may still win the insert: then this one stores nothing
            target = trial_set(design, trial)[2]
            row, stored = db.add_answer(store.answer_record(participant["id"], body.trial, trial, target, body.choice))
        if row["choice"] != body.choice:
            raise HTTPException(409, f"trial {body.trial} is already answered with another choice")
        return {"stored": stored, "trial": body.trial, "answered": len(answered) + stored}

    @app.get("/images/{name}")
    def image(name: str):
        if name not in image_names:  # only the study's own files: no other name, no path, is ever opened
            raise HTTPException(404, "no such image")
        media_type = IMAGE_TYPES[os.path.splitext(name)[1]]
        return FileResponse(os.path.join(images_dir, name), media_type=media_type,
                            headers={"Cache-Control": "private, max-age=86400"})  # fmt: skip

    @app.get("/admin", response_class=HTMLResponse, dependencies=[Depends(check_token)])
    def admin(request: Request, db=Depends(open_store)):
        state = progress(design, db.all_answers(), db.participants_started())
        return page(request, "admin.html", study=design, **state)

    @app.get("/admin/progress.json", dependencies=[Depends(check_token)])
    def admin_json(db=Depends(open_store)):
        return progress(design, db.all_answers(), db.participants_started())

    return app

