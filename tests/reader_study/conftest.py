"""A tiny real study with stored adversarial sets, and a headless Chromium driven over the DevTools
protocol (on a pipe: no extra packages), for the reader-study tests."""
import fcntl
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
NO_CHROMIUM = ("Chromium not installed; for the reader-study browser tests install it with "
               "`sudo apt-get install -y chromium` (Debian; Ubuntu: chromium-browser)")
# one surrogate, three sets: two epsilons of FGSM and one of iterative FGSM
STUDY = ("train.max_epochs=1", "surrogates=[a]", "targets=[a]",
         "attacks=[{name: fgsm, eps: [0.004, 0.03]}, {name: ifgsm, eps: [0.03], params: {alpha: 0.01, steps: 3}}]")


def pytest_collection_modifyitems(config, items):
    """A test that drives Chromium is skipped, before any fixture is built, where there is none."""
    for item in items:
        here = item.path.is_relative_to(Path(__file__).parent)
        if CHROMIUM is None and here and "chromium" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason=NO_CHROMIUM))


@pytest.fixture(scope="session")
def stored_study(smoke_config, tmp_path_factory):
    """The config of a smoke study that has run: its parent run and three adversarial sets are stored."""
    from experiments import run_study

    cfg = smoke_config(tmp_path_factory.mktemp("reader_study"), *STUDY)
    run_study(cfg)
    return cfg


class Chromium:
    """One headless Chromium page, driven over the DevTools protocol on a pipe."""

    def __init__(self):
        to_chrome, self._commands = os.pipe()
        self._replies, from_chrome = os.pipe()
        # copies above the low numbers, so that moving them to 3 and 4 in the child overwrites neither
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in (to_chrome, from_chrome)]
        os.close(to_chrome)
        os.close(from_chrome)

        def wire():  # Chromium reads commands on fd 3 and writes replies on fd 4
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--window-size=1200,800", "--no-first-run", "about:blank"],
            preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in ends:
            os.close(fd)
        self._next, self._waiting, self._lock = 0, {}, threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable", session=True)

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._replies, 65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                reply = json.loads(message)
                if "id" in reply:
                    self._waiting[reply["id"]].append(reply)

    def send(self, method: str, session: bool = False, **params) -> dict:
        with self._lock:
            self._next += 1
            ident, box = self._next, []
            self._waiting[ident] = box
            message = {"id": ident, "method": method, "params": params}
            if session:
                message["sessionId"] = self.session
            os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while not box:
            if time.monotonic() > deadline:
                raise TimeoutError(method)
            time.sleep(0.005)
        if "error" in box[0]:
            raise RuntimeError(f"{method}: {box[0]['error']}")
        return box[0]["result"]

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(expression)
            time.sleep(0.02)
        return value

    def open(self, url: str) -> None:
        self.send("Page.navigate", session=True, url=url)
        self.wait_for("document.readyState === 'complete' && !!document.getElementById('login')")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        x, y = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                             ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)

    def key(self, key: str) -> None:
        """Press and release a key (`key` as in KeyboardEvent.key; Enter submits a form)."""
        text = {"Enter": "\r"}.get(key, key if len(key) == 1 else "")
        codes = {"Enter": 13, "ArrowLeft": 37, "ArrowRight": 39}
        press = {"key": key, "windowsVirtualKeyCode": codes.get(key, ord(key.upper()[0]))}
        self.send("Input.dispatchKeyEvent", session=True, type="keyDown", text=text, **press)
        self.send("Input.dispatchKeyEvent", session=True, type="keyUp", **press)

    def type(self, text: str) -> None:
        self.send("Input.insertText", session=True, text=text)

    # a reader's actions on the study page
    def begin(self, url: str, reader: str) -> None:
        """Open the page, type the pseudonym, press Enter; return once the first trial shows."""
        self.open(url)
        self.click("#reader")
        self.type(reader)
        self.key("Enter")
        self.wait_for("document.body.dataset.state === 'ready'")

    def trial_index(self) -> int | None:
        """The shown trial's index (from the progress line), None when the reader is done."""
        state = self.wait_for("['ready', 'done'].includes(document.body.dataset.state) && document.body.dataset.state")
        if state == "done":
            return None
        return int(re.match(r"Trial (\d+) of", self.evaluate("document.getElementById('progress').textContent"))[1]) - 1

    def answer(self, choice: str, how: str = "click", wait: bool = True) -> None:
        """Pick `left`, `right` or `none` with the mouse or the keyboard."""
        if how == "key":
            self.key({"left": "ArrowLeft", "right": "ArrowRight", "none": "n"}[choice])
        else:
            self.click(f"#{choice}")
        if wait:
            self.wait_for("document.body.dataset.state !== 'waiting'")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._commands)


@pytest.fixture
def chromium():
    browser = Chromium()
    yield browser
    browser.close()
