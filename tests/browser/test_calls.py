"""Calls in the app (issue 31): two separate chromium processes, each with a fake microphone
playing its own tone, call each other through the relay's embedded TURN server.

What is checked from the outside: the call connects with only relayed candidates (getStats),
each side hears the *other* side's tone (an FFT of the received track), a video call shows
moving frames, hang-up, decline and a missed call are lines in both chats, the incoming call
screen is in the reader's language and rings, with the relay's UDP listener off the call still
connects over TCP on the relay's own port, with UDP dropped by a firewall (a network namespace)
it connects over TCP, and in tunnel mode (a SOCKS proxy, a pinned relay) the browser's only
TURN server is its app's loopback tunnel, carried through the proxy inside the relay's TLS."""

import math
import os
import re
import socket
import struct
import subprocess
import time
import wave

from playwright.sync_api import expect

from conftest import CHROMIUM, CHROMIUM_ARGS, PASSPHRASE, App, Relay, cli, free_port
from test_app import LONG, check_lang, onboard, open_chat, shoot
from test_everyday import accept_invite, pair, set_lang

CONNECTED = """() => { const c = window.samizdatCall && window.samizdatCall();
  return !!(c && c.pc && c.pc.connectionState === 'connected'); }"""

STATS = """async () => {
  const pc = window.samizdatCall().pc;
  const stats = await pc.getStats();
  const out = { local: [], remote: [], audioBytes: 0, videoFrames: 0, pair: null };
  let pairId = null;
  stats.forEach((s) => {
    if (s.type === 'local-candidate') out.local.push([s.candidateType, s.relayProtocol || '']);
    if (s.type === 'remote-candidate') out.remote.push(s.candidateType);
    if (s.type === 'inbound-rtp' && s.kind === 'audio') out.audioBytes = s.bytesReceived;
    if (s.type === 'inbound-rtp' && s.kind === 'video') out.videoFrames = s.framesDecoded || 0;
    if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
  });
  if (pairId) {
    const p = stats.get(pairId);
    const l = stats.get(p.localCandidateId), r = stats.get(p.remoteCandidateId);
    out.pair = [l.candidateType, r.candidateType, l.relayProtocol || '', l.url || ''];
  }
  const sdp = pc.localDescription.sdp + pc.remoteDescription.sdp;
  out.sdpCandidates = sdp.split('\\n').filter((l) => l.startsWith('a=candidate:')).map((l) => l.trim());
  return out;
}"""

# The loudest frequency in what this side receives (the other side's microphone).
PEAK = """async () => {
  const audio = document.getElementById('call-remote-audio');
  if (!audio.srcObject) return 'no stream';
  const work = (async () => {
    const ctx = new AudioContext();
    if (ctx.state !== 'running') await ctx.resume();
    const src = ctx.createMediaStreamSource(audio.srcObject);
    const an = ctx.createAnalyser();
    an.fftSize = 8192;
    src.connect(an);
    await new Promise((r) => setTimeout(r, 1500));
    const data = new Float32Array(an.frequencyBinCount);
    an.getFloatFrequencyData(data);
    let best = 1;
    for (let i = 2; i < data.length; i++) if (data[i] > data[best]) best = i;
    const hz = best * ctx.sampleRate / an.fftSize;
    ctx.close();
    return hz;
  })();
  const late = new Promise((r) => setTimeout(() => r('timed out'), 10000));
  return Promise.race([work, late]);
}"""


