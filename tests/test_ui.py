"""The web app in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium): upload photos,
train, render, download; a video as the subject; two tabs, a reload. Screenshots of each tab go to the test's
temporary folder (the docs' screenshots, on the miniature world: python -m cdvideo.apps.ui.screenshots)."""

import urllib.request

import pytest
from conftest import FIXTURES, release_openmp_team

from cdvideo.apps.ui.drive import (
    CHROMIUM,
    DRIVER,
    chromium,
    choose,
    click,
    fill,
    served,
    tab,
    upload,
    wait_for,
    wait_text,
)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    with served(root, "tiny") as url:
        release_openmp_team()  # as served: the jobs' threads hold the only OpenMP team
        yield url, root


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and DRIVER):
        pytest.fail("the browser test needs Debian's chromium and chromium-driver (scripts/test.sh installs them)")
    with chromium(tmp_path_factory.mktemp("chrome")) as driver:
        yield driver


def test_train_render_download_in_the_browser(app, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, root = app
    browser.get(url)
    wait_for(browser, "#train-files input[type=file]")
    upload(browser, "train-files", sorted((FIXTURES / "dog").glob("*.jpg")))
    fill(browser, "train-class", "dog", "textarea")
    fill(browser, "train-steps", "2")
    click(browser, "train-start")
    wait_text(browser, "train-status", "2 steps: done")
    browser.save_screenshot(str(tmp_path / "ui-train.png"))

    browser.refresh()  # a reload finds the tab's job again
    wait_text(browser, "train-status", "2 steps: done", timeout=60)
    browser.switch_to.new_window("tab")  # another tab sees its own jobs
    browser.get(url)
    wait_text(browser, "train-status", "No job yet", timeout=60)
    browser.close()
    browser.switch_to.window(browser.window_handles[0])

    weights = next(root.glob("runs/*/weights.safetensors"))
    tab(browser, "Animate")
    upload(browser, "anim-upload", [weights])
    fill(browser, "anim-prompts", "a sks dog running on the beach", "textarea")
    fill(browser, "anim-steps", "2")
    click(browser, "anim-render")
    wait_text(browser, "anim-status", "done")
    wait_for(browser, "#anim-video video[src]")
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#anim-downloads a[href]")]
    mp4 = next(h for h in links if ".mp4" in h)
    with urllib.request.urlopen(mp4, timeout=30) as r:
        assert b"ftyp" in r.read(64)  # an MP4 came down
    browser.save_screenshot(str(tmp_path / "ui-animate.png"))

    tab(browser, "Drift")
    choose(browser, "drift-files", str(weights))
    click(browser, "drift-go")
    wait_text(browser, "drift-status", "done")
    wait_for(browser, "#drift-plot img")
    browser.save_screenshot(str(tmp_path / "ui-drift.png"))
    tab(browser, "Compose")
    browser.save_screenshot(str(tmp_path / "ui-compose.png"))


def test_a_video_as_the_subject_in_the_browser(app, browser, tmp_path):
    import numpy as np
    from test_inputs import scene, write_video

    url, root = app
    write_video(tmp_path / "rex.mp4", [scene(s) for s in range(5) for _ in range(4)])
    browser.get(url)
    wait_for(browser, "#train-files input[type=file]")
    upload(browser, "train-files", [tmp_path / "rex.mp4"])
    fill(browser, "train-steps", "1")
    click(browser, "train-start")  # this tab still shows the first test's job, "2 steps: done", until the new one
    wait_text(browser, "train-status", "1 step: done")
    frames = list(root.glob("runs/*/subject_frames/sks/*.png"))
    assert len(frames) >= 3 and np.all([f.stat().st_size > 0 for f in frames])


def test_a_stopping_server_cancels_its_jobs_and_saves_them(tmp_path):
    import json
    import threading

    from cdvideo.apps.ui.jobs import JobManager

    mgr, started = JobManager(tmp_path), threading.Event()

    def slow(job, m):  # a job that checks its Cancel between steps, as training does
        started.set()
        while True:
            m.check(job)
            threading.Event().wait(0.05)
    running = mgr.submit("tab", "train", "slow", slow)
    queued = mgr.submit("tab", "train", "next", lambda j, m: [])
    assert started.wait(10)
    mgr.shutdown(timeout=10)
    saved = {j: json.loads((tmp_path / "jobs" / f"{j}.json").read_text())["status"] for j in (running.id, queued.id)}
    assert saved == {running.id: "cancelled", queued.id: "cancelled"}
    assert JobManager(tmp_path).for_owner("tab")[0].status == "cancelled"  # a restart finds them so
