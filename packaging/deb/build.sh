#!/usr/bin/env bash
# Build the Debian packages `samizdat` and `samizdat-dbgsym` from a built binary.
#
#   packaging/deb/build.sh [--binary PATH] [--arch amd64|arm64] [--version V] [--out DIR] [--fast]
#
# --fast compresses with gzip -1 instead of xz (CI packages a debug build twice: its debug
# symbols are hundreds of megabytes).
# Defaults: target/release/samizdat, this machine's architecture, the workspace version
# with Debian revision 1, target/deb. Prints the path of the main package last.
#
# What goes in (docs/DEPLOY.md, "From the Debian package"):
#   /usr/bin/samizdat                          stripped; its debug info is in samizdat-dbgsym
#   /etc/samizdat/relay.toml                   conffile: an operator's edits survive upgrades
#   /lib/systemd/system/samizdat-relay.service enabled on install, not started
#   /usr/lib/systemd/user/samizdat@.service    `samizdat serve` for one profile of a user
#   /usr/share/man/man1/samizdat*.1.gz         from the command-line parser (clap_mangen)
#   bash, zsh and fish completions             from the same parser (clap_complete)
#   /usr/share/doc/samizdat/                   copyright, DEPLOY.md, the SBOM if one was made
# The maintainer scripts (here, beside this file) create the `samizdat` system user and its
# 0700 data directory /var/lib/samizdat, and never delete that data unless asked
# (SAMIZDAT_PURGE_DATA=yes at purge).
#
# The same inputs give the same bytes: every file's time is the last commit's
# (SOURCE_DATE_EPOCH), owners are root, and gzip leaves out names and times.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

binary="$root/target/release/samizdat"
arch="$(dpkg --print-architecture)"
version=""
out="$root/target/deb"
compress=(-Zxz)
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --arch) arch="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --fast) compress=(-Zgzip -z1); shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ -z "$version" ]; then
  version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)-1"
fi
[ -x "$binary" ] || { echo "no binary at $binary (cargo build --release first)" >&2; exit 1; }

case "$arch" in
  amd64) tools="" ; run=() ;;
  arm64)
    tools="aarch64-linux-gnu-"
    # The man pages and completions come from the binary itself: run it under qemu-user,
    # with the arm64 loader and libc of Debian's multiarch libc6:arm64 (never `-L
    # /usr/aarch64-linux-gnu`: that loader is the cross package's, and a loader and libc of
    # two builds of glibc hang in the first pthread_create).
    run=(qemu-aarch64) ;;
  *) echo "unsupported architecture: $arch" >&2; exit 2 ;;
esac
if [ "$arch" = "$(dpkg --print-architecture)" ]; then run=(); tools=""; fi

export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}"
export LC_ALL=C TZ=UTC

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pkg="$work/samizdat"
dbg="$work/samizdat-dbgsym"
mkdir -p "$pkg/DEBIAN" "$dbg/DEBIAN"

# The binary, stripped, pointing at its debug file by build id (as Debian's own packages do).
install -d "$pkg/usr/bin"
build_id="$("${tools}readelf" -n "$binary" | sed -n 's/.*Build ID: \([0-9a-f]*\).*/\1/p')"
if [ -n "$build_id" ]; then
  debug_file="$dbg/usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug"
else
  debug_file="$dbg/usr/lib/debug/usr/bin/samizdat.debug"
fi
install -d "$(dirname "$debug_file")"
"${tools}objcopy" --only-keep-debug --compress-debug-sections "$binary" "$debug_file"
chmod 0644 "$debug_file"
"${tools}objcopy" --strip-debug --strip-unneeded \
  --add-gnu-debuglink="$debug_file" "$binary" "$pkg/usr/bin/samizdat"
chmod 0755 "$pkg/usr/bin/samizdat"

# Configuration, units, documentation.
install -D -m 0644 "$root/packaging/relay.toml" "$pkg/etc/samizdat/relay.toml"
install -D -m 0644 "$root/packaging/samizdat-relay.service" \
  "$pkg/lib/systemd/system/samizdat-relay.service"
install -D -m 0644 "$root/packaging/samizdat@.service" \
  "$pkg/usr/lib/systemd/user/samizdat@.service"
doc="$pkg/usr/share/doc/samizdat"
install -D -m 0644 "$here/copyright" "$doc/copyright"
install -m 0644 "$root/docs/DEPLOY.md" "$doc/DEPLOY.md"
if [ -f "$root/target/sbom/samizdat.cdx.json" ]; then
  install -m 0644 "$root/target/sbom/samizdat.cdx.json" "$doc/sbom.cdx.json"