def tone(path, hz, secs=20, rate=48000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(
            b"".join(
                struct.pack("<h", int(12000 * math.sin(2 * math.pi * hz * i / rate)))
                for i in range(secs * rate)
            )
        )


def launch(pw, wav, executable=CHROMIUM):
    return pw.chromium.launch(
        executable_path=str(executable),
        headless=True,
        args=CHROMIUM_ARGS
        + [
            f"--use-file-for-fake-audio-capture={wav}",
            # Chromium drops loopback from WebRTC unless told (the relay here is on 127.0.0.1).
            "--allow-loopback-in-peer-connection",
            # One network interface, as on a person's computer: this machine also has eth0,
            # and a browser gathering on both makes pairs through two source addresses.
            "--force-webrtc-ip-handling-policy=default_public_interface_only",
            "--autoplay-policy=no-user-gesture-required",
        ],
    )


def connected(*pages):
    for p in pages:
        try:
            p.wait_for_function(CONNECTED, timeout=LONG)
        except Exception:
            state = p.evaluate("""() => { const c = window.samizdatCall && window.samizdatCall();
              return c && c.pc ? [c.pc.connectionState, c.pc.iceConnectionState, c.pc.iceGatheringState,
                c.pc.signalingState, c.pc.getSenders().map((x) => x.transport && x.transport.state),
                window.samizdatCallLog] : [String(c), window.samizdatCallLog]; }""")
            try:
                state.append(p.evaluate(STATS))
            except Exception as e:  # noqa: BLE001 - diagnostics only
                state.append(str(e))
            raise AssertionError(f"not connected: {state}; {p.locator('#call').inner_text()}")


def peak(page):
    hz = page.evaluate(PEAK)
    assert isinstance(hz, (int, float)), hz
    return hz


def only_relayed(page, protocol=None):
    s = page.evaluate(STATS)
    # Right after a renegotiation the new descriptions may not list the gathered candidates
    # yet (they are added as gathering reports them): wait for them, bounded.
    deadline = time.time() + LONG / 1000
    while not s["sdpCandidates"] and time.time() < deadline:
        time.sleep(0.2)
        s = page.evaluate(STATS)
    assert s["local"] and all(c[0] == "relay" for c in s["local"]), s
    assert s["remote"] and all(c == "relay" for c in s["remote"]), s
    assert s["pair"] and s["pair"][:2] == ["relay", "relay"], s
    if protocol:
        assert s["pair"][2] == protocol, s
    assert s["sdpCandidates"] and all(" typ relay" in c for c in s["sdpCandidates"]), s
    assert not any(".local" in c for c in s["sdpCandidates"]), s
    return s


def ring(caller, callee, video=False):
    caller.locator(f".call-start[data-video='{1 if video else 0}']").click()
    expect(caller.locator("#call")).to_be_visible()
    expect(callee.locator("#call-accept")).to_be_visible(timeout=LONG)


def call_up(alice, bob, bob_app):
    """Alice calls Bob from her chat with him; Bob accepts; both connect."""
    open_chat(alice, "Bob")
    bob.goto(bob_app.base + "/")
    ring(alice, bob)
    bob.click("#call-accept")
    connected(alice, bob)


def ringing(page):
    return page.evaluate("() => { const c = window.samizdatCall(); return c && c.ringing; }")


def hang_up(page, other):
    page.click("#call-hangup")
    expect(page.locator("#call")).to_be_hidden(timeout=LONG)
    expect(other.locator("#call")).to_be_hidden(timeout=LONG)


def stop(apps, relay, *browsers):
    for a in apps:
        a.stop()
    if relay:
        relay.kill()
    for b in browsers:
        b.close()


def test_voice_and_video_calls_relayed_with_each_side_hearing_the_other(pw, workdir, shots):
    tone(workdir / "alice-440.wav", 440)
    tone(workdir / "bob-880.wav", 880)
    ba = launch(pw, workdir / "alice-440.wav")
    bb = launch(pw, workdir / "bob-880.wav")
    apps = []
    relay = None
    try:
        relay, alice_app, bob_app, alice, bob = pair(ba, workdir, "calls", apps, browser_b=bb)
        open_chat(alice, "Bob")
        bob.goto(bob_app.base + "/")
        expect(alice.locator(".call-start")).to_have_count(2)

        # A voice call: rings on bob's chat list, connects through the relay only.
        ring(alice, bob)
        expect(alice.locator("#call-status")).to_have_text("Calling…")
        expect(bob.locator("#call-name")).to_have_text("alice")
        expect(bob.locator("#call-status")).to_have_text("Incoming call")
        # It rings while the app is open; the caller hears a ringback.
        assert ringing(bob) == "incoming"
        alice.wait_for_function("() => window.samizdatCall().ringing === 'ringback'", timeout=LONG)
        shoot(bob, shots, "call-incoming", "en")
        started = time.monotonic()
        bob.click("#call-accept")
        connected(alice, bob)
        setup = time.monotonic() - started
        assert ringing(alice) is None and ringing(bob) is None
        print(f"accept -> connected: {setup:.2f} s", flush=True)
        # Relayed only; over UDP or TCP, whichever pair ICE found first.
        a_stats = only_relayed(alice)
        only_relayed(bob)
        # Each side hears the other's tone, decoded (not its own, not silence).
        assert abs(peak(bob) - 440) < 30
        assert abs(peak(alice) - 880) < 30
        time.sleep(1)
        assert alice.evaluate(STATS)["audioBytes"] > a_stats["audioBytes"]
        expect(alice.locator("#call-secure")).to_be_visible()
        expect(alice.locator("#call-status")).to_have_text("Connected")
        expect(alice.locator("#call-timer")).to_have_text(__import__("re").compile(r"^0:0\d$"))
        alice.click("#call-mute")
        expect(alice.locator("#call-mute")).to_have_attribute("aria-pressed", "true")
        expect(alice.locator("#call-mute")).to_have_text("Unmute")
        expect(alice.locator("#call-mic option")).not_to_have_count(0)
        shoot(alice, shots, "call-connected", "en")
        hang_up(alice, bob)
        expect(alice.locator("#message-list .msg.system .line", has_text="Outgoing call, 0:")).to_have_count(1, timeout=LONG)
        open_chat(bob, "alice")
        expect(bob.locator("#message-list .msg.system .line", has_text="Incoming call, 0:")).to_have_count(1, timeout=LONG)

        # Declined: bob says no; both chats say so.
        ring(alice, bob)
        bob.click("#call-decline")
        expect(alice.locator("#call")).to_be_hidden(timeout=LONG)
        expect(alice.locator("#message-list .msg.system .line", has_text="Outgoing call: declined")).to_have_count(1, timeout=LONG)
        expect(bob.locator("#message-list .msg.system .line", has_text="Incoming call: declined")).to_have_count(1, timeout=LONG)

        # Missed: alice gives up before bob answers.
        ring(alice, bob)
        alice.click("#call-hangup")
        expect(bob.locator("#call")).to_be_hidden(timeout=LONG)
        expect(bob.locator("#message-list .msg.system .line", has_text="Missed call")).to_have_count(1, timeout=LONG)
        expect(alice.locator("#message-list .msg.system .line", has_text="Outgoing call: cancelled")).to_have_count(1, timeout=LONG)
        # The CLI sees the calls too (bots can list and decline them).
        out = cli(bob_app.home, "calls", "--json").stdout
        assert out.count('"outcome"') == 3, out
        assert '"missed"' in out and '"declined"' in out and '"answered"' in out, out

        # A video call: moving frames on both sides.
        ring(alice, bob, video=True)
        expect(bob.locator("#call-status")).to_have_text("Incoming video call")
        bob.click("#call-accept")
        connected(alice, bob)
        first = [p.evaluate(STATS)["videoFrames"] for p in (alice, bob)]
        time.sleep(2)
        later = [p.evaluate(STATS)["videoFrames"] for p in (alice, bob)]
        assert all(b > a for a, b in zip(first, later)), (first, later)
        expect(alice.locator("#call-remote-video")).to_be_visible()
        expect(alice.locator("#call-camera")).to_be_visible()
        alice.click("#call-camera")
        expect(alice.locator("#call-camera")).to_have_attribute("aria-pressed", "true")
        shoot(alice, shots, "call-video", "en")
        hang_up(bob, alice)
        expect(alice.locator("#message-list .msg.system .line", has_text="Outgoing video call, 0:")).to_have_count(1, timeout=LONG)

        # In Russian: the incoming call and the lines.
        set_lang(bob, bob_app.base, "ru")
        bob.goto(bob_app.base + "/")
        open_chat(bob, "alice")
        ring(alice, bob)
        expect(bob.locator("#call-status")).to_have_text("Входящий звонок")
        expect(bob.locator("#call-accept")).to_have_text("Принять")
        shoot(bob, shots, "call-incoming", "ru")
        bob.keyboard.press("Escape")  # declines, from the keyboard
        expect(bob.locator("#message-list .msg.system .line", has_text="Входящий звонок: отклонён")).to_have_count(1, timeout=LONG)
        expect(bob.locator("#message-list .msg.system .line", has_text="Пропущенный звонок")).to_have_count(1)
        expect(bob.locator("#call")).to_be_hidden(timeout=LONG)
        expect(alice.locator("#call")).to_be_hidden(timeout=LONG)
        check_lang(bob, "chat", "ru")
        shoot(bob, shots, "chat-calls", "ru")
        shoot(alice, shots, "chat-calls", "en")
    finally:
        stop(apps, relay, ba, bb)


def test_a_call_connects_over_tcp_on_the_relays_own_port_when_udp_is_off(pw, workdir, shots):
    """No TURN over UDP at all (as where UDP is blocked): TURN over TCP on the relay's own
    port, told from HTTP by its first byte."""
    tone(workdir / "a-tcp.wav", 500)
    tone(workdir / "b-tcp.wav", 1000)
    config = workdir / "relay-tcp.toml"
    config.write_text('[turn]\nlisten = "off"\n')
    ba = launch(pw, workdir / "a-tcp.wav")
    bb = launch(pw, workdir / "b-tcp.wav")
    apps = []
    relay = None
    try:
        relay, alice_app, bob_app, alice, bob = pair(ba, workdir, "calls-tcp", apps, browser_b=bb, relay_config=config)
        call_up(alice, bob, bob_app)
        only_relayed(alice, "tcp")
        only_relayed(bob, "tcp")
        assert abs(peak(bob) - 500) < 30
        assert abs(peak(alice) - 1000) < 30
        hang_up(alice, bob)
    finally:
        stop(apps, relay, ba, bb)


def wait_port(host, port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {host}:{port}")


def test_tunnel_mode_a_call_through_a_socks_proxy_inside_the_relays_tls(pw, workdir, shots):
    """Tunnel mode: both apps go through a real SOCKS proxy (microsocks) to a relay with its
    own pinned certificate. Each browser's only TURN server is its app's loopback tunnel,
    which the app carries through the proxy, inside the relay's TLS, to the relay's own port:
    the call leaves the machine as the messages do, and connects relayed with each side
    hearing the other."""
    tone(workdir / "a-tun.wav", 600)
    tone(workdir / "b-tun.wav", 1200)
    socks_port = free_port()
    socks_log = workdir / "microsocks.log"
    socks = subprocess.Popen(
        ["microsocks", "-i", "127.0.0.1", "-p", str(socks_port)],
        stdout=open(socks_log, "w"),
        stderr=subprocess.STDOUT,
    )
    wait_port("127.0.0.1", socks_port)
    ba = launch(pw, workdir / "a-tun.wav")
    bb = launch(pw, workdir / "b-tun.wav")
    apps = []
    relay = None
    try:
        relay, alice_app, bob_app, alice, bob = pair(
            ba, workdir, "calls-tun", apps, browser_b=bb,
            relay=Relay(workdir / "relay-calls-tun", tls=True),
            app_env={"SAMIZDAT_PROXY": f"socks5h://127.0.0.1:{socks_port}"},
        )
        assert relay.url.startswith("https://") and "#pin=" in relay.url, relay.url
        relay_port = relay.url.split("://")[1].split("#")[0].split(":")[1]
        to_relay = re.compile(rf"connected to 127\.0\.0\.1:{relay_port}\b")
        before = len(to_relay.findall(socks_log.read_text()))
        assert before > 0, "the apps' messaging goes through the proxy"
        call_up(alice, bob, bob_app)
        for page in (alice, bob):
            s = only_relayed(page, "tcp")
            # The TURN server this side spoke to is its own app's tunnel on loopback, never
            # the relay's address.
            assert s["pair"][3].startswith("turn:127.0.0.1:"), s["pair"]
            assert f":{relay_port}" not in s["pair"][3], s["pair"]
            assert page.evaluate("() => window.samizdatCall().tunnel") is True
        assert abs(peak(bob) - 600) < 30
        assert abs(peak(alice) - 1200) < 30
        # The tunnels' connections went through the proxy to the relay's own port.
        after = len(to_relay.findall(socks_log.read_text()))
        assert after >= before + 2, (before, after)
        print(f"proxy connections to the relay: {before} before the call, {after} after; pair: {s['pair']}", flush=True)
        hang_up(alice, bob)
        expect(alice.locator("#message-list .msg.system .line", has_text="Outgoing call, 0:")).to_have_count(1, timeout=LONG)
    finally:
        stop(apps, relay, ba, bb)
        socks.kill()
        socks.wait(timeout=30)


class Netns:
    """A network namespace for the browsers and apps, joined to this one by a veth pair:
    the relay listens on this side's address; `nft` rules inside drop what a test blocks."""

    def __init__(self, tag, subnet):
        self.name = f"szc-{tag}"
        self.outer = f"{subnet}.1"
        self.inner = f"{subnet}.2"
        self.veth = f"szc{tag}o"
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        for cmd in [
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", self.veth, "type", "veth", "peer", "name", f"szc{tag}i"],
            ["ip", "link", "set", f"szc{tag}i", "netns", self.name],
            ["ip", "addr", "add", f"{self.outer}/24", "dev", self.veth],
            ["ip", "link", "set", self.veth, "up"],
            *[["ip", "netns", "exec", self.name, *c] for c in [
                ["ip", "addr", "add", f"{self.inner}/24", "dev", f"szc{tag}i"],
                ["ip", "link", "set", f"szc{tag}i", "up"],
                ["ip", "link", "set", "lo", "up"],
                ["ip", "route", "add", "default", "via", self.outer],
            ]],
        ]:
            subprocess.run(cmd, check=True, capture_output=True)
        self.prefix = ["ip", "netns", "exec", self.name]

    def nft(self, *args):
        return subprocess.run([*self.prefix, "nft", *args], check=True, capture_output=True, text=True).stdout

    def chromium(self, workdir):
        """A chromium that runs inside the namespace (Playwright talks to it over a pipe)."""
        path = workdir / f"chromium-{self.name}"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} {CHROMIUM} "$@"\n')
        path.chmod(0o755)
        return path

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)


