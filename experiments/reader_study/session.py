"""A reader's side of the study: the current trial under opaque ids, answers checked and stored.

The browser only ever learns ids: a trial's id and one id per side, each an HMAC of the reader,
the trial's index and the side under a secret kept beside the answers (so ids survive a restart
but say nothing, and cannot be worked out from the config). Only the current trial's two images
can be fetched."""
from __future__ import annotations

import hmac
import os
import re
import secrets
import threading
from datetime import datetime, timezone
from pathlib import Path

from .answers import AnswerStore
from .plan import SIDES, ReaderPlan, Trial
from .stimuli import CLEAN, Stimuli

PSEUDONYM = re.compile(r"[A-Za-z0-9_-]{1,40}")
CHOICES = (*SIDES, "none")  # "none": the reader has no idea; the trial's `guess` side counts


def load_secret(path: Path) -> bytes:
    """The study's id secret, made once (written atomically) and read back after a restart."""
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(secrets.token_hex(32))
        os.replace(temporary, path)
    return bytes.fromhex(path.read_text().strip())


class ReaderSessions:
    """Trials, images and answers of every reader of one study."""

    def __init__(self, plan: ReaderPlan, stimuli: Stimuli, store: AnswerStore, secret: bytes, zoom: int):
        self.plan, self.stimuli, self.store, self.secret, self.zoom = plan, stimuli, store, secret, zoom
        self.plans: dict[str, list[Trial]] = {}
        self.images: dict[str, tuple[str, int]] = {}  # image id -> (set key or CLEAN, test position)
        self.lock = threading.Lock()

    def _id(self, reader: str, index: int, part: str) -> str:
        return hmac.new(self.secret, f"{reader}\0{index}\0{part}".encode(), "sha256").hexdigest()[:32]

    def trials(self, reader: str) -> list[Trial]:
        if not PSEUDONYM.fullmatch(reader or ""):
            raise ValueError("pseudonym: 1 to 40 letters, digits, '-' or '_'")
        if reader not in self.plans:
            self.plans[reader] = self.plan.trials(reader)
        return self.plans[reader]

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

    def answer(self, reader: str, trial_id: str, choice: str) -> dict:
        """Store the answer to the reader's current trial and return the new state. The answer to
        the trial just answered (a browser that never got the reply) is taken once only."""
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
