"""A reader's side of the study: the current trial under opaque ids, answers checked and stored.

The browser only ever learns ids: a trial's id and one id per side, each an HMAC of the reader,
the trial's index and the side under a secret kept beside the answers (so ids survive a restart
but say nothing, and cannot be worked out from the config). The same secret draws the attacked
sides and signs each session's token, which every answer must carry. Only the current trial's two
images can be fetched. Pseudonyms are limited: to the operator's list when there is one, else to
`max_new` pseudonyms per server that have no answers yet."""
from __future__ import annotations

import hmac
import os
import re
import secrets
import threading
from datetime import datetime, timezone
from pathlib import Path

from medcommon.atomic import replaced

from .answers import AnswerStore
from .limits import MAX_NEW_READERS, PSEUDONYM
from .plan import SIDES, ReaderPlan, Trial
from .stimuli import CLEAN, Stimuli

CHOICES = (*SIDES, "none")  # "none": the reader has no idea; the trial's `guess` side counts
SECRET_FORM = re.compile(r"[0-9a-f]{64}")
TOKEN_FORM = re.compile(r"[0-9a-f]{32}\.[0-9a-f]{32}")


class RefusedReader(PermissionError):
    """A pseudonym this server does not take (not on the list, or over the cap)."""


def load_secret(path: Path) -> bytes:
    """The study's secret, made once (written atomically, readable by its owner only) and read back
    after a restart; a file that is not one is refused, naming it (a new secret would change
    every reader's ids and sides)."""
    if not path.exists():
        with replaced(path, temporary=path.with_name(f".{path.name}.{os.getpid()}.tmp")) as temporary:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_hex(32))
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot be read as the reader study's secret ({err})") from None
    if not SECRET_FORM.fullmatch(text):
        raise ValueError(f"{path}: not a reader-study secret (64 lowercase hex digits expected)")
    return bytes.fromhex(text)


class ReaderSessions:
    """Trials, images and answers of every reader of one study."""

    def __init__(self, plan: ReaderPlan, stimuli: Stimuli, store: AnswerStore, secret: bytes, zoom: int,
                 readers: frozenset[str] | None = None, max_new: int = MAX_NEW_READERS):
        self.plan, self.stimuli, self.store, self.secret, self.zoom = plan, stimuli, store, secret, zoom
        self.readers, self.max_new, self.new = readers, max_new, 0
        self.plans: dict[str, list[Trial]] = {}
        self.images: dict[str, tuple[str, int]] = {}  # image id -> (set key or CLEAN, test position)
        self.lock = threading.Lock()

    def _id(self, reader: str, index: int, part: str) -> str:
        return hmac.new(self.secret, f"{reader}\0{index}\0{part}".encode(), "sha256").hexdigest()[:32]

    def _token(self, reader: str, nonce: str) -> str:
        return f"{nonce}.{self._id(reader, 0, 'token ' + nonce)}"

    def trials(self, reader: str) -> list[Trial]:
        """The reader's plan; raises ValueError for a malformed pseudonym, RefusedReader for one not taken."""
        if not PSEUDONYM.fullmatch(reader or ""):
            raise ValueError("pseudonym: 1 to 40 letters, digits, '-' or '_'")
        if reader not in self.plans:
            if self.readers is not None and reader not in self.readers:
                raise RefusedReader(f"pseudonym {reader!r} is not on this study's list of readers (--readers)")
            if self.readers is None and not self.store.answered(reader):
                if self.new >= self.max_new:
                    raise RefusedReader(f"pseudonym {reader!r}: this server takes no more new pseudonyms "
                                        f"(--max-new-readers {self.max_new} reached)")
                self.new += 1
            self.plans[reader] = self.plan.trials(reader, self.secret)
        return self.plans[reader]

    def start(self, reader: str) -> dict:
        """A new session: the reader's state and a token that every answer of the session must carry
        (signed under the secret, so an open page's token still holds after a restart)."""
        return {**self.state(reader), "token": self._token(reader, secrets.token_hex(16))}

    def check_token(self, reader: str, token: str) -> None:
        """Raise PermissionError unless `token` is one that `start` issued to `reader`."""
        nonce = token.partition(".")[0]
        if not (TOKEN_FORM.fullmatch(token) and hmac.compare_digest(token, self._token(reader, nonce))):
            raise PermissionError("missing or wrong session token (start the session again)")

    def state(self, reader: str) -> dict:
        """Progress and the reader's current trial (ids only; None once every trial is answered)."""
        with self.lock:
            trials, done = self.trials(reader), self.store.answered(reader)
            state = {"done": done, "total": len(trials), "zoom": self.zoom, "trial": None}
            if done < len(trials):
                trial, sides = trials[done], {}
                for side in SIDES:
                    image = self._id(reader, done, side)
                    self.images[image] = (trial.set.key if side == trial.attacked else CLEAN, trial.sample)
                    sides[side] = f"/image/{image}"
                state["trial"] = {"id": self._id(reader, done, "trial"), **sides}
            return state

    def answer(self, reader: str, token: str, trial_id: str, choice: str) -> dict:
        """Store the answer to the reader's current trial and return the new state. The answer to
        the trial just answered (a browser that never got the reply) is taken once only."""
        self.check_token(reader, token)
        if choice not in CHOICES:
            raise ValueError(f"choice: {choice!r} is not one of {', '.join(CHOICES)}")
        with self.lock:
            trials, done = self.trials(reader), self.store.answered(reader)
            if done and hmac.compare_digest(trial_id, self._id(reader, done - 1, "trial")):
                pass
            elif done < len(trials) and hmac.compare_digest(trial_id, self._id(reader, done, "trial")):
                trial = trials[done]
                picked = trial.guess if choice == "none" else choice
                self.store.append({
                    "reader": reader, "trial": done, "attack": trial.set.attack, "eps": trial.set.eps,
                    "surrogate": trial.set.surrogate, "seed": trial.set.seed, "set_key": trial.set.key,
                    "sample": trial.sample, "attacked": trial.attacked, "choice": choice, "picked": picked,
                    "correct": picked == trial.attacked, "repeat_of": trial.repeat_of,
                    "answered_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")})
                for side in SIDES:
                    self.images.pop(self._id(reader, done, side), None)
            else:
                raise LookupError("this trial is not the reader's current one (answered elsewhere?)")
        return self.state(reader)

    def image(self, image_id: str) -> bytes | None:
        with self.lock:
            found = self.images.get(image_id)
        return None if found is None else self.stimuli.image(*found)