def test_with_udp_to_the_relay_blocked_a_call_connects_over_tcp(pw, workdir, shots):
    """UDP blocked by a firewall, as on many office and mobile networks: the browsers and the
    apps live in a network namespace whose nftables drop every UDP packet to the relay's
    address. The browsers try TURN over UDP (the drop counter shows it), then connect over
    TCP."""
    assert os.geteuid() == 0, "network namespaces need root (CI runs as root)"
    ns = Netns("udp", "10.231.7")
    ns.nft("add", "table", "inet", "szc")
    ns.nft("add", "chain", "inet", "szc", "out", "{ type filter hook output priority 0; policy accept; }")
    ns.nft("add", "rule", "inet", "szc", "out", "ip", "daddr", ns.outer, "meta", "l4proto", "udp", "counter", "drop")
    tone(workdir / "a-udp.wav", 700)
    tone(workdir / "b-udp.wav", 1400)
    chromium = ns.chromium(workdir)
    ba = launch(pw, workdir / "a-udp.wav", chromium)
    bb = launch(pw, workdir / "b-udp.wav", chromium)
    apps = []
    relay = None
    try:
        relay, alice_app, bob_app, alice, bob = pair(
            ba, workdir, "calls-udp", apps, browser_b=bb,
            relay=Relay(workdir / "relay-calls-udp", host=ns.outer),
            app_prefix=ns.prefix,
        )
        call_up(alice, bob, bob_app)
        for page in (alice, bob):
            s = only_relayed(page, "tcp")
            assert s["pair"][3].startswith(f"turn:{ns.outer}:"), s["pair"]
        assert abs(peak(bob) - 700) < 30
        assert abs(peak(alice) - 1400) < 30
        dropped = re.search(r"counter packets (\d+)", ns.nft("list", "chain", "inet", "szc", "out"))
        assert dropped and int(dropped.group(1)) > 0, "the browsers tried UDP and it was dropped"
        print(f"UDP packets dropped: {dropped.group(1)}; pair: {s['pair']}", flush=True)
        hang_up(alice, bob)
    finally:
        stop(apps, relay, ba, bb)
        ns.close()


