"""Screenshots of a finished flow run in the Prefect UI, taken with headless Chromium.

    python scripts/ui_screenshot.py --api http://127.0.0.1:4200/api --flow-run <id> --out out/ui

Saves `flow-run.png` (the run page), `flow-run-artifacts.png` (its Artifacts tab) and,
when the run has a markdown artifact (the run report), `report-artifact.png`. Each page
is captured only once the text it should show is on it (the run's name and state, the
artifact keys, the report's first line), so a blank or half-loaded page is an error,
not a picture. Prints a JSON list of what it saved, with the text it waited for and the
images the page failed to load (`broken_images`).

Drives Chromium over the DevTools protocol (a websocket; the `websockets` package comes
with prefect), so it needs no chromedriver and no Playwright. Chromium: Debian's
`apt-get install -y chromium` (path /usr/bin/chromium), or --chromium PATH.

Leaves out: logging in (a server with PREFECT_SERVER_API_AUTH_STRING), other browsers.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# No network here: nothing that phones home, no QUIC, a throwaway profile.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--window-size=1440,1400",
    "--remote-debugging-port=0", "--remote-allow-origins=*",
)


# Click the innermost element whose whole text is the tab's label (the UI's tabs are <li class="p-tab">).
CLICK_TAB = """(() => {
  const label = %s;
  const el = [...document.querySelectorAll('[role=tab], .p-tab, button, a')]
    .find(e => e.innerText && e.innerText.trim() === label);
  if (el) { el.click(); return true; }
  return false;
})()"""
# Images the page could not load (e.g. a file:// plot in a markdown artifact: a browser refuses those).
BROKEN_IMAGES = "[...document.images].filter(i => i.complete && i.naturalWidth === 0).map(i => i.src.slice(0, 200))"
VIEWPORT = {"width": 1440, "height": 1400}
# The Prefect UI's run form: each field is a block holding a <label> and its controls. These
# functions find the smallest element that holds the label and the wanted control; they are
# called as `(function)(json args...)` by Browser.js.
FOCUS_FIELD = """(label, selector) => {
  for (const l of document.querySelectorAll('label')) {
    if (!l.innerText.trim().startsWith(label)) continue;
    let e = l; while (e && !e.querySelector(selector)) e = e.parentElement;
    if (!e) continue;
    const control = e.querySelector(selector); control.focus(); if (control.select) control.select();
    return true;
  }
  return false; }"""
CLICK_IN_FIELD = """(label, text) => {
  const match = e => [...e.querySelectorAll('button')].find(b => b.innerText.trim() === text);
  for (const l of document.querySelectorAll('label')) {
    if (!l.innerText.trim().startsWith(label)) continue;
    let e = l; while (e && !match(e)) e = e.parentElement;
    if (e) { match(e).click(); return true; }
  }
  return false; }"""
FIELD_VALUE = """(label, selector) => {
  for (const l of document.querySelectorAll('label')) {
    if (!l.innerText.trim().startsWith(label)) continue;
    let e = l; while (e && !e.querySelector(selector)) e = e.parentElement;
    if (e) return e.querySelector(selector).value;
  }
  return null; }"""
CLICK_LINK = """(text) => {
  const a = [...document.querySelectorAll('a')].find(a => a.innerText.trim() === text);
  if (!a) return false; a.click(); return true; }"""
CLICK_BUTTON = """(text) => {
  const b = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === text);
  if (!b) return false; b.click(); return true; }"""


class ScreenshotError(RuntimeError):
    """A page did not show what it should, or Chromium could not be started."""


def find_chromium(explicit: str | None = None) -> str:
    for name in ([explicit] if explicit else CHROMIUM_CANDIDATES):
        path = shutil.which(name) if name else None
        if path:
            return path
    raise ScreenshotError("no Chromium found: install it (`apt-get install -y chromium` on Debian/Ubuntu) "
                          "or pass --chromium PATH")


class Browser:
    """One headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, chromium: str, timeout: float = 60.0, settle_s: float = 4.0):
        self.timeout = timeout
        self.settle_s = settle_s
        self._profile = tempfile.TemporaryDirectory(prefix="synth-chromium-")
        self._ids = itertools.count(1)
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: an unread pipe would block Chromium
        self.process = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
            start_new_session=True,  # its renderer and GPU processes go with it on close()
        )
        try:
            port = self._devtools_port()
            pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            page = next(p for p in pages if p.get("type") == "page")
            self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=20)
            self.call("Page.enable")
            self.call("Emulation.setDeviceMetricsOverride", **VIEWPORT, deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def _devtools_port(self) -> int:
        marker = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._stderr.seek(0)
                err = self._stderr.read().decode(errors="replace")[-2000:]
                raise ScreenshotError(f"Chromium exited with code {self.process.returncode}: {err}")
            if marker.is_file() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.2)
        raise ScreenshotError(f"Chromium did not open its DevTools port within {self.timeout:.0f} s")

    def call(self, method: str, **params):
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # events arrive in between; skip them
            message = json.loads(self.ws.recv(timeout=self.timeout))
            if message.get("id") == call_id:
                if "error" in message:
                    raise ScreenshotError(f"{method}: {message['error']}")
                return message.get("result", {})

    def text(self) -> str:
        result = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                           returnByValue=True)
        return result.get("result", {}).get("value") or ""

    def _wait_for(self, url: str, expect: list[str]) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            body = self.text()
            if all(s in body for s in expect):
                return
            time.sleep(0.5)
        missing = [s for s in expect if s not in self.text()]
        raise ScreenshotError(f"{url} did not show {missing} within {self.timeout:.0f} s; "
                              f"the page said: {self.text()[:500]!r}")

    def shoot(self, url: str, expect: list[str], path: Path, tab: str | None = None) -> dict:
        """Open url (and click the tab named `tab`), wait until every string in `expect` is there, save a PNG."""
        self.call("Page.navigate", url=url)
        if tab:
            # The run page drops `?tab=` while the run loads (its tabs are hidden until then): click instead.
            self._wait_for(url, [tab])
            if not self.call("Runtime.evaluate", expression=CLICK_TAB % json.dumps(tab),
                             returnByValue=True).get("result", {}).get("value"):
                raise ScreenshotError(f"{url}: no tab named {tab!r} to click")
        self._wait_for(url, expect)
        time.sleep(self.settle_s)  # the run graph (a canvas) and the log list paint after their text is there
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        broken = self.call("Runtime.evaluate", expression=BROKEN_IMAGES, returnByValue=True)
        return {"url": url, "tab": tab, "path": str(path), "bytes": len(png), "waited_for": expect,
                "broken_images": broken.get("result", {}).get("value") or []}

    # -- filling a form as a person would: focus a field, type, click --------------------------

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True).get("result", {}).get("value")

    def js(self, function: str, *args):
        """Call a JavaScript function expression with JSON arguments; returns its value."""
        return self.evaluate(f"({function})({', '.join(json.dumps(a) for a in args)})")

    def type_into(self, label: str, selector: str, text: str) -> None:
        """Focus the first `selector` control of the form field whose label starts with `label`,
        select what it holds, and type `text` (DevTools' Input.insertText: the page's own input
        events fire, as for a person typing)."""
        found = self.js(FOCUS_FIELD, label, selector)
        if not found:
            raise ScreenshotError(f"no {selector} in the form field {label!r}; the page said: {self.text()[:300]!r}")
        self.call("Input.insertText", text=text)

    def click_in_field(self, label: str, text: str) -> None:
        """Click the button whose text is `text` inside the form field labelled `label`
        (e.g. the `int` choice of an optional number)."""
        if not self.js(CLICK_IN_FIELD, label, text):
            raise ScreenshotError(f"no button {text!r} in the form field {label!r}")

    def click_button(self, text: str) -> None:
        if not self.js(CLICK_BUTTON, text):
            raise ScreenshotError(f"no button {text!r} on the page; the page said: {self.text()[:300]!r}")

    def wait_for_url(self, part: str) -> str:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            href = self.evaluate("location.href") or ""
            if part in href:
                return href
            time.sleep(0.5)
        raise ScreenshotError(f"the page did not go to a URL with {part!r} within {self.timeout:.0f} s "
                              f"(it is at {self.evaluate('location.href')}); it said: {self.text()[:300]!r}")

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._stderr.close()
        self._profile.cleanup()


