"""Helpers for the browser tests: launching Debian's Chromium, page instrumentation, a TCP relay.

The instrumentation only records what the page does with real browser APIs (WebSocket attempts and
frames, ``play()`` calls); it changes no behaviour. The relay stands between the page and the real server's
WebSocket so a test can cut or black-hole the network path while HTTP keeps working.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("NOTIFY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]

# Runs before any page script: records WebSocket attempts (url, time), frames sent and received, and
# every HTMLMediaElement.play() call with how it ended.
RECORDER = """
(() => {
  const Native = window.WebSocket;
  const log = { attempts: [], sent: [], received: [], closes: [] };
  window.__ws = log;
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      log.attempts.push({ url: String(url), t: performance.now() });
      this.addEventListener("message", (e) => log.received.push(String(e.data)));
      this.addEventListener("close", (e) => log.closes.push({ code: e.code, t: performance.now() }));
    }
    send(data) {
      log.sent.push(String(data));
      return super.send(data);
    }
  };
  window.__statuses = [];
  document.addEventListener("DOMContentLoaded", () => {
    const pill = document.getElementById("connection-status");
    if (!pill) return;
    new MutationObserver(() => window.__statuses.push({ status: pill.dataset.status, t: performance.now() }))
      .observe(pill, { attributes: true, attributeFilter: ["data-status"] });
  });
  const play = HTMLMediaElement.prototype.play;
  window.__sound = [];
  HTMLMediaElement.prototype.play = function () {
    const record = { t: performance.now(), src: this.currentSrc || this.src, result: "pending" };
    window.__sound.push(record);
    const promise = play.call(this);
    promise.then(() => { record.result = "played"; }, (err) => { record.result = err.name; });
    return promise;
  };
})();
"""

# Headless Chromium reports every tab as visible; this stands in for the OS hiding and showing the tab.
VISIBILITY = """
(() => {
  let state = "visible";
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => state });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => state === "hidden" });
  window.__setVisibility = (next) => { state = next; document.dispatchEvent(new Event("visibilitychange")); };
})();
"""

# Headless Chromium plays audio without a user gesture whatever --autoplay-policy says (and counts the
# test driver's script evaluations as activation), so this applies the policy of a normal window: play() is
# refused with NotAllowedError until the page has had a trusted click, tap or key press.
AUTOPLAY_POLICY = """
(() => {
  let activated = false;
  for (const type of ["pointerdown", "keydown", "touchstart"]) {
    window.addEventListener(type, (event) => { if (event.isTrusted) activated = true; }, true);
  }
  const play = HTMLMediaElement.prototype.play;
  HTMLMediaElement.prototype.play = function () {
    if (!activated) {
      return Promise.reject(new DOMException("play() can only be initiated by a user gesture.", "NotAllowedError"));
    }
    return play.call(this);
  };
})();
"""

# Records desktop notifications while still showing them with the real constructor.
DESKTOP = """
(() => {
  const Native = window.Notification;
  window.__desktop = [];
  window.Notification = class extends Native {
    constructor(title, options) {
      super(title, options);
      window.__desktop.push({ title, body: options && options.body, tag: options && options.tag });
    }
  };
})();
"""


def options_script(options: dict[str, Any], extra_js: str = "") -> str:
    """Set ``window.notifyOptions`` (read by the dashboard) before the page's modules run."""
    return f"window.notifyOptions = Object.assign({json.dumps(options)}, (() => {{ {extra_js} }})() || {{}});"


def launch(playwright: Any, *extra_args: str) -> Any:
    """Headless Debian Chromium; a clear failure when it is not installed."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium), "
                           "or run `python3 dev.py test`, which installs it when it can")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=[*CHROMIUM_ARGS, *extra_args])


class Relay:
    """A TCP relay on 127.0.0.1: ``open()`` listens and pipes to the target, ``close()`` refuses new
    connections and cuts the open ones, ``blackhole()`` keeps open connections up but silently drops
    their bytes (a dead NAT mapping) while new connections work."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or _free_port()
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket, dict[str, bool]]] = []

    def open(self) -> Relay:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            _shut(listener)  # shutdown wakes the thread blocked in accept(), which frees the port
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream, _ in pairs:
            for sock in (client, upstream):
                _shut(sock)

    def blackhole(self) -> None:
        with self._lock:
            for _, _, state in self._pairs:
                state["dead"] = True

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
                upstream.settimeout(None)
            except OSError:
                _shut(client)
                continue
            state = {"dead": False}
            with self._lock:
                self._pairs.append((client, upstream, state))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink, state), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := source.recv(65536):
                if not state["dead"]:
                    sink.sendall(data)
        except OSError:
            pass
        if not state["dead"]:
            _shut(sink)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