# Per remote person in a group call: the loudest frequency of what arrives from them.
GROUP_PEAKS = """async () => {
  const out = {};
  const ctx = new AudioContext();
  if (ctx.state !== 'running') await ctx.resume();
  const ans = [];
  document.querySelectorAll('.call-peer-audio').forEach((el) => {
    if (!el.srcObject) { out[el.dataset.name] = 'no stream'; return; }
    const an = ctx.createAnalyser();
    an.fftSize = 8192;
    ctx.createMediaStreamSource(el.srcObject).connect(an);
    ans.push([el.dataset.name, an]);
  });
  await new Promise((r) => setTimeout(r, 1500));
  for (const [name, an] of ans) {
    const data = new Float32Array(an.frequencyBinCount);
    an.getFloatFrequencyData(data);
    let best = 1;
    for (let i = 2; i < data.length; i++) if (data[i] > data[best]) best = i;
    out[name] = best * ctx.sampleRate / an.fftSize;
  }
  ctx.close();
  return out;
}"""

GROUP_STATS = """async () => {
  const c = window.samizdatCall();
  const out = [];
  for (const p of c.peers) {
    const stats = await p.pc.getStats();
    const kinds = [];
    stats.forEach((s) => { if (s.type === 'local-candidate' || s.type === 'remote-candidate') kinds.push(s.candidateType); });
    out.push({ name: p.name, state: p.pc.connectionState, kinds });
  }
  return out;
}"""


