"""Headless Chromium driven over the Chrome DevTools Protocol with aiohttp's websocket client.

No Selenium or chromedriver: the Debian ``chromium`` package and one websocket. Enough for
the web page tests: open pages, fill and submit forms, run script in the page, downloads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

Match = Callable[[dict[str, Any]], bool]
_LISTENING = re.compile(rb"DevTools listening on (ws://\S+)")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Browser:
    """One browser process and one DevTools connection; ``async with Browser.launch(dir)``."""

    def __init__(self, proc: asyncio.subprocess.Process, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.proc, self.ws = proc, ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, str | None, Match, asyncio.Future[dict[str, Any]]]] = []
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, profile: Path, timeout: float = 60) -> AsyncIterator[Browser]:
        exe = chromium()
        assert exe is not None, "apt-get install chromium"
        proc = await asyncio.create_subprocess_exec(
            exe,
            "--headless",
            "--no-sandbox",  # we run as root in the tests
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        drain: asyncio.Task[None] | None = None
        session = aiohttp.ClientSession()
        try:
            assert proc.stderr is not None
            url = await asyncio.wait_for(_devtools_url(proc.stderr), timeout)
            # Chromium keeps writing to stderr; a full pipe would stall it.
            drain = asyncio.create_task(_drain(proc.stderr), name="chromium-stderr")
            ws = await session.ws_connect(url, max_msg_size=0)
            browser = cls(proc, ws)
            try:
                yield browser
            finally:
                await browser._close()
        finally:
            await session.close()
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            if drain is not None:
                await drain

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send("Browser.close"), 5)
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    if "error" in data:
                        fut.set_exception(RuntimeError(f"CDP error: {data['error']}"))
                    else:
                        fut.set_result(data.get("result", {}))
                continue
            for waiter in list(self._waiters):
                method, session, match, fut = waiter
                params = data.get("params", {})
                if (
                    data.get("method") == method
                    and session in (None, data.get("sessionId"))
                    and match(params)
                ):
                    self._waiters.remove(waiter)
                    if not fut.done():
                        fut.set_result(params)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("DevTools connection closed"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> Any:
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        await self.ws.send_str(json.dumps(msg))
        return await asyncio.wait_for(fut, 15)

    def expect(
        self, method: str, session: str | None = None, match: Match = lambda _: True
    ) -> asyncio.Future[dict[str, Any]]:
        """A future for the next event ``method`` whose params ``match``; create it before
        causing the event."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, session, match, fut))
        return fut

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        return page


class Page:
    """One tab."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.browser.send(method, params, self.session)

    async def goto(self, url: str) -> None:
        loaded = self.browser.expect("Page.loadEventFired", self.session)
        await self.send("Page.navigate", {"url": url})
        await asyncio.wait_for(loaded, 15)

    async def eval(self, expression: str) -> Any:
        """Run script in the page (DevTools is not bound by the page's CSP); awaits promises."""
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def submit(self, form: str, values: dict[str, str]) -> None:
        """Fill the form's fields by name and press its submit button, as a person would."""
        loaded = self.browser.expect("Page.loadEventFired", self.session)
        await self.eval(
            f"(() => {{ const f = document.querySelector({json.dumps(form)});"
            f" for (const [k, v] of Object.entries({json.dumps(values)})) f.elements[k].value = v;"
            " f.querySelector('button[type=submit]').click(); })()"
        )
        await asyncio.wait_for(loaded, 15)

    async def text(self) -> str:
        return str(await self.eval("document.body.innerText"))

    async def emulate(
        self, *, width: int = 1280, height: int = 900, zone: str | None = None, language: str | None = None
    ) -> None:
        """A window of ``width`` CSS pixels (a phone's below 500), the browser's time zone and
        its language (navigator.language and the Accept-Language header), as a person's own."""
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500},
        )
        if zone is not None:
            await self.send("Emulation.setTimezoneOverride", {"timezoneId": zone})
        if language is not None:
            version = await self.browser.send("Browser.getVersion")
            await self.send("Emulation.setLocaleOverride", {"locale": language})
            await self.send(
                "Emulation.setUserAgentOverride",
                {"userAgent": version["userAgent"], "acceptLanguage": f"{language},en;q=0.5"},
            )

    async def click(self, selector: str) -> None:
        """Click a link or button and wait for the page it leads to."""
        loaded = self.browser.expect("Page.loadEventFired", self.session)
        await self.eval(f"document.querySelector({json.dumps(selector)}).click()")
        await asyncio.wait_for(loaded, 15)

    async def sideways_overflow(self) -> int:
        """CSS pixels the page is wider than its window (0: nothing scrolls sideways)."""
        return int(await self.eval("document.documentElement.scrollWidth - window.innerWidth"))

    async def axe(self) -> list[dict[str, Any]]:
        """axe-core's WCAG 2.2 A/AA violations of the page, serious and critical only."""
        await self.eval(axe_source())
        result = await self.eval(
            "axe.run(document, {runOnly: {type: 'tag', values:"
            " ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']}, resultTypes: ['violations']})"
            ".then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)})))"
        )
        return [v for v in result if v["impact"] in ("serious", "critical")]

    async def screenshot(self, path: Path) -> None:
        """The whole page, as a PNG."""
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        shot = await self.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            },
        )
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


AXE_VERSION = "4.14.1"
"""axe-core from the npm registry, installed by `make deps` (Makefile) into .cache/."""


def axe_source() -> str:
    path = Path(
        os.environ.get("CALLREC_AXE_CORE")
        or Path(__file__).resolve().parents[2] / ".cache/axe-core/node_modules/axe-core/axe.min.js"
    )
    assert path.is_file(), f"{path}: missing; `make deps` installs axe-core {AXE_VERSION} with npm"
    return path.read_text()


async def _devtools_url(stderr: asyncio.StreamReader) -> str:
    while line := await stderr.readline():
        m = _LISTENING.search(line)
        if m:
            return m.group(1).decode()
    raise RuntimeError("chromium exited before DevTools was listening")


async def _drain(stderr: asyncio.StreamReader) -> None:
    while await stderr.read(65536):
        pass