fi
date_rfc2822="$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
printf 'samizdat (%s) unstable; urgency=medium\n\n  * Built from %s.\n\n -- Samizdat developers <dev@samizdat.invalid>  %s\n' \
  "$version" "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo source)" "$date_rfc2822" \
  | gzip -9n > "$doc/changelog.Debian.gz"

# Man pages and completions, from the parser of this very binary.
"${run[@]}" "$pkg/usr/bin/samizdat" man "$work/man" >/dev/null
install -d "$pkg/usr/share/man/man1"
for page in "$work"/man/*.1; do
  gzip -9n < "$page" > "$pkg/usr/share/man/man1/$(basename "$page").gz"
done
install -d "$pkg/usr/share/bash-completion/completions" \
  "$pkg/usr/share/zsh/vendor-completions" "$pkg/usr/share/fish/vendor_completions.d"
"${run[@]}" "$pkg/usr/bin/samizdat" completions bash > "$pkg/usr/share/bash-completion/completions/samizdat"
"${run[@]}" "$pkg/usr/bin/samizdat" completions zsh > "$pkg/usr/share/zsh/vendor-completions/_samizdat"
"${run[@]}" "$pkg/usr/bin/samizdat" completions fish > "$pkg/usr/share/fish/vendor_completions.d/samizdat.fish"

# Dependencies, read off the binary: the newest glibc symbol version it uses, and the other
# shared libraries it needs (OpenSSL's libcrypto for SQLCipher).
glibc="$("${tools}objdump" -T "$binary" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)"
depends="libc6 (>= $glibc), adduser"
needed="$("${tools}objdump" -p "$binary" | awk '/NEEDED/ {print $2}')"
for lib in $needed; do
  case "$lib" in
    libc.so.6|libm.so.6|libdl.so.2|libpthread.so.0|librt.so.1|ld-linux*) ;;
    libgcc_s.so.1) depends="$depends, libgcc-s1" ;;
    libcrypto.so.3|libssl.so.3) case "$depends" in *libssl3*) ;; *) depends="$depends, libssl3 (>= 3.0.0)" ;; esac ;;
    *) echo "the binary needs $lib, which this script does not know a package for" >&2; exit 1 ;;
  esac
done

installed_size="$(du -sk --apparent-size "$pkg" | cut -f1)"
cat > "$pkg/DEBIAN/control" <<EOF
Package: samizdat
Version: $version
Architecture: $arch
Maintainer: Samizdat developers <dev@samizdat.invalid>
Installed-Size: $installed_size
Depends: $depends
Section: net
Priority: optional
Homepage: https://samizdat.invalid/
Description: end-to-end encrypted messenger: relay, client and local web app
 Samizdat is an end-to-end encrypted messenger for people under surveillance:
 no phone number, relays that cannot read messages or map who talks to whom,
 post-quantum MLS groups, and proxies or Tor when relays are blocked.
 .
 This package holds the one binary: the relay (run as the confined system
 service samizdat-relay, configured in /etc/samizdat/relay.toml), the client's
 command line, its JSON-RPC service and the local web app (samizdat@.service
 serves one profile for a user).
EOF
echo "/etc/samizdat/relay.toml" > "$pkg/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "$here/$script" "$pkg/DEBIAN/$script"
done

# The debug package's documentation is the main package's (as debhelper's -dbgsym do).
install -d "$dbg/usr/share/doc"
ln -s samizdat "$dbg/usr/share/doc/samizdat-dbgsym"
dbg_size="$(du -sk --apparent-size "$dbg" | cut -f1)"
cat > "$dbg/DEBIAN/control" <<EOF
Package: samizdat-dbgsym
Version: $version
Architecture: $arch
Maintainer: Samizdat developers <dev@samizdat.invalid>
Installed-Size: $dbg_size
Depends: samizdat (= $version)
Section: debug
Priority: optional
Description: debug symbols for samizdat
 Lets gdb and crash reports name functions and lines in /usr/bin/samizdat.
EOF

# Same bytes for the same inputs: times from SOURCE_DATE_EPOCH, no group or other write bits.
for tree in "$pkg" "$dbg"; do
  find "$tree" -depth -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  chmod -R go-w "$tree"
done
mkdir -p "$out"
deb="$out/samizdat_${version}_${arch}.deb"
dpkg-deb --root-owner-group "${compress[@]}" --build "$pkg" "$deb" >/dev/null
dpkg-deb --root-owner-group "${compress[@]}" --build "$dbg" "$out/samizdat-dbgsym_${version}_${arch}.deb" >/dev/null
echo "$deb"
