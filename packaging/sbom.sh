#!/usr/bin/env bash
# A CycloneDX SBOM (JSON) of the `samizdat` binary: every crate compiled into it, with its
# version, licence and package URL — from `cargo cyclonedx` (installed if missing).
#
#   packaging/sbom.sh OUT.cdx.json
#
# The same commit gives the same file: the random serial number is replaced by one derived
# from the lock file, and the time is the last commit's (SOURCE_DATE_EPOCH). Prints a line
# with the number of components and how many name a licence.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$1"
command -v cargo-cyclonedx >/dev/null || cargo install --locked cargo-cyclonedx >&2
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# cargo cyclonedx writes beside the manifest; the file is moved out at once.
# Only what is compiled into the binary: no build scripts' own dependencies, no dev ones.
name="sbom-$$"
(cd "$root" && cargo cyclonedx --manifest-path crates/samizdat/Cargo.toml --format json \
  --spec-version 1.5 --no-build-deps --target x86_64-unknown-linux-gnu \
  --override-filename "$name" -q >&2)
produced="$root/crates/samizdat/$name.json"
[ -f "$produced" ] || { echo "cargo cyclonedx wrote no SBOM" >&2; exit 1; }
mv "$produced" "$work/raw.json"
rm -f "$root"/crates/*/"$name.json"
python3 - "$work/raw.json" "$out" "$root/Cargo.lock" "$root" <<'PY'
import datetime, hashlib, json, os, sys, uuid
raw, out, lock, root = sys.argv[1:5]
# Our own crates are named by path: the checkout's, which is not part of what was built.
bom = json.loads(open(raw).read().replace(f"file://{root}/", "file:///samizdat/"))
digest = hashlib.sha256(open(lock, "rb").read()).digest()
bom["serialNumber"] = f"urn:uuid:{uuid.UUID(bytes=digest[:16], version=5)}"
when = datetime.datetime.fromtimestamp(int(os.environ["SOURCE_DATE_EPOCH"]), datetime.timezone.utc)
bom.setdefault("metadata", {})["timestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
components = bom.get("components", [])
names = {c["name"] for c in components}
for need in ("mls-rs", "rusqlite", "aws-lc-rs"):
    assert need in names, f"{need} is not in the SBOM"
licensed = sum(1 for c in components if c.get("licenses"))
json.dump(bom, open(out, "w"), indent=2, sort_keys=True)
open(out, "a").write("\n")
print(f"- CycloneDX SBOM: {len(components)} components, {licensed} with a licence")
PY
