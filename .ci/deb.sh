#!/usr/bin/env bash
# The Debian package on this machine (issue 32): install it, run the relay the way its unit
# says, send a message through it with the installed binary, upgrade to a second build with
# a message waiting, purge (data kept), purge again with SAMIZDAT_PURGE_DATA=yes (data gone).
#
#   .ci/deb.sh [BINARY]      default target/debug/samizdat; release-checks passes the release
#
# It installs into this machine's /usr, /etc and /var/lib, so it runs only where that is
# wanted: in CI (CI=true) or with SAMIZDAT_DEB_TEST=1, as root.
#
# systemd is not PID 1 here, so the relay runs from the installed unit's ExecStart= as its
# User=/Group=, UMask=, LimitNOFILE=, without capabilities and with no_new_privs, inside a
# bubblewrap sandbox standing in for the unit's ProtectSystem=strict (the whole tree
# read-only but StateDirectory=), ProtectHome=, PrivateTmp=, PrivateDevices= and private
# PID/IPC/UTS namespaces — and the sandbox is probed from inside before the relay starts.
# What bubblewrap does not give (SystemCallFilter=, MemoryDenyWriteExecute=, RestrictAddressFamilies=)
# is rated on the installed unit by `systemd-analyze security --offline=true` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
binary="${1:-target/debug/samizdat}"

if [ "${CI:-}" != true ] && [ "${SAMIZDAT_DEB_TEST:-}" != 1 ]; then
  echo "deb.sh installs a package into this machine: run it in CI or with SAMIZDAT_DEB_TEST=1" >&2
  exit 2
fi
[ "$(id -u)" = 0 ] || { echo "deb.sh needs root (dpkg -i)" >&2; exit 2; }
# One at a time on a machine: two runs would install over each other's package.
exec 9>/run/samizdat-deb-test.lock
flock 9
for pkg in bubblewrap adduser init-system-helpers man-db file lintian; do
  dpkg -s "$pkg" >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "$pkg"; }
done