def group_connected(page, n):
    page.wait_for_function(
        f"""() => {{ const c = window.samizdatCall && window.samizdatCall();
          return !!(c && c.group && c.peers.length === {n} && c.peers.every((p) => p.pc.connectionState === 'connected')); }}""",
        timeout=LONG,
    )


def test_a_group_call_of_three_where_everyone_hears_everyone_through_sframe(pw, workdir, shots):
    """A 3-person group call: a mesh of relayed connections, each frame sealed with SFrame
    (keyed from the group's MLS exporter) in the app's worker. Alice starts it, Bob joins
    (offering to Alice), Carol joins (offering to both); every pair hears each other's tone,
    every connection is relayed only, every received frame opened with its sender's key and
    none dropped. Carol leaves, the others keep talking; the call ends as lines in the chat."""
    tones = {"alice": 500, "bob": 800, "carol": 1250}
    for who, hz in tones.items():
        tone(workdir / f"{who}-group.wav", hz)
    browsers = {who: launch(pw, workdir / f"{who}-group.wav") for who in tones}
    apps = []
    relay = None
    try:
        relay, alice_app, bob_app, alice, bob = pair(
            browsers["alice"], workdir, "calls-group", apps, browser_b=browsers["bob"]
        )
        carol_app = App(workdir / "carol-calls-group", relay.url)
        apps.append(carol_app)
        carol = browsers["carol"].new_context(locale="en-US", viewport={"width": 1200, "height": 900}).new_page()
        carol.goto(carol_app.url)
        onboard(carol, "Carol")
        accept_invite(alice, alice_app, carol, carol_app, "alice")
        alice.goto(alice_app.base + "/")
        expect(alice.locator(".chat-item", has_text="Carol")).to_have_count(1, timeout=LONG)
        alice.goto(alice_app.base + "/groups/new")
        alice.fill("#group", "trio")
        alice.locator("label.check", has_text="Bob").locator("input").check()
        alice.locator("label.check", has_text="Carol").locator("input").check()
        alice.click("form[action='/groups'] button[type=submit]")
        expect(alice.locator(".chat-head h1")).to_have_text("trio", timeout=LONG)
        # Bob reads the app in Russian.
        set_lang(bob, bob_app.base, "ru")
        for page, app in ((bob, bob_app), (carol, carol_app)):
            page.goto(app.base + "/")
            open_chat(page, "trio")
        alice.goto(alice.url)

        # Alice starts it; both others ring.
        alice.locator(".call-start[data-group='1']").click()
        expect(alice.locator("#call-status")).to_have_text("Waiting for the others to join…", timeout=LONG)
        for page in (bob, carol):
            expect(page.locator("#call-accept")).to_be_visible(timeout=LONG)
            expect(page.locator("#call-name")).to_have_text("trio")
        expect(carol.locator("#call-status")).to_have_text("Incoming group call")
        expect(bob.locator("#call-status")).to_have_text("Входящий групповой звонок")
        expect(bob.locator("#call-accept")).to_have_text("Принять")
        shoot(carol, shots, "call-group-incoming", "en")
        shoot(bob, shots, "call-group-incoming", "ru")
        bob.click("#call-accept")
        group_connected(alice, 1)
        group_connected(bob, 1)
        carol.click("#call-accept")
        for page in (alice, bob, carol):
            group_connected(page, 2)
        expect(alice.locator("#call-peers li.on")).to_have_count(2)
        expect(bob.locator("#call-status")).to_have_text("На связи")
        shoot(alice, shots, "call-group", "en")
        shoot(bob, shots, "call-group", "ru")

        names = {"alice": {"Bob": "bob", "Carol": "carol"}, "bob": {"alice": "alice", "Carol": "carol"},
                 "carol": {"alice": "alice", "Bob": "bob"}}
        pages = {"alice": alice, "bob": bob, "carol": carol}
        for who, page in pages.items():
            for p in page.evaluate(GROUP_STATS):
                assert p["state"] == "connected" and p["kinds"] and set(p["kinds"]) == {"relay"}, (who, p)
            # Shown by what this person calls them (someone not a contact carries a key
            # suffix: "Carol (~5c4144)").
            peaks = {k.split(" (~")[0]: v for k, v in page.evaluate(GROUP_PEAKS).items()}
            assert set(peaks) == set(names[who]), (who, peaks)
            for shown, other in names[who].items():
                assert isinstance(peaks[shown], (int, float)) and abs(peaks[shown] - tones[other]) < 30, (who, peaks)
            print(f"{who} hears {peaks}", flush=True)
        # SFrame: frames sealed to each peer and opened from each, none dropped.
        time.sleep(1.5)
        for who, page in pages.items():
            counts = page.evaluate("() => window.samizdatSframe")
            opened = [c for c in counts.values() if c["op"] == "decrypt"]
            sealed = [c for c in counts.values() if c["op"] == "encrypt"]
            assert len(opened) == 2 and len(sealed) == 2, (who, counts)
            assert all(c["frames"] > 20 and c["dropped"] == 0 for c in opened + sealed), (who, counts)

        # Carol leaves; alice and bob keep each other.
        carol.click("#call-hangup")
        expect(carol.locator("#call")).to_be_hidden(timeout=LONG)
        for page in (alice, bob):
            page.wait_for_function("() => window.samizdatCall().peers.length === 1", timeout=LONG)
            group_connected(page, 1)
        hz = bob.evaluate(GROUP_PEAKS)
        assert abs(hz["alice"] - tones["alice"]) < 30, hz
        alice.click("#call-hangup")
        bob.wait_for_function("() => window.samizdatCall().peers.length === 0", timeout=LONG)
        expect(bob.locator("#call-status")).to_have_text("Ждём, пока присоединятся остальные…", timeout=LONG)
        bob.click("#call-hangup")
        expect(bob.locator("#call")).to_be_hidden(timeout=LONG)
        expect(alice.locator("#message-list .msg.system .line", has_text="Group call, 0:")).to_have_count(1, timeout=LONG)
        expect(bob.locator("#message-list .msg.system .line", has_text="Групповой звонок, 0:")).to_have_count(1, timeout=LONG)
        expect(carol.locator("#message-list .msg.system .line", has_text="Group call, 0:")).to_have_count(1, timeout=LONG)
        check_lang(bob, "chat", "ru")

        # Busy: alice is on a 1:1 call with bob when carol calls her; carol hears "busy",
        # alice finds a missed call in her chat with carol.
        open_chat(alice, "Bob")
        bob.goto(bob_app.base + "/")
        ring(alice, bob)
        bob.click("#call-accept")
        connected(alice, bob)
        carol.goto(carol_app.base + "/")
        open_chat(carol, "alice")
        carol.locator(".call-start[data-video='0']").click()
        expect(carol.locator("#call")).to_be_hidden(timeout=LONG)
        expect(carol.locator("#message-list .msg.system .line", has_text="Outgoing call: busy")).to_have_count(1, timeout=LONG)
        expect(alice.locator("#call-status")).to_have_text("Connected")
        hang_up(alice, bob)
        open_chat(alice, "Carol")
        expect(alice.locator("#message-list .msg.system .line", has_text="Missed call")).to_have_count(1, timeout=LONG)
    finally:
        stop(apps, relay, *browsers.values())


