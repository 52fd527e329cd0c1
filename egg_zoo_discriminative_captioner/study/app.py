"""The study's web app: ``create_app(study_dir, admin_token)`` returns a FastAPI application.

Pages (all links inside them are relative, so the app works unchanged behind a reverse proxy at a sub-path):

    GET  /p/{participant}          instructions, then the participant's next unanswered trial, then the end page
    POST /api/{participant}/start  the participant has read the instructions
    POST /api/{participant}/answer {"trial": int, "set_id": str, "choice": 0-9}: stores one answer, once
    GET  /images/{name}            an image of the study (only names listed in the design)
    GET  /admin/login?token=...    checks the token, sets the admin cookie and redirects to /admin (303)
    POST /admin/login              the same from the sign-in form (token=... as a form field)
    GET  /admin                    progress per condition and per participant (the sign-in form without the cookie)
    GET  /admin/progress.json      the same as JSON

The admin pages accept the cookie, ``Authorization: Bearer TOKEN`` (for scripts) or ``?token=``; the token never
reaches the access log (``AccessLogRedaction``).  The cookie holds a value derived from the token, not the token.

A request that names an unknown participant, a trial or set not assigned to them, a choice out of range or a
malformed body gets a 4xx reply and writes nothing; a body over ``MAX_BODY_BYTES`` gets 413 and is not read
further; no error reply quotes what was sent.
"""

import hashlib
import hmac
import logging
import os
import re
import secrets
from collections import Counter
from importlib import resources
from urllib.parse import parse_qs, quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from . import store
from .design import IMAGE_TYPES, load_design, trial_set
from .stimuli import N_IMAGES

PACKAGE_FILES = resources.files(__package__)
MAX_BODY_BYTES = 16 * 1024  # an answer is under 200 bytes; the sign-in form under 1 KiB
ADMIN_COOKIE = "study_admin"


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


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413, and no more of it is read.

    A declared ``Content-Length`` over the limit is refused before the app runs; a body without one (chunked) is
    counted as it arrives, and the read that crosses the limit raises the 413 instead of returning the bytes.
    """

    def __init__(self, app, max_bytes=MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"detail": self.message}, status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # FastAPI passes an HTTPException from the body read through
                    raise HTTPException(413, self.message)
            return message

        await self.app(scope, limited_receive, send)

    @property
    def message(self):
        return f"request body too large (at most {self.max_bytes} bytes)"


class AccessLogRedaction(logging.Filter):
    """Replaces ``token=...`` and each of ``secrets`` (as sent or percent-encoded) by REDACTED in log records.

    Installed on the ``uvicorn.access`` logger, whose records carry the path and query string as an argument.
    """

    TOKEN_PARAMETER = re.compile(r"(?<![^?&\s\"])(token=)[^&\s\"]*", re.IGNORECASE)

    def __init__(self, secrets=()):
        super().__init__()
        self.secrets = sorted({v for s in secrets if s for v in (s, quote(s, safe=""))}, key=len, reverse=True)

    def redact(self, text):
        text = self.TOKEN_PARAMETER.sub(r"\1REDACTED", text)
        for secret in self.secrets:
            text = text.replace(secret, "REDACTED")
        return text

    def filter(self, record):
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def admin_session(admin_token):
    """The admin cookie's value: derived from the token, so a leaked cookie does not reveal the token."""
    return hmac.new(admin_token.encode(), b"discritune study admin session", hashlib.sha256).hexdigest()


def _same(given, expected):
    return secrets.compare_digest(given.encode(), expected.encode())


def _is_https(request):
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _problems(error, most=5):
    """Where a request failed validation and why, without the values that were sent (FastAPI's 422 quotes them)."""
    problems = []
    for e in error.errors()[:most]:
        loc = e.get("loc", ())
        if e.get("type") == "extra_forbidden":  # the last part is a key the client chose: not repeated either
            loc = loc[:-1]
        problems.append(f"{'.'.join(map(str, loc))}: {e.get('msg', 'invalid')}")
    more = len(error.errors()) - most
    return "invalid request: " + "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


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
    session = admin_session(admin_token)

    app = FastAPI(title="Image retrieval study", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
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

    def check_admin(request: Request):
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        if not (_same(request.cookies.get(ADMIN_COOKIE, ""), session)
                or _same(bearer if scheme.lower() == "bearer" else "", admin_token)
                or _same(request.query_params.get("token", ""), admin_token)):  # fmt: skip
            raise HTTPException(403, "a valid admin token is required: open the admin link that serve printed")

    def sign_in(request, token):
        if not _same(token, admin_token):
            return page(request, "login.html", 403, message="That is not the admin token.")
        response = RedirectResponse("../admin", status_code=303)  # relative: right under any proxy prefix
        # No Path attribute: the browser scopes the cookie to this directory (/admin, or /study/admin behind a proxy)
        response.set_cookie(ADMIN_COOKIE, session, path=None, httponly=True, samesite="strict",
                            secure=_is_https(request))  # fmt: skip
        return response

    def page(request, name, status_code=200, **context):
        root = "../" * (request.url.path.count("/") - 1) or "./"  # relative links: any proxy prefix works
        return templates.TemplateResponse(request, name, {"root": root, **context}, status_code=status_code)

    @app.exception_handler(HTTPException)
    async def html_or_json_error(request, error):
        if request.url.path.startswith("/p/"):
            return page(request, "message.html", error.status_code, title="Not found", message=error.detail)
        if request.url.path == "/admin":
            return page(request, "login.html", error.status_code, message="You are not signed in.")
        return await http_exception_handler(request, error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, error):
        return JSONResponse({"detail": _problems(error)}, status_code=422)

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
            raise HTTPException(409, f"that set is not this participant's trial {body.trial}")
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
        # the trial is stored now, by this request or by a copy that won the insert (another tab)
        return {"stored": stored, "trial": body.trial, "answered": max(len(answered), body.trial + 1)}

    @app.get("/images/{name}")
    def image(name: str):
        if name not in image_names:  # only the study's own files: no other name, no path, is ever opened
            raise HTTPException(404, "no such image")
        media_type = IMAGE_TYPES[os.path.splitext(name)[1]]
        return FileResponse(os.path.join(images_dir, name), media_type=media_type,
                            headers={"Cache-Control": "private, max-age=86400"})  # fmt: skip

    @app.get("/admin/login", response_class=HTMLResponse)
    def admin_link(request: Request):
        if "token" not in request.query_params:
            return page(request, "login.html", message="You are not signed in.")
        return sign_in(request, request.query_params["token"])

    @app.post("/admin/login", response_class=HTMLResponse)
    async def admin_form(request: Request):
        form = parse_qs((await request.body()).decode("ascii", errors="replace"))  # BodyLimit caps the body
        return sign_in(request, form.get("token", [""])[0])

    @app.get("/admin", response_class=HTMLResponse, dependencies=[Depends(check_admin)])
    def admin(request: Request, db=Depends(open_store)):
        state = progress(design, db.all_answers(), db.participants_started())
        return page(request, "admin.html", study=design, **state)

    @app.get("/admin/progress.json", dependencies=[Depends(check_admin)])
    def admin_json(db=Depends(open_store)):
        return progress(design, db.all_answers(), db.participants_started())

    return app