work="$root/target/deb-ci"
rm -rf "$work"
mkdir -p "$work"
base="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
v1="$base-1~ci1"
v2="$base-1~ci2"
fast=()
case "$binary" in */debug/*) fast=(--fast) ;; esac
deb1="$(bash packaging/deb/build.sh --binary "$binary" --version "$v1" --out "$work/1" "${fast[@]}" | tail -n1)"
deb2="$(bash packaging/deb/build.sh --binary "$binary" --version "$v2" --out "$work/2" "${fast[@]}" | tail -n1)"
unit=/lib/systemd/system/samizdat-relay.service
relay_pid=""

echo "-- lintian (Debian's package checks; the one tag left out is for uploads to Debian's archive)"
if ! lintian --fail-on error,warning --suppress-tags initial-upload-closes-no-bugs "$deb1" \
    > "$work/lintian.log" 2>&1; then
  cat "$work/lintian.log"; echo "deb.sh: lintian found errors or warnings" >&2; exit 1
fi

fail() { echo "deb.sh: $*" >&2; [ -f "$work/relay.log" ] && tail -n 20 "$work/relay.log" >&2; exit 1; }
stop_relay() {
  if [ -n "$relay_pid" ]; then
    # SIGTERM to the relay itself (bubblewrap would pass on only a SIGKILL), as systemd does.
    pkill -TERM -f '^/usr/bin/samizdat relay' 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
    relay_pid=""
  fi
}
cleanup() {
  stop_relay
  if dpkg -s samizdat >/dev/null 2>&1; then
    SAMIZDAT_PURGE_DATA=yes dpkg --purge samizdat samizdat-dbgsym >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
# A run that died half-way leaves its package: only ours (~ci versions) are removed.
if dpkg -s samizdat >/dev/null 2>&1; then
  case "$(dpkg-query -W -f '${Version}' samizdat)" in
    *~ci*) SAMIZDAT_PURGE_DATA=yes dpkg --purge samizdat samizdat-dbgsym >/dev/null ;;
    *) fail "a samizdat package that is not this test's is installed here; not touching it" ;;
  esac
fi
rm -rf /var/lib/samizdat

# The unit's own settings, read from the installed file.
unit_value() { sed -n "s/^$1=//p" "$unit" | tail -n1; }
# Run a command as the unit runs the relay (see the header).
as_unit() {
  local user group umask nofile
  user="$(unit_value User)"; group="$(unit_value Group)"
  umask="$(unit_value UMask)"; nofile="$(unit_value LimitNOFILE)"
  # This machine caps every process at its hard limit (about 20,000), which even root
  # cannot raise: the unit's 1,048,576 is given as far as the machine allows.
  [ "$nofile" -le "$(ulimit -Hn)" ] || nofile="$(ulimit -Hn)"
  prlimit --nofile="$nofile:$nofile" -- \
    bwrap --die-with-parent --unshare-ipc --unshare-pid --unshare-uts --unshare-cgroup-try \
      --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --tmpfs /var/tmp \
      --tmpfs /home --tmpfs /root --tmpfs /run/user \
      --bind /var/lib/samizdat /var/lib/samizdat \
      -- setpriv --reuid="$user" --regid="$group" --init-groups --no-new-privs \
        --bounding-set=-all --inh-caps=-all --ambient-caps=-all \
        -- sh -c "umask $umask; exec \"\$@\"" sh "$@"
}
start_relay() {
  local exec_start
  exec_start="$(unit_value ExecStart)"
  # shellcheck disable=SC2086 # ExecStart is a command line of words without quotes
  as_unit $exec_start > "$work/relay.log" 2>&1 &
  relay_pid=$!
  for _ in $(seq 1 200); do
    url="$(sed -n 's/^relay listening on //p' "$work/relay.log" | head -n1)"
    [ -n "$url" ] && return 0
    kill -0 "$relay_pid" 2>/dev/null || fail "the relay exited"
    sleep 0.1
  done
  fail "the relay did not start"
}
export SAMIZDAT_PASSPHRASE="deb test passphrase, not a secret" SAMIZDAT_LOG=error
alice=(/usr/bin/samizdat --home "$work/alice")
bob=(/usr/bin/samizdat --home "$work/bob")
texts() { "$@" history alice --json 2>/dev/null || true; }

echo "-- install $v1"
dpkg -i "$deb1" > "$work/install.log" 2>&1 || { cat "$work/install.log"; fail "dpkg -i"; }
dpkg -i "$work/1/samizdat-dbgsym_${v1}_$(dpkg --print-architecture).deb" >/dev/null
grep -q "enabled, not started" "$work/install.log" || fail "postinst did not say the relay is not started"
entry="$(getent passwd samizdat)" || fail "no samizdat user"
uid="$(echo "$entry" | cut -d: -f3)"
[ "$uid" -lt 1000 ] || fail "samizdat is not a system user (uid $uid)"
case "$(echo "$entry" | cut -d: -f7)" in */nologin|*/false) ;; *) fail "samizdat can log in" ;; esac
[ "$(stat -c '%a %U' /var/lib/samizdat)" = "700 samizdat" ] || fail "data directory: $(stat -c '%a %U' /var/lib/samizdat)"
[ "$(stat -c '%a %U:%G' /etc/samizdat/relay.toml)" = "640 root:samizdat" ] || fail "relay.toml rights"
dpkg-query -W -f '${Conffiles}\n' samizdat | grep -q '/etc/samizdat/relay.toml' || fail "relay.toml is not a conffile"
[ -L /etc/systemd/system/multi-user.target.wants/samizdat-relay.service ] || fail "the relay's unit is not enabled"
if pgrep -f '^/usr/bin/samizdat relay' >/dev/null; then fail "the relay was started on install"; fi
man -w samizdat-relay >/dev/null || fail "no man page samizdat-relay(1)"
grep -q samizdat /usr/share/bash-completion/completions/samizdat || fail "no bash completion"
[ -f /usr/lib/systemd/user/samizdat@.service ] || fail "no user unit"
# The user unit as an instance, checked by systemd's own parser with the binary and man
# page now installed (a user manager needs a runtime directory, even offline).
mkdir -p -m 0700 "$work/xdg"
cp /usr/lib/systemd/user/samizdat@.service "$work/samizdat@check.service"
XDG_RUNTIME_DIR="$work/xdg" systemd-analyze --user verify "$work/samizdat@check.service" \
  || fail "systemd-analyze verify: samizdat@.service"