def test_sframe_matches_the_rfc_9605_test_vectors(browser, workdir):
    """The worker's SFrame (header, key schedule, nonce, AES-GCM) against RFC 9605's test
    vectors for AES_128_GCM_SHA256_128, and a frame altered in flight is refused."""
    relay = Relay(workdir / "relay-sframe").start()
    app = App(workdir / "sframe", relay.url)
    try:
        page = browser.new_context().new_page()
        page.goto(app.url)
        page.add_script_tag(url="/static/sframe.js")
        result = page.evaluate("""async () => {
          const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
          const headers = [[0, 0, '00'], [1, 255, '18ff'], [255, 256, '89ff0100'], [256, 65535, '990100ffff'],
            [65536, 1, 'a1010000'], [4294967295, 16777216, 'bbffffffff01000000']]
            .map(([k, c, want]) => [hex(sframeHeader(k, c)), want, JSON.stringify(sframeParse(sframeHex(want)))]);
          const base = sframeHex('000102030405060708090a0b0c0d0e0f');
          const keys = await sframeKeys(base, 291);
          const meta = sframeHex('4945544620534672616d65205747');
          const pt = sframeHex('64726166742d696574662d736672616d652d656e63');
          const ct = await sframeEncrypt(keys, 291, 17767, pt, meta);
          const back = await sframeDecrypt(keys, 291, ct, meta);
          const bad = ct.slice(); bad[bad.length - 1] ^= 1;
          let refused = false;
          try { await sframeDecrypt(keys, 291, bad, meta); } catch (_) { refused = true; }
          let otherKid = false;
          try { await sframeDecrypt(keys, 292, ct, meta); } catch (_) { otherKid = true; }
          return { headers, key: hex(keys.rawKey), salt: hex(keys.salt), ct: hex(ct), back: hex(back), refused, otherKid };
        }""")
        for got, want, _ in result["headers"]:
            assert got == want, result["headers"]
        assert result["key"] == "d34f547f4ca4f9a7447006fe7fcbf768"
        assert result["salt"] == "75234edefe07819026751816"
        assert result["ct"] == "9901234567b7412c2513a1b66dbb48841bbaf17f598751176ad847681a69c6d0b091c07018ce4adb34eb"
        assert result["back"] == "64726166742d696574662d736672616d652d656e63"
        assert result["refused"] and result["otherKid"]
    finally:
        app.stop()
        relay.kill()


