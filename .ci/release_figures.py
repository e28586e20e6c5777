"""Sizes and start-up times of a release binary and its package, as Markdown lines.

    python3 .ci/release_figures.py BINARY DEB

Start-up is the median of repeated runs on this machine: `samizdat --version`, and a relay
from exec to the line that says it listens (SQLite in a new directory, port 0).
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

binary, deb = sys.argv[1], sys.argv[2]


def mib(n):
    return f"{n / 1048576:.1f} MiB"


with tempfile.TemporaryDirectory() as tmp:
    subprocess.run(["dpkg-deb", "-x", deb, tmp], check=True)
    stripped = os.path.getsize(os.path.join(tmp, "usr/bin/samizdat"))

version = []
for _ in range(50):
    t = time.perf_counter()
    subprocess.run([binary, "--version"], check=True, stdout=subprocess.DEVNULL)
    version.append(time.perf_counter() - t)

relay = []
for _ in range(10):
    with tempfile.TemporaryDirectory() as data:
        t = time.perf_counter()
        p = subprocess.Popen(
            [binary, "relay", "--listen", "127.0.0.1:0", "--data", data, "--allow-root"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "SAMIZDAT_LOG": "error"},
        )
        line = p.stdout.readline().decode()
        relay.append(time.perf_counter() - t)
        p.terminate()
        p.wait(timeout=30)
        assert line.startswith("relay listening on"), line

print(f"- binary as built (line tables kept): {mib(os.path.getsize(binary))}")
print(f"- binary in the package (stripped; debug info in samizdat-dbgsym): {mib(stripped)}")
print(f"- package: {mib(os.path.getsize(deb))}")
print(f"- `samizdat --version`: {statistics.median(version) * 1000:.2f} ms median of 50")
print(f"- relay exec → listening (new SQLite): {statistics.median(relay) * 1000:.1f} ms median of 10")
