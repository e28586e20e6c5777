#!/usr/bin/env bash
# The dependency policy (deny.toml): RustSec advisories from the offline snapshot, licences,
# sources, duplicate versions; then unused dependencies (cargo machete). Only `cargo fetch`
# reaches crates.io (to fill cargo's cache); the advisories never come from the network.
#
# The snapshot is the git bundle in ../shared/supply-chain/ (or SAMIZDAT_ADVISORY_BUNDLE).
# Before the real check, a copy of the database with one made-up advisory against a crate we
# use must make `cargo deny` fail: the check is shown to read the database, not to pass
# vacuously.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deny >/dev/null || cargo install --locked cargo-deny@0.20.2
# `cargo deny --offline` reads every crate of the lock file, those of other platforms too
# (Windows, macOS), from cargo's cache: a new machine has only what its builds fetched.
cargo fetch --locked --quiet

bundle="${SAMIZDAT_ADVISORY_BUNDLE:-}"
if [ -z "$bundle" ]; then
  for candidate in ../shared/supply-chain/advisory-db.bundle /work/shared/supply-chain/advisory-db.bundle; do
    if [ -f "$candidate" ]; then bundle="$candidate"; break; fi
  done
fi
if [ -z "$bundle" ] || [ ! -f "$bundle" ]; then
  echo "no advisory snapshot: set SAMIZDAT_ADVISORY_BUNDLE to the RustSec bundle"; exit 1
fi

# cargo-deny keeps each database under db-path in a directory named after its URL.
db_dir=advisory-db-3157b0e258782691
rm -rf target/advisory-dbs target/advisory-canary
mkdir -p target/advisory-dbs target/advisory-canary
git clone -q "$bundle" "target/advisory-dbs/$db_dir"
git -C "target/advisory-dbs/$db_dir" log -1 --format='advisory snapshot: %s'

echo "-- the check fails on a known advisory (canary)"
git clone -q "$bundle" "target/advisory-canary/$db_dir"
mkdir -p "target/advisory-canary/$db_dir/crates/memchr"
cat > "target/advisory-canary/$db_dir/crates/memchr/RUSTSEC-2099-0001.md" <<'EOF'
```toml
[advisory]
id = "RUSTSEC-2099-0001"
package = "memchr"
date = "2026-12-06"
url = "https://example.invalid/canary"

[versions]
patched = []
```

# Canary advisory made up by .ci/deny.sh

Every version of memchr is affected, so the policy check must fail.
EOF
git -C "target/advisory-canary/$db_dir" add -A
git -C "target/advisory-canary/$db_dir" -c user.name=ci -c user.email=ci@invalid commit -qm canary
sed 's#^db-path = .*#db-path = "target/advisory-canary"#' deny.toml > target/advisory-canary/deny.toml
if cargo deny --offline --locked --config target/advisory-canary/deny.toml check advisories \
    > target/advisory-canary/out.txt 2>&1; then
  cat target/advisory-canary/out.txt
  echo "cargo deny passed with a made-up advisory against memchr: it is not reading the database"
  exit 1
fi
grep -q "RUSTSEC-2099-0001" target/advisory-canary/out.txt || {
  cat target/advisory-canary/out.txt; echo "the canary failed for another reason"; exit 1; }
echo "canary advisory caught"

echo "-- cargo deny check"
cargo deny --offline --locked check

echo "-- no unused dependencies (cargo machete)"
command -v cargo-machete >/dev/null || cargo install --locked cargo-machete@0.9.2
cargo machete