def _report_heading(markdown: str) -> str:
    """The first line of the report as the browser renders it (no '#', no emphasis marks)."""
    for line in markdown.splitlines():
        text = line.strip().lstrip("#").strip().replace("**", "").replace("`", "")
        if text:
            return text[:60]
    return ""


def screenshot_run(api: str, flow_run_id: str, out: Path, chromium: str | None = None,
                   timeout: float = 60.0) -> list[dict]:
    ui = api[: -len("/api")] if api.endswith("/api") else api
    run = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10)
    run.raise_for_status()
    run = run.json()
    artifacts = httpx.post(f"{api}/artifacts/filter", timeout=10,
                           json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}).json()
    keys = sorted({a["key"] for a in artifacts if a.get("key")})
    state = run["state"]["name"] if run.get("state") else ""
    browser = Browser(find_chromium(chromium), timeout)
    try:
        shots = [browser.shoot(f"{ui}/runs/flow-run/{flow_run_id}", [run["name"], state], out / "flow-run.png")]
        shots.append(browser.shoot(f"{ui}/runs/flow-run/{flow_run_id}", [run["name"], *keys[:3]],
                                   out / "flow-run-artifacts.png", tab="Artifacts"))
        report = next((a for a in artifacts if a.get("type") == "markdown"), None)
        if report is not None:
            heading = _report_heading(report.get("data") or "")
            shots.append(browser.shoot(f"{ui}/artifacts/artifact/{report['id']}", [heading] if heading else [],
                                       out / "report-artifact.png"))
    finally:
        browser.close()
    return shots


