"""The playground end to end: `musicvae serve` driven in a real headless Chromium.

Starts the real command on a free port of 127.0.0.1, then, as a user would: load
the page, sample, sample again with another seed (the piano roll changes), move
the danceability slider (an edit appears beside the original), press play (the
audio context runs and the playhead moves), interpolate, and download a MIDI file
that parses back to the melody shown. Screenshots go to $MUSICVAE_TEST_ARTIFACTS
(default test-artifacts/). `scripts/test.sh` installs Debian's chromium where it is
missing; without any browser the test is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import make_controllable_checkpoint

from jax_musicvae.data.midi_io import read_tokens
from jax_musicvae.data.representations import get_representation

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("MUSICVAE_TEST_ARTIFACTS", "test-artifacts"))

pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="no Chromium on PATH (scripts/test.sh installs Debian's `chromium` as root)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, generation_dataset):
    checkpoint = make_controllable_checkpoint(tmp_path_factory.mktemp("browser") / "run")
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    command = [
        sys.executable,
        "-m",
        "jax_musicvae.cli",
        "serve",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(generation_dataset),
        "--split",
        "test",
        "--port",
        str(port),
    ]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/info", timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"musicvae serve did not start:\n{log.read_text()}")
            time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(timeout=20)


def roll(page, selector: str) -> str:
    return page.eval_on_selector(selector, "canvas => canvas.toDataURL()")


def test_the_page_in_a_real_browser(server, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=BROWSER, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server)
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        assert "conditioning none" in page.inner_text("#model-info")

        # Sample with a requested danceability; the seed and command are shown.
        page.fill("#seed", "0")
        page.check("#sample-dance-on")
        page.fill("#sample-dance", "0.8")
        page.click("#sample-btn")
        page.wait_for_selector("#samples .card:nth-child(4)")
        assert "seed 0" in page.inner_text("#sample-provenance")
        assert "--danceability 0.8" in page.inner_text("#sample-provenance")
        before = roll(page, "#samples .card:nth-child(1) canvas")
        page.fill("#seed", "1")
        page.click("#sample-btn")
        page.wait_for_function(
            "() => document.querySelector('#sample-provenance').textContent.includes('seed 1')"
        )
        assert roll(page, "#samples .card:nth-child(1) canvas") != before

        # A held-out window becomes the current melody; the slider edits it.
        page.click("#held-out-btn")
        # The first sample is already the current melody: wait for the held-out one.
        page.wait_for_function(
            "() => document.querySelector('#melody-note').textContent.includes('held-out window')"
        )
        original = roll(page, "#current .card canvas")
        page.fill("#edit-dance", "0.95")
        page.dispatch_event("#edit-dance", "input")
        page.wait_for_function(
            "() => (document.querySelector('#edited .card .title') || {}).textContent"
            " === 'requested 0.95'"
        )
        assert "tokens kept" in page.inner_text("#edited .card .meta")
        assert roll(page, "#edited .card canvas") != original
        page.screenshot(path=str(ARTIFACTS / "playground_edit.png"), full_page=True)

        # Play: a real click starts the audio context and moves the playhead.
        page.click("#current .card .play")
        page.wait_for_function("() => Number(document.body.dataset.playhead || 0) > 1")
        assert page.evaluate("document.body.dataset.audio") == "running"
        assert page.inner_text("#current .card .play") == "■ stop"
        page.click("#current .card .play")
        assert page.evaluate("document.body.dataset.playing") == "false"

        # Interpolate from the held-out window to the second sample in 4 steps.
        page.click("#samples .card:nth-child(2) .as-end")
        page.fill("#steps", "4")
        page.click("#interp-btn")
        page.wait_for_selector("#strip .card:nth-child(4)")
        assert page.locator("#strip .card").count() == 4
        page.screenshot(path=str(ARTIFACTS / "playground_interpolation.png"), full_page=True)

        # Download the last interpolation step and parse it.
        tokens = page.eval_on_selector("#strip .card:nth-child(4)", "c => c.melody.tokens")
        with page.expect_download() as download:
            page.click("#strip .card:nth-child(4) .download")
        path = tmp_path / download.value.suggested_filename
        download.value.save_as(path)
        assert path.name == "interpolate_03.mid"
        parsed = read_tokens(path, get_representation("melody90"), len(tokens))
        np.testing.assert_array_equal(parsed, tokens)

        # A bad upload is reported on the page, and the page keeps working.
        bad = tmp_path / "notes.txt.mid"
        bad.write_text("not a midi file")
        page.set_input_files("#upload", str(bad))
        page.wait_for_selector("#error:not([hidden])")
        assert "not a MIDI file" in page.inner_text("#error")
        page.screenshot(path=str(ARTIFACTS / "playground_error.png"), full_page=True)
        page.click("#sample-btn")
        page.wait_for_selector("#error", state="hidden")
        browser.close()
    assert errors == []
