#!/usr/bin/env bash
# A release build of `samizdat` that anyone can repeat byte for byte (issue 32):
#
#   packaging/release-build.sh [x86_64|aarch64]     default: this machine's
#
# prints the path of the binary: target/dist/<target>/release/samizdat.
#
# - `cargo auditable build --locked`: the binary carries its dependency list (name, version,
#   source of every crate) in a `.dep-v0` section, for `cargo audit bin` and syft.
# - Paths are remapped: the checkout to /samizdat, cargo's registry to /cargo — in Rust
#   (`--remap-path-prefix`) and in the C that aws-lc and SQLCipher compile
#   (`-ffile-prefix-map`) — so the directory it was built in leaves no trace.
# - SOURCE_DATE_EPOCH is the last commit's time; the release profile (Cargo.toml) has one
#   codegen unit and fat LTO, so the build does not depend on scheduling.
# - Its own target directory (target/dist), so a developer's `cargo build --release`
#   (without these flags) keeps its cache.
#
# aarch64 uses Debian's cross toolchain (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross,
# libssl-dev:arm64) and rustup's aarch64 standard library; `.ci/release-checks` installs them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
arch="${1:-$(uname -m)}"
case "$arch" in
  x86_64|amd64) target=x86_64-unknown-linux-gnu ;;
  aarch64|arm64) target=aarch64-unknown-linux-gnu ;;
  *) echo "unknown architecture: $arch (x86_64 or aarch64)" >&2; exit 2 ;;
esac

cargo_home="${CARGO_HOME:-$HOME/.cargo}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
export LC_ALL=C TZ=UTC
remap="--remap-path-prefix=$root=/samizdat --remap-path-prefix=$cargo_home=/cargo"
prefix_map="-ffile-prefix-map=$root=/samizdat -ffile-prefix-map=$cargo_home=/cargo"
# One variable per target, so build scripts (built for the host) get the same flags too.
export CARGO_ENCODED_RUSTFLAGS="${remap// /$'\x1f'}"
export CFLAGS="$prefix_map"
export CXXFLAGS="$prefix_map"
export CARGO_TARGET_DIR="$root/target/dist"

if [ "$target" = aarch64-unknown-linux-gnu ] && [ "$(uname -m)" != aarch64 ]; then
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
  export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
  export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
  export PKG_CONFIG_ALLOW_CROSS=1
  export PKG_CONFIG_PATH=/usr/lib/aarch64-linux-gnu/pkgconfig
fi

command -v cargo-auditable >/dev/null || cargo install --locked cargo-auditable >&2
cargo auditable build --release --locked -p samizdat --target "$target" >&2
echo "$CARGO_TARGET_DIR/$target/release/samizdat"
