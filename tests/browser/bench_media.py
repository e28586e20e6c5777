"""Benchmark (not a test): photos and voice messages in the app (issue 30, item 3). Run after
an optimised build:

    cargo build --profile fast-release -p samizdat        # or --release
    SAMIZDAT_BIN=target/fast-release/samizdat python3 tests/browser/bench_media.py

Measures, in Debian's chromium via Playwright:
  voice — a 60-second voice message recorded with the app's own recorder (its 🎤 button),
          chromium's fake microphone playing 60 s of speech made by espeak-ng (Debian): the
          bytes the page sends (goal ≤ 250 KB), and what arrives (its length as shown).
  open  — a chat holding 200 photos (each sent through bob's service, which makes its
          thumbnail): navigation start → the last thumbnail in the viewport has loaded (the
          latest `responseEnd` of the visible thumbnails' resource timings, every one
          `complete`), over 20 loads (goal < 300 ms).
"""

import argparse
import io
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_app import Rpc, pct  # noqa: E402
from conftest import CHROMIUM, PASSPHRASE, App, Relay, cli  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402


def photo(w, h, seed):
    """A photo-like JPEG: gradients with noise (about as costly as a real photo)."""
    from PIL import Image

    rnd = random.Random(seed)
    noise = rnd.randbytes(w * h * 3)
    img = Image.frombytes("RGB", (w, h), noise)
    grad = Image.linear_gradient("L").resize((w, h))
    img = Image.merge("RGB", [Image.eval(grad, lambda v, k=k: (v + 40 * k) % 256) for k in range(3)])
    img = Image.blend(img, Image.frombytes("RGB", (w, h), noise), 0.25)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=88)
    return out.getvalue()


def speech(path, seconds):
    """`seconds` of speech (espeak-ng, Russian and English), as a 48 kHz mono WAV."""
    text = (
        "Встречаемся завтра в полдень у старого моста, возьми документы и не опаздывай. "
        "The train leaves at six, bring the papers and call me when you arrive. "
    ) * 20
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "ru", "-s", "150", "-w", str(raw), text], check=True)
    # Trim or pad to exactly `seconds`, resampled as chromium's fake capture expects.
    import wave

    with wave.open(str(raw)) as r:
        rate, width, frames = r.getframerate(), r.getsampwidth(), r.readframes(r.getnframes())
    need = rate * width * seconds
    frames = (frames * (need // max(1, len(frames)) + 1))[:need]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--loads", type=int, default=20)
    ap.add_argument("--voice-seconds", type=int, default=60)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="samizdat-bench-media-"))
    # One sender makes 200 blobs in a minute: more than a relay allows one address by default.
    cfg = work / "relay.toml"
    cfg.write_text("[limits]\ncreations_per_ip_per_minute = 100000\n")
    relay = Relay(work / "relay", config=cfg).start()
    cli(work / "alice", "init", "--relay", relay.url, "--name", "alice")
    cli(work / "bob", "init", "--relay", relay.url, "--name", "bob")
    link = cli(work / "alice", "invite").stdout.strip().splitlines()[-1]
    cli(work / "bob", "accept", link, "--name", "alice")
    cli(work / "alice", "sync")
    pics = []
    for i in range(8):
        p = work / f"IMG_{i:04}.jpg"
        p.write_bytes(photo(1600, 1200, i))
        pics.append(p)
    t0 = time.time()
    bob = Rpc(work / "bob")
    for i in range(a.photos):
        bob.call("send", {"target": "alice", "file": str(pics[i % len(pics)]), "text": f"photo {i}"})
    fill = time.time() - t0
    wav = speech(work / "speech.wav", a.voice_seconds)
    app = App(work / "alice", relay.url, env={"SAMIZDAT_PASSPHRASE": PASSPHRASE})
    out = {"photos": a.photos, "photo_bytes": pics[0].stat().st_size, "fill_seconds": round(fill, 1)}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}"])
        ctx = b.new_context(viewport={"width": 1200, "height": 900})
        ctx.grant_permissions(["microphone"])
        page = ctx.new_page()
        page.goto(app.url)
        conv = None
        deadline = time.time() + 900
        while time.time() < deadline:
            page.goto(app.base + "/fragments/chats")
            html = page.content()
            if "href=\"/c/" in html:
                conv = html.split("href=\"/c/")[1].split("\"")[0]
                last = page.evaluate("""async (c) => (await (await fetch('/c/' + c + '/messages')).text())""", conv)
                if f"photo {a.photos - 1}<" in last:
                    break
            time.sleep(2)
        opens = []
        for _ in range(a.loads):
            page.goto(app.base + "/c/" + conv)
            t = page.evaluate("""async () => {
                const seen = [...document.querySelectorAll('#message-list .photo img')].filter((i) => {
                    const r = i.getBoundingClientRect();
                    return r.bottom > 0 && r.top < innerHeight && r.width > 0; });
                await Promise.all(seen.map((i) => i.complete ? 0 : new Promise((ok) => { i.onload = ok; i.onerror = ok; })));
                const ends = performance.getEntriesByType('resource')
                    .filter((e) => e.name.endsWith('/thumb') && seen.some((i) => i.src === e.name))
                    .map((e) => e.responseEnd);
                if (!seen.length || ends.length < seen.length || !seen.every((i) => i.naturalWidth > 0)) return -1;
                return Math.max(...ends); }""")
            assert t > 0, "thumbnails did not load"
            opens.append(t)
        visible = page.evaluate("""() => [...document.querySelectorAll('#message-list .photo img')].filter((i) => {
            const r = i.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight; }).length""")
        out["open_to_last_visible_thumbnail_ms"] = {
            "p50": round(pct(opens, 50), 1), "p99": round(pct(opens, 99), 1), "max": round(max(opens), 1),
            "visible_thumbnails": visible}

        # A voice message of `voice_seconds`, through the app's recorder.
        page.click("#voice-start")
        page.wait_for_timeout(a.voice_seconds * 1000)
        page.click("#voice-send")
        page.wait_for_function("() => document.getElementById('voice').dataset.sent", timeout=60_000)
        sent = int(page.evaluate("() => document.getElementById('voice').dataset.sent"))
        out["voice"] = {"seconds": a.voice_seconds, "bytes": sent, "kbit_per_s": round(sent * 8 / a.voice_seconds / 1000, 1),
                        "goal_bytes": 250_000}
        b.close()
    bob.close()
    app.stop()
    relay.kill()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
