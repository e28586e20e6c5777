"""Fixtures for the browser tests: the real samizdat binary, a real relay, apps on loopback,
and Debian's chromium driven by Playwright (its own browser download is not used)."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("SAMIZDAT_BIN", str(ROOT / "target" / "debug" / "samizdat"))
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
SHOTS = ROOT / "target" / "screenshots"
PASSPHRASE = "correct horse battery staple"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """A relay on `host` (loopback unless a test's network says otherwise); with `tls`, its
    own self-signed certificate, pinned in its address (`https://…#pin=…`)."""

    def __init__(self, data, config=None, host="127.0.0.1", tls=False):
        self.data = data
        self.config = config
        self.host = host
        self.tls = tls
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self.proc = None

    def start(self):
        extra = ["--config", str(self.config)] if self.config else []
        if self.tls:
            extra += ["--tls-self-signed", str(Path(self.data).with_name(Path(self.data).name + "-tls"))]
        self.proc = subprocess.Popen(
            [BIN, "relay", "--allow-root", "--listen", f"{self.host}:{self.port}", "--data", str(self.data), *extra],
            stdout=subprocess.PIPE,
            stderr=open(f"/tmp/{Path(self.data).name}.log", "ab") if os.environ.get("SAMIZDAT_RELAY_LOG") else subprocess.DEVNULL,
            # The free-disk floor would watch the test machine's shared disk; no test here checks it.
            env={**os.environ, "SAMIZDAT_LOG": os.environ.get("SAMIZDAT_RELAY_LOG", "error"),
                 "SAMIZDAT_RELAY_MIN_FREE_DISK_PERCENT": "0"},
        )
        line = self.proc.stdout.readline().decode()
        assert "listening" in line, line
        self.url = line.split()[-1]
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


class App:
    """`samizdat app --no-open` on its own profile and port (`prefix`: run it inside
    something, such as `ip netns exec NS`)."""

    def __init__(self, home, relay_url, env=None, prefix=()):
        self.home = home
        env = {**os.environ, "SAMIZDAT_LOG": "error", **(env or {})}
        # The app asks for the passphrase in the page unless the environment gives it.
        env = {k: v for k, v in env.items() if v is not None}
        self.proc = subprocess.Popen(
            [*prefix, BIN, "--home", str(home), "app", "--no-open", "--listen", "127.0.0.1:0",
             "--relay", relay_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.time() + 120
        self.url = None
        while time.time() < deadline:
            line = self.proc.stdout.readline().decode().strip()
            if line.startswith("http://"):
                self.url = line
                break
            if not line and self.proc.poll() is not None:
                break
        assert self.url, "the app did not print its URL"
        self.base = self.url.split("/login")[0]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class DeviceJoin:
    """`samizdat device join` on a new home, in the background: the link and code it shows."""

    def __init__(self, home, relay_url, name, timeout=60):
        self.proc = subprocess.Popen(
            [BIN, "--home", str(home), "device", "join", "--name", name, "--relay", relay_url,
             "--timeout", str(timeout)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "SAMIZDAT_PASSPHRASE": PASSPHRASE, "SAMIZDAT_LOG": "error"},
        )
        seen = ""
        self.link = None
        while True:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            seen += line
            if line.startswith("samizdat://device/"):
                self.link = line.strip()
                break
        assert self.link, f"device join showed no link: {seen} {self.proc.stderr.read().decode()}"
        self.code = seen.split("code ")[1][:7]

    def wait(self, timeout=120):
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out.decode(), err.decode()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def cli(home, *args, check=True):
    r = subprocess.run(
        [BIN, "--home", str(home), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "SAMIZDAT_PASSPHRASE": PASSPHRASE, "SAMIZDAT_LOG": "error"},
        stdin=subprocess.DEVNULL,
        timeout=180,
    )
    if check:
        assert r.returncode == 0, f"samizdat {args}: {r.stderr}"
    return r


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="samizdat-browser-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Voice messages: a fake microphone (a tone), allowed without a prompt.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


@pytest.fixture(scope="session")
def pw():
    assert Path(BIN).exists(), f"build the binary first: {BIN}"
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(pw):
    b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture(scope="session")
def shots():
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS
