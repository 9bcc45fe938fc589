"""Scripted readers in headless Chromium on a real reader-study server over a real study's stored sets:
one who knows the answer detects every attack, one who clicks at random and one who sees only the
DOM (no pixels) stay at chance, and nothing a page, its URLs or its image responses carry tells the
two sides apart."""
import io
import random
import re
import threading
import urllib.request

import numpy as np
import pytest
from PIL import Image

from experiments.reader_study.analysis import by_reader, wilson

TRIALS_PER_SET = 15
SIDE_MARKUP = "(() => ['left', 'right'].map((id) => document.getElementById(id).outerHTML))()"


@pytest.fixture(scope="module")
def served(stored_study):
    """The reader study of the stored study, served in this process on a free port."""
    from experiments.reader_study.readers import ReaderStudy
    from experiments.reader_study.server import ReaderServer

    study = ReaderStudy(stored_study, trials_per_set=TRIALS_PER_SET)
    server = ReaderServer(study.sessions, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield study, server.url
    server.shutdown()
    server.server_close()


def play(chromium, url: str, reader: str, decide, how: str = "click") -> list[str]:
    """Answer every trial with `decide(index, chromium)`; the choices in order."""
    chromium.begin(url, reader)
    choices = []
    while (index := chromium.trial_index()) is not None:
        assert index == len(choices)
        choices.append(decide(index, chromium))
        chromium.answer(choices[-1], how)
    return choices


def fetched(url: str) -> tuple[dict, bytes]:
    with urllib.request.urlopen(url) as reply:
        return {k: v for k, v in reply.headers.items() if k != "Date"}, reply.read()


def first_rate(study, reader: str) -> tuple[int, int]:
    row = by_reader(study.store.frame()).set_index("reader").loc[reader]
    return int(row["detected"]), int(row["trials"])


def test_an_oracle_detects_every_attack_and_the_images_are_the_stored_ones(served, chromium):
    study, url = served
    plan = study.sessions.trials("oracle")

    def decide(index, page):
        return plan[index].attacked  # the server's plan, read on the test side only

    choices = play(chromium, url, "oracle", decide, how="key")
    assert len(choices) == study.plan.length == 3 * TRIALS_PER_SET + 5
    answers = study.store.frame().query("reader == 'oracle'")
    assert list(answers["choice"]) == choices and answers["correct"].all()
    assert first_rate(study, "oracle") == (3 * TRIALS_PER_SET, 3 * TRIALS_PER_SET)
    assert by_reader(answers).iloc[0]["consistency"] == 1.0

    # the two images of a trial, fetched as the browser does, decode to the stored pixels
    from attacks import AdversarialSetCache
    from experiments.execution import read_data
    from experiments.execution.evaluation import load_test_set
    test = load_test_set(read_data(study.cfg).datamodule("d1"))
    clean = np.concatenate([b.numpy() for b in test.batches()])
    cache = AdversarialSetCache(f"{study.cfg.output_dir}/adversarial_sets")
    state = study.sessions.state("pixel-check")
    trial = study.sessions.trials("pixel-check")[0]
    for side in ("left", "right"):
        pixels = np.asarray(Image.open(io.BytesIO(fetched(url.rstrip("/") + state["trial"][side])[1])).convert("RGB"))
        source = cache.load(trial.set.key, test.batches())[0].numpy()[trial.sample] if side == trial.attacked else clean[trial.sample]
        expected = np.round(np.clip(source, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
        assert np.array_equal(pixels, expected)


def test_a_random_clicker_is_at_chance(served, chromium):
    study, url = served
    rng = random.Random(7)
    play(chromium, url, "random", lambda index, page: rng.choice(["left", "right"]))
    detected, trials = first_rate(study, "random")
    lo, hi = wilson(detected, trials)
    assert lo < 0.5 < hi, (detected, trials)


def test_a_reader_without_pixels_is_at_chance_and_the_sides_look_alike(served, chromium):
    """The blind reader answers from the DOM alone (the markup, the ids in the URLs); every side's
    markup, URL form, response headers and byte size are checked to be the same for both sides."""
    study, url = served
    names = {t.set.key for t in study.sessions.trials("blind")} | {t.set.attack for t in study.sessions.trials("blind")}
    sizes = set()

    def decide(index, page):
        dom = page.evaluate("document.documentElement.outerHTML")
        for name in names:
            assert name not in dom
        left, right = page.evaluate(SIDE_MARKUP)
        ids = [re.search(r'src="[^"]*/image/([0-9a-f]+)"', side)[1] for side in (left, right)]
        assert all(len(i) == 32 for i in ids) and ids[0] != ids[1]
        assert left.replace(ids[0], "ID").replace('id="left"', "") == right.replace(ids[1], "ID").replace('id="right"', "")
        (left_headers, left_body), (right_headers, right_body) = (
            fetched(f"{url}image/{i}") for i in ids)
        assert left_headers == right_headers and len(left_body) == len(right_body)
        sizes.add(len(left_body))
        if index % 9 == 4:
            return "none"
        return "left" if ids[0] < ids[1] else "right"  # anything the DOM offers is as good as this

    play(chromium, url, "blind", decide)
    assert len(sizes) == 1  # one byte size for every image of the study, clean or attacked
    detected, trials = first_rate(study, "blind")
    lo, hi = wilson(detected, trials)
    assert lo < 0.5 < hi, (detected, trials)