UFRAGS = """() => { const pc = window.samizdatCall().pc;
  const u = (d) => (d.sdp.match(/a=ice-ufrag:(\\S+)/) || [])[1];
  return [u(pc.localDescription), u(pc.remoteDescription)]; }"""


def test_a_call_renegotiates_ice_restart_and_video_added_to_a_voice_call(pw, workdir, shots):
    """Renegotiation inside MLS: an ICE restart (as after the network changed) gives both
    sides new ICE credentials and the call goes on, relayed; then the caller turns the camera
    on in a voice call and the other side decodes moving frames."""
    tone(workdir / "a-re.wav", 550)
    tone(workdir / "b-re.wav", 1100)
    ba = launch(pw, workdir / "a-re.wav")
    bb = launch(pw, workdir / "b-re.wav")
    apps = []
    relay = None
    try:
        relay, alice_app, bob_app, alice, bob = pair(ba, workdir, "calls-re", apps, browser_b=bb)
        call_up(alice, bob, bob_app)
        before = alice.evaluate(UFRAGS)
        bob_before = bob.evaluate(UFRAGS)
        assert before[0] == bob_before[1], (before, bob_before)
        alice.evaluate("() => window.samizdatCall().pc.restartIce()")
        alice.wait_for_function(
            f"() => {{ const u = ({UFRAGS})(); return u[0] !== '{before[0]}' && u[1] !== '{before[1]}'; }}",
            timeout=LONG,
        )
        connected(alice, bob)
        after = alice.evaluate(UFRAGS)
        assert bob.evaluate(UFRAGS) == [after[1], after[0]], (after, bob.evaluate(UFRAGS))
        only_relayed(alice)
        assert abs(peak(bob) - 550) < 30
        assert abs(peak(alice) - 1100) < 30

        # Video added to the voice call.
        expect(alice.locator("#call-camera")).to_have_text("Camera on")
        alice.click("#call-camera")
        expect(alice.locator("#call-camera")).to_have_text("Camera off", timeout=LONG)
        bob.wait_for_function(f"async () => ({STATS.strip()})().then((s) => s.videoFrames > 10)", timeout=LONG)
        expect(bob.locator("#call-remote-video")).to_be_visible()
        assert abs(peak(bob) - 550) < 30
        hang_up(alice, bob)
        expect(alice.locator("#message-list .msg.system .line", has_text="Outgoing call, 0:")).to_have_count(1, timeout=LONG)
    finally:
        stop(apps, relay, ba, bb)


