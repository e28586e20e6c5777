"""Benchmark (not a test): call set-up time in the app (issue 31). Run after an optimised build:

    cargo build --profile fast-release -p samizdat        # or --release
    SAMIZDAT_BIN=target/fast-release/samizdat python3 tests/browser/bench_calls.py [--runs 20]

Two separate chromium processes (fake microphones), two apps, one relay on loopback. For each
path a call takes, `--runs` voice calls: the callee presses Accept, and the set-up time is
from that click to the later of the two sides' `connectionState == "connected"` (each page
logs it with its own clock; both are this machine's). Paths:
  udp    — the relay's TURN over UDP and TCP offered; ICE picks (UDP on loopback);
  tcp    — the relay's UDP listener off: TURN over TCP on the relay's own port;
  tunnel — both apps behind a SOCKS proxy (microsocks) and a relay with a pinned certificate:
           each browser's TURN goes to its app's loopback tunnel, through the proxy, inside
           the relay's TLS.
Prints p50 / p95 / max per path and, with --json, one JSON object.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_app import pct  # noqa: E402
from conftest import Relay, free_port  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from test_calls import connected, hang_up, launch, ring, tone, wait_port  # noqa: E402
from test_app import open_chat  # noqa: E402
from test_everyday import pair  # noqa: E402

CONNECTED_AT = """() => { const e = (window.samizdatCallLog || []).find((x) => x[1] === 'connected');
  return e ? e[0] : null; }"""


def measure(pw, work, path, runs):
    tone(work / f"a-{path}.wav", 440)
    tone(work / f"b-{path}.wav", 880)
    ba = launch(pw, work / f"a-{path}.wav")
    bb = launch(pw, work / f"b-{path}.wav")
    apps, relay, socks, extra = [], None, None, {}
    if path == "tcp":
        config = work / "relay-tcp.toml"
        config.write_text('[turn]\nlisten = "off"\n')
        extra["relay_config"] = config
    if path == "tunnel":
        port = free_port()
        socks = subprocess.Popen(["microsocks", "-i", "127.0.0.1", "-p", str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port("127.0.0.1", port)
        extra["relay"] = Relay(work / f"relay-{path}", tls=True)
        extra["app_env"] = {"SAMIZDAT_PROXY": f"socks5h://127.0.0.1:{port}"}
    times = []
    try:
        relay, alice_app, bob_app, alice, bob = pair(ba, work, path, apps, browser_b=bb, **extra)
        open_chat(alice, "Bob")
        bob.goto(bob_app.base + "/")
        for _ in range(runs):
            ring(alice, bob)
            clicked = time.time() * 1000
            bob.click("#call-accept")
            connected(alice, bob)
            done = max(alice.evaluate(CONNECTED_AT), bob.evaluate(CONNECTED_AT))
            times.append((done - clicked) / 1000)
            hang_up(alice, bob)
    finally:
        for a in apps:
            a.stop()
        if relay:
            relay.kill()
        if socks:
            socks.kill()
        ba.close()
        bb.close()
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--paths", default="udp,tcp,tunnel")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as d, sync_playwright() as pw:
        for path in args.paths.split(","):
            work = Path(d) / path
            work.mkdir()
            t = measure(pw, work, path, args.runs)
            out[path] = {"runs": len(t), "p50_s": pct(t, 50), "p95_s": pct(t, 95), "max_s": max(t)}
            print(f"{path:7} accept -> connected over {len(t)} calls: p50 {pct(t, 50):.3f} s, "
                  f"p95 {pct(t, 95):.3f} s, max {max(t):.3f} s", flush=True)
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