# Stripped, with its debug file found by build id.
if file -L /usr/bin/samizdat | grep -q 'not stripped'; then fail "the installed binary is not stripped"; fi
[ -n "$(find /usr/lib/debug -name '*.debug' -path '*build-id*' 2>/dev/null | head -n1)" ] || fail "no debug file by build id"
systemd-analyze security --offline=true --threshold=15 "$unit" | tail -n1

echo "-- the operator configures it and starts it (as the unit would)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
sed -i "s/^listen = .*/listen = \"127.0.0.1:$port\"/" /etc/samizdat/relay.toml
/usr/bin/samizdat relay --config /etc/samizdat/relay.toml --check-config
# The sandbox holds: read-only system, its state directory writable, no home, no capabilities.
as_unit sh -c 'touch /etc/samizdat/probe' 2>/dev/null && fail "the sandbox can write /etc"
as_unit sh -c 'touch /usr/bin/probe' 2>/dev/null && fail "the sandbox can write /usr"
as_unit sh -c 'touch /var/lib/samizdat/probe && rm /var/lib/samizdat/probe' || fail "the sandbox cannot write its state directory"
[ -z "$(as_unit ls -A /home /root /tmp | grep -v ':$' | grep -v '^$' || true)" ] || fail "the sandbox sees homes or /tmp"
[ "$(as_unit id -u)" = "$uid" ] || fail "the sandbox does not run as samizdat"
as_unit grep -q '^CapBnd:[[:space:]]*0000000000000000$' /proc/self/status || fail "the sandbox keeps capabilities"
as_unit grep -q '^NoNewPrivs:[[:space:]]*1$' /proc/self/status || fail "no_new_privs is not set"
start_relay
echo "relay at $url (pid $relay_pid)"

echo "-- send through it with the installed binary"
"${alice[@]}" init --relay "$url" --name Alice >/dev/null
"${bob[@]}" init --relay "$url" --name Bob >/dev/null
link="$("${alice[@]}" invite | tail -n1)"
"${bob[@]}" accept "$link" --name alice >/dev/null
"${alice[@]}" sync >/dev/null
"${alice[@]}" send Bob "before the upgrade" >/dev/null
"${bob[@]}" sync >/dev/null
texts "${bob[@]}" | grep -q '"before the upgrade"' || fail "Bob did not get the first message"
# This one waits on the relay, across the upgrade.
"${alice[@]}" send Bob "waiting across the upgrade" >/dev/null
stop_relay

echo "-- upgrade to $v2"
dpkg -i "$deb2" > "$work/upgrade.log" 2>&1 || { cat "$work/upgrade.log"; fail "dpkg -i (upgrade)"; }
[ "$(dpkg-query -W -f '${Version}' samizdat)" = "$v2" ] || fail "not upgraded"
grep -q "^listen = \"127.0.0.1:$port\"" /etc/samizdat/relay.toml || fail "the upgrade lost the operator's configuration"
[ "$(getent passwd samizdat | cut -d: -f3)" = "$uid" ] || fail "the upgrade changed the user"
start_relay
"${bob[@]}" sync >/dev/null
texts "${bob[@]}" | grep -q '"waiting across the upgrade"' || fail "the waiting message did not survive the upgrade"
"${bob[@]}" send alice "after the upgrade" >/dev/null
"${alice[@]}" sync >/dev/null
"${alice[@]}" history Bob --json | grep -q '"after the upgrade"' || fail "Alice did not get the reply"
stop_relay

echo "-- purge: the data stays unless asked"
dpkg --purge samizdat-dbgsym samizdat > "$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "purge"; }
[ ! -e /usr/bin/samizdat ] || fail "purge left the binary"
[ ! -e /etc/samizdat ] || fail "purge left /etc/samizdat"
[ ! -e /etc/systemd/system/multi-user.target.wants/samizdat-relay.service ] || fail "purge left the unit enabled"
[ -f /var/lib/samizdat/relay.db ] || fail "purge removed the relay's data"
grep -q "kept the relay's data" "$work/purge.log" || fail "purge did not say it kept the data"
dpkg -i "$deb2" >/dev/null 2>&1
SAMIZDAT_PURGE_DATA=yes dpkg --purge samizdat >/dev/null 2>&1
[ ! -e /var/lib/samizdat ] || fail "SAMIZDAT_PURGE_DATA=yes left the data"
echo "deb.sh: install, run, send, upgrade, purge: ok ($(du -h "$deb1" | cut -f1) package)"
