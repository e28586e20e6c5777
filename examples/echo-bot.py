#!/usr/bin/env python3
"""A Samizdat bot that answers every incoming message with "echo: <text>".

Python standard library only. It starts `samizdat rpc` as a child process and speaks
line-delimited JSON-RPC 2.0 with it (docs/RPC.md).

    SAMIZDAT_HOME=~/bot SAMIZDAT_PASSPHRASE=... python3 examples/echo-bot.py

It never misses or repeats a message across restarts: it keeps the position of the last event
it handled in `echo-bot.cursor` (in the profile directory) and asks `get_events` for what came
after it, so messages that arrived while the bot was down are answered when it starts.

Environment: SAMIZDAT_BIN (default: `samizdat` on PATH), SAMIZDAT_HOME, SAMIZDAT_PASSPHRASE.
"""

import json
import os
import signal
import subprocess
import sys


class Rpc:
    def __init__(self, argv):
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.next_id = 1

    def call(self, method, **params):
        request_id = self.next_id
        self.next_id += 1
        line = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        while True:
            answer = self.proc.stdout.readline()
            if not answer:
                raise SystemExit("samizdat rpc stopped")
            msg = json.loads(answer)
            if msg.get("id") != request_id:
                continue  # a notification; this bot polls get_events instead
            if "error" in msg:
                raise RuntimeError(f"{method}: {msg['error']['message']}")
            return msg["result"]


def main():
    home = os.environ.get("SAMIZDAT_HOME")
    binary = os.environ.get("SAMIZDAT_BIN", "samizdat")
    rpc = Rpc([binary, "rpc"])
    try:
        serve(rpc, home)
    finally:
        # Closing its input stops `samizdat rpc` cleanly (it answers what was asked first).
        rpc.proc.stdin.close()
        rpc.proc.wait(timeout=60)


def serve(rpc, home):
    cursor_file = os.path.join(home, "echo-bot.cursor") if home else None
    if cursor_file and os.path.exists(cursor_file):
        with open(cursor_file) as f:
            since = int(f.read().strip() or 0)
    else:
        # First start: answer what arrives from now on, not the profile's past.
        since = rpc.call("get_events", since=2**63 - 1)["last"]
    me = rpc.call("whoami")
    print(f"echo bot ready as {me['name']}", flush=True)
    while True:
        page = rpc.call("get_events", since=since, timeout_ms=30000)
        if page["overflow"]:
            print("warning: some events were dropped from the log before we read them", file=sys.stderr)
        for event in page["events"]:
            # Ignore event kinds and fields this bot does not know (the API may add some).
            if event.get("event") == "message":
                try:
                    rpc.call("send", conversation_id=event["conversation_id"], text="echo: " + event["text"])
                except RuntimeError as e:
                    print(f"could not answer: {e}", file=sys.stderr)
            since = event["seq"]
            if cursor_file:
                with open(cursor_file + ".tmp", "w") as f:
                    f.write(str(since))
                os.replace(cursor_file + ".tmp", cursor_file)


def stop(_signum, _frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop)
    try:
        main()
    except KeyboardInterrupt:
        pass
