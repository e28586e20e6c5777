"""Benchmark (not a test): how fast the app opens a long conversation and shows a pushed
message. Run after a release build:

    cargo build --release -p samizdat
    SAMIZDAT_BIN=target/release/samizdat python3 tests/browser/bench_app.py [--messages 10000]

Measures, in Debian's chromium via Playwright:
  open   — a conversation with N messages: navigation start → DOMContentLoaded of the chat
           page (server renders the newest page of messages; the script has run), 20 loads;
  push   — bob sends through his service (JSON-RPC); from the relay's acknowledgement of the
           append (the moment it pushes) to the message's element appearing in alice's open
           chat (MutationObserver timestamp), 100 messages.
Both clocks are this machine's wall clock (Python time.time(), the page's Date.now()).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from conftest import BIN, CHROMIUM, PASSPHRASE, App, Relay, cli  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
import tempfile  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Rpc:
    """A `samizdat rpc` process: line-delimited JSON-RPC on its stdin/stdout."""

    def __init__(self, home):
        self.p = subprocess.Popen(
            [BIN, "--home", str(home), "rpc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "SAMIZDAT_PASSPHRASE": PASSPHRASE, "SAMIZDAT_LOG": "error"},
        )
        self.n = 0

    def call(self, method, params):
        self.n += 1
        self.p.stdin.write((json.dumps({"jsonrpc": "2.0", "id": self.n, "method": method, "params": params}) + "\n").encode())
        self.p.stdin.flush()
        while True:
            m = json.loads(self.p.stdout.readline())
            if m.get("id") == self.n:
                if "error" in m:
                    raise RuntimeError(m["error"])
                return m["result"]

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--loads", type=int, default=20)
    ap.add_argument("--pushes", type=int, default=100)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="samizdat-bench-app-"))
    relay = Relay(work / "relay").start()
    cli(work / "alice", "init", "--relay", relay.url, "--name", "alice")
    cli(work / "bob", "init", "--relay", relay.url, "--name", "bob")
    link = cli(work / "alice", "invite").stdout.strip().splitlines()[-1]
    cli(work / "bob", "accept", link, "--name", "alice")
    cli(work / "alice", "sync")
    t0 = time.time()
    bob = Rpc(work / "bob")
    for i in range(a.messages):
        bob.call("send", {"target": "alice", "text": f"message {i} " + "lorem ipsum " * (i % 7)})
    fill = time.time() - t0
    app = App(work / "alice", relay.url, env={"SAMIZDAT_PASSPHRASE": PASSPHRASE})
    out = {"messages": a.messages, "fill_seconds": round(fill, 1)}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = b.new_context().new_page()
        page.goto(app.url)
        # Wait until alice's service has caught up on all N messages.
        conv = None
        deadline = time.time() + 900
        while time.time() < deadline:
            page.goto(app.base + "/fragments/chats")
            html = page.content()
            if "href=\"/c/" in html:
                conv = html.split("href=\"/c/")[1].split("\"")[0]
                hist = page.evaluate("""async (c) => { const r = await fetch('/c/' + c + '/messages'); return (await r.text()).split('class=\"msg').length - 1 }""", conv)
                if hist and f"message {a.messages - 1} " in page.evaluate("""async (c) => (await (await fetch('/c/' + c + '/messages')).text())""", conv):
                    break
            time.sleep(2)
        opens = []
        for _ in range(a.loads):
            page.goto(app.base + "/c/" + conv)
            t = page.evaluate("""() => { const n = performance.getEntriesByType('navigation')[0];
                return n.domContentLoadedEventEnd - n.startTime }""")
            opens.append(t)
        out["open_ms"] = {"p50": round(pct(opens, 50), 1), "p99": round(pct(opens, 99), 1), "max": round(max(opens), 1)}
        page.evaluate("""() => { window.__sse = {}; const es = new EventSource('/events');
            es.onmessage = (m) => { const e = JSON.parse(m.data); const x = /^push (\\d+)$/.exec(e.text || '');
              if (e.event === 'message' && x && !(x[1] in window.__sse)) window.__sse[x[1]] = Date.now(); }; }""")
        page.evaluate("""() => { window.__seen = {}; new MutationObserver(() => {
            document.querySelectorAll('#message-list .msg.in .text').forEach(e => {
              const m = /^push (\\d+)$/.exec(e.textContent); if (m && !(m[1] in window.__seen)) window.__seen[m[1]] = Date.now(); });
          }).observe(document.getElementById('message-list'), {childList: true, subtree: true}); }""")
        pushes = []
        events = []  # relay acknowledgement → the service's event reaches the page (SSE)
        for i in range(a.pushes):
            bob.call("send", {"target": "alice", "text": f"push {i}"})
            acked = time.time() * 1000
            page.wait_for_function("(i) => i in window.__seen", arg=str(i), timeout=30_000)
            seen = page.evaluate("(i) => window.__seen[i]", str(i))
            sse = page.evaluate("(i) => window.__sse[i]", str(i))
            pushes.append(seen - acked)
            if sse:
                events.append(sse - acked)
            time.sleep(0.05)
        if events:
            out["push_event_ms"] = {"p50": round(pct(events, 50), 1), "p99": round(pct(events, 99), 1)}
        out["push_ms"] = {"p50": round(pct(pushes, 50), 1), "p99": round(pct(pushes, 99), 1), "max": round(max(pushes), 1)}
        b.close()
    bob.close()
    app.stop()
    relay.kill()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
