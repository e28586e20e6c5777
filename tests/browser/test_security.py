"""Security review 3 in a real browser (Debian's chromium via Playwright, with a browser
profile on disk so that what the browser keeps can be read back as a forensic examiner
would)."""

import json
import secrets
import tempfile
from pathlib import Path

from playwright.sync_api import expect

from conftest import CHROMIUM, CHROMIUM_ARGS, PASSPHRASE, App, Relay, cli

LONG = 90_000  # ms


def files_holding(root, needles):
    """Every file under `root` that holds one of `needles` (as UTF-8 or UTF-16LE, the two
    encodings Chromium's stores use)."""
    found = []
    forms = [n.encode() for n in needles] + [n.encode("utf-16-le") for n in needles]
    for f in Path(root).rglob("*"):
        if not f.is_file():
            continue
        try:
            data = f.read_bytes()
        except OSError:
            continue
        if any(x in data for x in forms):
            found.append(str(f.relative_to(root)))
    return found


def web_stores(page):
    """What the page's origin holds in every store a script can see."""
    return page.evaluate(
        """async () => ({
            local: localStorage.length,
            session: sessionStorage.length,
            indexed: (await indexedDB.databases()).length,
            caches: (await caches.keys()).length,
        })"""
    )


# The stores of a Chromium profile where a page's data lives (the HTTP cache included).
STORES = ("Local Storage", "Session Storage", "IndexedDB", "Cache", "Service Worker", "WebStorage")


def test_finding_h3_drafts_never_reach_browser_storage(pw, workdir):
    relay = Relay(workdir / "h3-relay").start()
    alice_home, bob_home = workdir / "h3-alice", workdir / "h3-bob"
    app = None
    try:
        cli(alice_home, "init", "--relay", relay.url, "--name", "Alice")
        cli(bob_home, "init", "--relay", relay.url, "--name", "Bob")
        link = cli(alice_home, "invite").stdout.strip().splitlines()[-1]
        cli(bob_home, "accept", link, "--name", "alice")
        cli(alice_home, "sync")
        conv_id = json.loads(cli(alice_home, "list", "--json").stdout.strip().splitlines()[0])["id"]
        app = App(alice_home, relay.url, env={"SAMIZDAT_PASSPHRASE": PASSPHRASE})
        draft = "draft canary " + secrets.token_hex(8)
        user_data = tempfile.mkdtemp(prefix="samizdat-chromium-")
        ctx = pw.chromium.launch_persistent_context(
            user_data, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = ctx.new_page()
        page.goto(app.url)
        expect(page.locator("body")).to_have_attribute("data-page", "chats", timeout=LONG)
        page.locator(".chat-item a").first.click()
        expect(page.locator("body")).to_have_attribute("data-page", "chat")
        with page.expect_response(lambda r: r.url.endswith("/draft") and r.status == 204):
            page.type("#text", draft)
        # The draft is in the profile: a reload (and a new page) shows it.
        page.reload()
        expect(page.locator("#text")).to_have_value(draft)
        assert web_stores(page) == {"local": 0, "session": 0, "indexed": 0, "caches": 0}
        # Leave the chat with the draft still typed; then close the browser, which writes
        # everything it keeps to disk.
        page.goto(app.base + "/settings")
        ctx.close()
        leaked = files_holding(user_data, [draft])
        assert not leaked, f"the draft reached the browser profile: {leaked}"
        in_stores = [f for f in files_holding(user_data, [conv_id]) if any(s in f for s in STORES)]
        assert not in_stores, f"the conversation id reached browser storage: {in_stores}"

        # The draft survives in the profile, encrypted: the CLI reads it through the service.
        # After a wipe from the page, the browser is told to clear the origin's storage.
        ctx = pw.chromium.launch_persistent_context(
            user_data, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = ctx.new_page()
        # The app's origin is stable: the same port as before for this profile.
        app.stop()
        app2 = App(alice_home, relay.url, env={"SAMIZDAT_PASSPHRASE": PASSPHRASE})
        assert app2.base == app.base, (app.base, app2.base)
        app = app2
        page.goto(app.url)
        page.evaluate("localStorage.setItem('left-by-an-old-version', 'x')")
        page.goto(app.base + "/settings")
        page.check("#wipe-confirm")
        with page.expect_response(lambda r: r.url.endswith("/settings/wipe")) as wiped:
            page.click("form[action='/settings/wipe'] button")
        assert "\"storage\"" in (wiped.value.all_headers().get("clear-site-data") or ""), wiped.value.all_headers()
        expect(page.locator("body")).to_have_attribute("data-page", "onboard", timeout=LONG)
        assert web_stores(page) == {"local": 0, "session": 0, "indexed": 0, "caches": 0}
        ctx.close()
        assert not files_holding(user_data, [draft])
        assert not alice_home.exists() or not any(alice_home.iterdir())
    finally:
        if app:
            app.stop()
        relay.kill()
