#!/usr/bin/env bash
# The relay's systemd unit stays confined: `systemd-analyze security` offline (systemd need not
# run here) must rate it at most 1.5 ("OK"); --threshold counts in tenths.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || { apt-get update && apt-get install -y systemd; }
systemd-analyze security --offline=true --threshold=15 packaging/samizdat-relay.service | tail -n 1
# The configuration the package installs parses as the relay reads it.
cargo run -q -p samizdat -- relay --config packaging/relay.toml --check-config
