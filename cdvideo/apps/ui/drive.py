"""The web app driven in a real headless Chromium (Debian's chromium + chromium-driver, through selenium): the
browser test and the docs' screenshots (`python -m cdvideo.apps.ui.screenshots`) click through it with these."""

from __future__ import annotations

import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cdvideo.errors import CdvideoError

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(root: Path, model: str) -> Iterator[str]:
    """The web app over `root` (base model `model`) on a free local port, in this process: its URL. Closed, its jobs
    stopped, on exit."""
    from cdvideo.apps.ui.app import build  # lazy: gradio

    app = build(root, model)
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                       allowed_paths=[str(root)])
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.close()
        app.mgr.shutdown()


@contextmanager
def chromium(profile: Path, size: tuple[int, int] = (1400, 2000)) -> Iterator:
    """A headless Chromium with its profile in `profile`, quit on exit."""
    if not (CHROMIUM and DRIVER):
        raise CdvideoError("driving the web app needs Debian's chromium and chromium-driver "
                           "(apt-get install chromium chromium-driver; scripts/test.sh installs them)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise CdvideoError("driving the web app needs selenium: pip install 'cdvideo[test]'") from None
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--window-size={size[0]},{size[1]}", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, css: str, timeout: float = 60) -> None:
    """Until an element matching `css` is on the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: d.find_elements(By.CSS_SELECTOR, css))


def text_of(driver, elem_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, elem_id).text


def wait_text(driver, elem_id: str, text: str, timeout: float = 240) -> str:
    """Until #elem_id shows `text` (or an error, which fails here); its text."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.5).until(
        lambda d: text in text_of(d, elem_id) or "error" in text_of(d, elem_id))
    got = text_of(driver, elem_id)
    assert text in got, got
    return got


def fill(driver, elem_id: str, value: str, tag: str = "input") -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} {tag}")
    box.clear()
    box.send_keys(value)


def upload(driver, elem_id: str, paths: list[Path]) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys("\n".join(map(str, paths)))


def choose(driver, elem_id: str, value: str, tries: int = 5) -> None:
    """Type `value` into a multiselect picker and press Enter until its chip shows, then Escape (the open list
    would cover the buttons below it). The picker refreshes its choices when it gets focus, and an Enter that lands
    before that refresh selects nothing."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    name = Path(value).parent.name
    for _ in range(tries):
        box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input")
        box.click()
        box.send_keys(value)
        box.send_keys("\n")
        try:
            WebDriverWait(driver, 5).until(lambda d: name in d.find_element(By.ID, elem_id).text)
            box.send_keys(Keys.ESCAPE)
            return
        except TimeoutException:
            box.clear()
    raise AssertionError(f"{value} never showed as chosen in #{elem_id}")


def tab(driver, name: str) -> None:
    from selenium.webdriver.common.by import By

    next(b for b in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text.strip() == name).click()


def click(driver, elem_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, elem_id).click()
