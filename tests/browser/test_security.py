"""Security review 3 in a real browser (Debian's chromium via Playwright, with a browser
profile on disk so that what the browser keeps can be read back as a forensic examiner
would)."""

import json
import re
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


def test_finding_h1_a_new_device_shows_the_link_and_the_profile_confirms(pw, workdir, shots):
    """H1 in the app: the new device ("Link to a profile I already have") shows a QR code, the
    link and a code; the device with the profile pastes the link, sees the new device's name
    and the same code, and only its confirmation adds the device."""
    from test_app import shoot

    relay = Relay(workdir / "h1-relay").start()
    phone_home, laptop_home = workdir / "h1-phone", workdir / "h1-laptop"
    apps = []
    try:
        cli(phone_home, "init", "--relay", relay.url, "--name", "Alice")
        phone = App(phone_home, relay.url, env={"SAMIZDAT_PASSPHRASE": PASSPHRASE})
        laptop = App(laptop_home, relay.url)
        apps += [phone, laptop]
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        ctx = browser.new_context(locale="en-US", viewport={"width": 1000, "height": 900})
        page = ctx.new_page()
        page.goto(phone.url)
        expect(page.locator("body")).to_have_attribute("data-page", "chats", timeout=LONG)
        for lang in ("en", "ru"):
            if lang == "ru":
                # The Russian pass: the phone's page in Russian, and a fresh new device.
                page.goto(phone.base + "/settings")
                page.select_option("#lang", "ru")
                page.click("form[action='/settings/lang'] button")
                expect(page.locator("html")).to_have_attribute("lang", "ru")
                laptop.stop()
                apps.remove(laptop)
                laptop = App(workdir / "h1-laptop-ru", relay.url)
                apps.append(laptop)
            new_dev = ctx.new_page()
            new_dev.goto(laptop.url)
            expect(new_dev.locator("body")).to_have_attribute("data-page", "onboard")
            if lang == "ru":
                new_dev.click(".lang-switch button[value=ru]")
                expect(new_dev.locator("html")).to_have_attribute("lang", "ru")
            new_dev.fill("#name", "Ноутбук" if lang == "ru" else "Laptop")
            new_dev.fill("#passphrase", PASSPHRASE)
            new_dev.fill("#passphrase2", PASSPHRASE)
            shoot(new_dev, shots, "onboarding-link", lang)
            new_dev.click("#onboard-link")
            expect(new_dev.locator("body")).to_have_attribute("data-page", "linking", timeout=LONG)
            expect(new_dev.locator("#linking-text")).to_have_value(
                re.compile(r"^samizdat://device/v2/"), timeout=LONG
            )
            expect(new_dev.locator("#device-link svg")).to_be_visible()
            link = new_dev.input_value("#linking-text")
            code = new_dev.inner_text("#linking-code")
            shoot(new_dev, shots, "linking", lang)
            # The device with the profile: paste, see the name and the same code, confirm.
            page.goto(phone.base + "/settings")
            page.fill("#device-link-input", link)
            page.click("#device-add button[type=submit]")
            expect(page.locator("#device-confirm")).to_be_visible()
            expect(page.locator("#device-code")).to_have_text(code)
            expect(page.locator("#device-confirm-title")).to_contain_text(
                "Ноутбук" if lang == "ru" else "Laptop"
            )
            page.locator("#device-confirm").scroll_into_view_if_needed()
            shoot(page, shots, "device-confirm", lang)
            page.click("#device-confirm form button")
            expect(page.locator("p.badge[role=status]")).to_be_visible(timeout=LONG)
            # The new device is added (the phone's service finishes it) and lands in the app.
            expect(new_dev.locator("body")).to_have_attribute("data-page", "chats", timeout=LONG)
            shoot(new_dev, shots, "linked", lang)
            page.goto(phone.base + "/settings")
            expect(page.locator("#device-list li.device")).to_have_count(2 if lang == "en" else 3)
            # Used now: the same link is refused with a clear message.
            page.fill("#device-link-input", link)
            page.click("#device-add button[type=submit]")
            expect(page.locator(".error")).to_be_visible()
            new_dev.close()
        ctx.close()
        browser.close()
    finally:
        for a in apps:
            a.stop()
        relay.kill()