def test_a_relay_that_alters_the_offer_makes_the_call_fail_with_a_clear_message(pw, workdir, shots):
    """The relay rewrites alice's invite (say, to put its own DTLS fingerprint in the offer)
    while bob's app is closed. Bob's app rejects the entry and nothing rings; it tells alice
    inside MLS that it could not read her message, so her call stops ringing at once with
    "could not connect" and her chat says her message was changed on the way — in English
    and, for bob's side, nothing rings at all."""
    import base64
    import sqlite3

    tone(workdir / "a-tamper.wav", 450)
    tone(workdir / "b-tamper.wav", 900)
    ba = launch(pw, workdir / "a-tamper.wav")
    bb = launch(pw, workdir / "b-tamper.wav")
    apps = []
    relay = None
    try:
        relay, alice_app, bob_app, alice, bob = pair(ba, workdir, "calls-tamper", apps, browser_b=bb)
        open_chat(alice, "Bob")
        conversation = alice.locator(".call-start").first.get_attribute("data-conversation")
        bob_app.stop()
        alice.locator(".call-start[data-video='0']").click()
        expect(alice.locator("#call-status")).to_have_text("Calling…", timeout=LONG)
        alice.wait_for_function("() => window.samizdatCall().ringing === 'ringback'", timeout=LONG)

        # The relay alters the newest entry of the chat's log: the invite.
        log = base64.urlsafe_b64decode(conversation + "=" * (-len(conversation) % 4))
        db = sqlite3.connect(workdir / "relay-calls-tamper" / "relay.db", timeout=30)
        seq, body = db.execute(
            "SELECT seq, body FROM entries WHERE group_id = ? ORDER BY seq DESC LIMIT 1", (log,)
        ).fetchone()
        body = bytearray(body)
        body[len(body) // 2] ^= 0x01
        db.execute("UPDATE entries SET body = ? WHERE group_id = ? AND seq = ?", (bytes(body), log, seq))
        db.commit()
        db.close()

        bob_app = App(bob_app.home, relay.url, env={"SAMIZDAT_PASSPHRASE": PASSPHRASE})
        apps.append(bob_app)
        bob.goto(bob_app.url)
        expect(bob.locator("body")).to_have_attribute("data-page", "chats", timeout=LONG)
        expect(alice.locator("#call")).to_be_hidden(timeout=LONG)
        expect(alice.locator("#message-list .msg.system .line", has_text="Outgoing call: could not connect")).to_have_count(1, timeout=LONG)
        expect(alice.locator("#message-list .msg.system .line", has_text="They could not read a message you sent")).to_have_count(1, timeout=LONG)
        shoot(alice, shots, "chat-call-tampered", "en")
        set_lang(alice, alice_app.base, "ru")
        alice.goto(alice_app.base + "/")
        open_chat(alice, "Bob")
        expect(alice.locator("#message-list .msg.system .line", has_text="Собеседник не смог прочитать ваше сообщение")).to_have_count(1)
        expect(alice.locator("#message-list .msg.system .line", has_text="Исходящий звонок: соединение не установлено")).to_have_count(1)
        check_lang(alice, "chat", "ru")
        shoot(alice, shots, "chat-call-tampered", "ru")
        # Nothing rang on bob's side, and nothing of the altered offer is there.
        expect(bob.locator("#call-accept")).to_be_hidden()
        out = cli(bob_app.home, "calls", "--json").stdout
        assert out.strip() == "", out
    finally:
        stop(apps, relay, ba, bb)
