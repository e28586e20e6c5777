"""Channels in the app (issue 34): alice creates a channel and posts; bob follows it from the
link she shares and reads, with unread counts; a new post reaches bob's service by the relay's
push; bob cannot post; alice pins and deletes; alice posts a photo, bob sees it inline and
saves it; every screen in English and in Russian, with
screenshots in target/screenshots/."""

import time

from playwright.sync_api import expect

from test_app import LONG, english_sentences, shoot
from test_everyday import pair, photo_bytes, set_lang


def user_free_text(page):
    """The page's own words: what people wrote (names, posts, links) left out."""
    return page.evaluate(
        """() => {
            const b = document.body.cloneNode(true);
            b.querySelectorAll('.text, .name, textarea, input, .qr').forEach(e => e.remove());
            return b.innerText;
        }"""
    )


def wait_for_count(page, url, text):
    """Reload `url` until the channel list says `text` (the service takes pushes in the
    background; the list is read when the page loads)."""
    deadline = time.time() + LONG / 1000
    while time.time() < deadline:
        page.goto(url)
        if text in page.locator("ul.channels").inner_text():
            return
        time.sleep(0.3)
    raise AssertionError(f"the channel list never said {text!r}: {page.locator('ul.channels').inner_text()}")


def test_create_post_follow_read_in_both_languages(browser, workdir, shots):
    apps = []
    relay = None
    try:
        relay, alice_app, bob_app, alice, bob = pair(browser, workdir, "channels", apps)

        alice.goto(alice_app.base + "/channels")
        expect(alice.locator("body")).to_have_attribute("data-page", "channels")
        shoot(alice, shots, "channels-empty", "en")
        alice.fill("#channel-name", "Evening Courier")
        alice.fill("#channel-about", "What the papers leave out")
        alice.click("form[action='/channels'] button[type=submit]")
        expect(alice.locator("body")).to_have_attribute("data-page", "channel", timeout=LONG)
        expect(alice.locator("h1 .badge")).to_have_text("admin")
        alice.fill("#post-text", "The bridge is closed until noon.")
        alice.click("form.composer button[type=submit]")
        expect(alice.locator("ol.posts .post .text")).to_have_text(["The bridge is closed until noon."], timeout=LONG)
        link = alice.input_value("input.link")
        assert link.startswith("samizdat://channel/v1/") and "#" in link
        expect(alice.locator(".qr svg")).to_be_visible()
        shoot(alice, shots, "channel-admin", "en")

        bob.goto(bob_app.base + "/channels")
        bob.fill("#channel-link", link)
        bob.click("form[action='/channels/follow'] button[type=submit]")
        expect(bob.locator("body")).to_have_attribute("data-page", "channel", timeout=LONG)
        expect(bob.locator("ol.posts .post .text")).to_have_text(["The bridge is closed until noon."])
        expect(bob.locator("form.composer")).to_have_count(0)
        expect(bob.locator("h1 .badge")).to_have_count(0)
        shoot(bob, shots, "channel-follower", "en")

        # A second post: bob's service gets it pushed; his list shows it unread.
        alice.fill("#post-text", "It opens again at one.")
        alice.click("form.composer button[type=submit]")
        expect(alice.locator("ol.posts .post .text").first).to_have_text("It opens again at one.", timeout=LONG)
        wait_for_count(bob, bob_app.base + "/channels", "unread: 1")
        shoot(bob, shots, "channels-list", "en")
        bob.locator("ul.channels a").first.click()
        expect(bob.locator("ol.posts .post .text")).to_have_text(
            ["It opens again at one.", "The bridge is closed until noon."]
        )
        wait_for_count(bob, bob_app.base + "/channels", "unread: 0")

        # Alice pins the first post and deletes the second: bob's copy follows.
        first = alice.locator("ol.posts .post", has_text="closed until noon")
        first.locator("form[action$='/pin'] button").click()
        expect(alice.locator("ol.posts .post.pinned .text")).to_have_text("The bridge is closed until noon.", timeout=LONG)
        alice.locator("ol.posts .post", has_text="opens again").locator("form[action$='/delete'] button").click()
        expect(alice.locator("ol.posts .post .text")).to_have_text(["The bridge is closed until noon."], timeout=LONG)
        deadline = time.time() + LONG / 1000
        while time.time() < deadline:
            bob.goto(bob_app.base + "/channels")
            bob.locator("ul.channels a").first.click()
            if bob.locator("ol.posts .post").count() == 1 and bob.locator("ol.posts .post.pinned").count() == 1:
                break
            time.sleep(0.3)
        expect(bob.locator("ol.posts .post.pinned .text")).to_have_text("The bridge is closed until noon.")

        # Alice makes bob an admin: he joins the admin group, his device makes its key, hers
        # signs the roster (both services do it on their own); then bob can post.
        alice.goto(alice_app.base + "/channels")
        alice.locator("ul.channels a").first.click()
        expect(alice.locator(".card", has_text="You are the only admin.")).to_be_visible()
        alice.select_option("#admin-contact", label="Bob")
        alice.click("form[action$='/admins'] button[type=submit]")
        expect(alice.locator("body")).to_have_attribute("data-page", "channel", timeout=LONG)
        deadline = time.time() + LONG / 1000
        while time.time() < deadline:
            bob.goto(bob_app.base + "/channels")
            bob.locator("ul.channels a").first.click()
            if bob.locator("form.composer").count() == 1:
                break
            time.sleep(0.5)
        expect(bob.locator("form.composer")).to_have_count(1)
        shoot(bob, shots, "channel-second-admin", "en")
        bob.fill("#post-text", "A report from the river bank.")
        bob.click("form.composer button[type=submit]")
        expect(bob.locator("ol.posts .post .text").nth(1)).to_have_text("A report from the river bank.", timeout=LONG)
        alice.goto(alice_app.base + "/channels")
        alice.locator("ul.channels a").first.click()
        deadline = time.time() + LONG / 1000
        while time.time() < deadline and "river bank" not in alice.locator("ol.posts").inner_text():
            time.sleep(0.5)
            alice.reload()
        expect(alice.locator("ol.posts")).to_contain_text("A report from the river bank.")
        expect(alice.locator(".card", has_text="Admins").locator(".name")).to_have_text(["Bob"])
        shoot(alice, shots, "channel-admins", "en")

        # A photo with a caption: encrypted, uploaded for the channel, its thumbnail carried in
        # the post; bob sees it inline and saves the photo itself (a JPEG, cleaned of metadata).
        alice.set_input_files(
            "#channel-file",
            files=[{"name": "bridge.jpg", "mimeType": "image/jpeg", "buffer": photo_bytes(640, 480)}],
        )
        alice.fill("#channel-caption", "The bridge at noon.")
        alice.click("#channel-attach button[type=submit]")
        expect(alice.locator("ol.posts .post img")).to_have_count(1, timeout=LONG)
        deadline = time.time() + LONG / 1000
        while time.time() < deadline:
            bob.goto(bob_app.base + "/channels")
            bob.locator("ul.channels a").first.click()
            if bob.locator("ol.posts .post img").count() == 1:
                break
            time.sleep(0.5)
        photo = bob.locator("ol.posts .post", has_text="The bridge at noon.")
        expect(photo.locator("img")).to_be_visible()
        assert bob.evaluate("() => document.querySelector('ol.posts .post img').naturalWidth") > 0
        expect(photo.locator(".file-name")).to_have_text("bridge.jpg")
        with bob.expect_download(timeout=LONG) as dl:
            photo.locator(".file-save").click()
        assert dl.value.suggested_filename == "bridge.jpg", dl.value.suggested_filename
        with open(dl.value.path(), "rb") as f:
            assert f.read(3) == b"\xff\xd8\xff"
        shoot(bob, shots, "channel-photo", "en")

        # Russian: every channel screen, no English sentence of the app's own.
        set_lang(bob, bob_app.base, "ru")
        bob.goto(bob_app.base + "/channels")
        assert "Каналы" in bob.locator("body").inner_text()
        found = english_sentences(user_free_text(bob))
        assert not found, f"English on the Russian channel list: {found}"
        shoot(bob, shots, "channels-list", "ru")
        bob.locator("ul.channels a").first.click()
        expect(bob.locator("body")).to_have_attribute("data-page", "channel")
        assert "Закреплено" in bob.locator("body").inner_text()
        found = english_sentences(user_free_text(bob))
        assert not found, f"English on the Russian channel page: {found}"
        shoot(bob, shots, "channel-follower", "ru")
        set_lang(alice, alice_app.base, "ru")
        alice.goto(alice_app.base + "/channels")
        alice.locator("ul.channels a").first.click()
        expect(alice.locator("h1 .badge")).to_have_text("администратор")
        assert "Администраторы" in alice.locator("body").inner_text()
        found = english_sentences(user_free_text(alice))
        assert not found, f"English on the Russian admin page: {found}"
        shoot(alice, shots, "channel-admin", "ru")
    finally:
        for a in apps:
            a.stop()
        if relay:
            relay.kill()