def run_from_form(api: str, deployment_id: str, fields: list[tuple[str, str | None, str, str]], out: Path,
                  chromium: str | None = None, timeout: float = 60.0) -> dict:
    """Open the deployment's run form (Run > Custom run), fill `fields`, press Submit, open
    the new run from the deployment's runs list (by the name the form gave it), and return
    its id once its page shows a final state.

    Each field is (label, choice, selector, text): `choice` is the type button to press
    first for an optional field that starts empty (`int`, `str`), else None; `selector`
    the control to type into (`input`, `textarea`). Saves `run-form.png` (the filled form)
    and `triggered-run.png` (the run's page once it shows a final state)."""
    ui = api[: -len("/api")] if api.endswith("/api") else api
    browser = Browser(find_chromium(chromium), timeout)
    try:
        url = f"{ui}/deployments/deployment/{deployment_id}/run"
        browser.call("Page.navigate", url=url)
        browser._wait_for(url, [label for label, *_ in fields] + ["Submit"])
        for label, choice, selector, text in fields:
            if choice:
                browser.click_in_field(label, choice)
                time.sleep(0.5)  # the control for that type appears
            browser.type_into(label, selector, text)
        time.sleep(1)
        out.mkdir(parents=True, exist_ok=True)
        (out / "run-form.png").write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"]))
        name = browser.js(FIELD_VALUE, "Run Name", "input")  # the UI names the run before it is sent
        browser.click_button("Submit")
        # the UI goes back to the deployment's Runs tab, where the new run is listed by its name
        # (a toast may name it first, before the list has its link: wait for the link itself)
        deadline = time.monotonic() + timeout
        while not browser.js(CLICK_LINK, name):
            if time.monotonic() > deadline:
                raise ScreenshotError(f"the deployment's runs list showed no link to the new run {name!r} within "
                                      f"{timeout:.0f} s; the page said: {browser.text()[:300]!r}")
            time.sleep(0.5)
        href = browser.wait_for_url("/runs/flow-run/")
        flow_run_id = href.rsplit("/runs/flow-run/", 1)[1].split("?")[0].split("/")[0]
        run = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()
        final = ("Completed", "Failed", "Crashed", "Cancelled")
        deadline = time.monotonic() + 10 * timeout
        while time.monotonic() < deadline:
            body = browser.text()
            shown = [state for state in final if state in body]
            if shown:
                break
            time.sleep(2)
        else:
            raise ScreenshotError(f"the run page of {run['name']} showed no final state within {10 * timeout:.0f} s")
        time.sleep(browser.settle_s)
        (out / "triggered-run.png").write_bytes(
            base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"]))
        return {"flow_run_id": flow_run_id, "name": run["name"], "shown_state": shown[0],
                "shots": [str(out / "run-form.png"), str(out / "triggered-run.png")]}
    finally:
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default=os.environ.get("PREFECT_API_URL", "http://127.0.0.1:4200/api"),
                        help="Prefect API URL (default: $PREFECT_API_URL or http://127.0.0.1:4200/api)")
    parser.add_argument("--flow-run", required=True, help="id of a finished flow run")
    parser.add_argument("--out", default="out/ui", help="folder for the PNGs (default out/ui)")
    parser.add_argument("--chromium", help="Chromium executable (default: chromium on PATH)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each page")
    args = parser.parse_args(argv)
    try:
        shots = screenshot_run(args.api, args.flow_run, Path(args.out), args.chromium, args.timeout)
    except (ScreenshotError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(shots, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
