#!/usr/bin/env bash
# build-image.sh: keymint's container image as an OCI image layout, with no
# container engine. It is the image the Containerfile describes:
#   /keymint      the operator, statically linked (glibc, crt-static), stripped;
#                 it needs no file at run time, not even /dev/urandom
#   /etc/passwd   one line: keymint, UID 65532
#   /etc/group    one line: keymint, GID 65532
# User 65532:65532, entrypoint ["/keymint"], cmd ["run"], OCI labels.
# No CA certificates: in a cluster the operator trusts the mounted
# serviceaccount ca.crt and reaches the API server by KUBERNETES_SERVICE_HOST.
#
# Output (under $KEYMINT_IMAGE_DIR, default target/image):
#   keymint-oci/      OCI image layout, one image named keymint:<crate version>
#   keymint-oci.tar   the same layout as an oci-archive (podman load, skopeo)
#
# Environment:
#   KEYMINT_IMAGE_PROFILE  cargo profile of the binary (default release; the
#                          tests use dev, which builds in a fraction of the time)
#   KEYMINT_IMAGE_DIR      output directory (default target/image)
#   KEYMINT_IMAGE_SOURCE   org.opencontainers.image.source (default: Cargo.toml
#                          `repository`, else the git remote `origin`, else none)
#   SOURCE_DATE_EPOCH      timestamps in the image (default: the HEAD commit's
#                          time), so the same binary gives the same digests
#
# Needs umoci (Debian package; installed with apt-get when missing), cargo,
# strip and readelf (binutils), tar.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${KEYMINT_IMAGE_PROFILE:-release}
out=${KEYMINT_IMAGE_DIR:-target/image}
layout="$out/keymint-oci"
archive="$out/keymint-oci.tar"
bundle="$out/keymint-bundle"
uid=65532
gid=65532

say() { printf '== build-image: %s\n' "$*" >&2; }
die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }

# ---- tools ----------------------------------------------------------------
missing=()
command -v umoci >/dev/null || missing+=(umoci)
command -v readelf >/dev/null && command -v strip >/dev/null || missing+=(binutils)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null; then
    as_root=(sudo)
  else
    die "needs the Debian packages ${missing[*]} (apt-get install ${missing[*]}), and is neither root nor has sudo"
  fi
  say "installing ${missing[*]} (apt-get)"
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
umoci --version >/dev/null

# ---- the binary -------------------------------------------------------------
cargo=${CARGO:-cargo}
triple=$("${RUSTC:-rustc}" -vV | sed -n 's/^host: //p')
[ -n "$triple" ] || die "cannot tell the host target triple from rustc -vV"
# crt-static: glibc linked in, no dynamic loader. getrandom_backend: the
# getrandom crate calls glibc's getrandom() itself; its default looks that up
# with dlsym, which a static binary cannot, and falls back to /dev/urandom (a
# file the image does not have; container runtimes do mount one).
rustflags='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"'
say "RUSTFLAGS='$rustflags' cargo build --profile $profile --target $triple"
# --target keeps build scripts and proc macros dynamic (RUSTFLAGS then apply to
# the target only) and puts the static build in its own directory.
unset CARGO_ENCODED_RUSTFLAGS
bin=$(RUSTFLAGS="$rustflags" \
  "$cargo" build --locked --profile "$profile" --bin keymint --target "$triple" \
  --message-format=json-render-diagnostics |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  die "cargo build produced no keymint executable"
fi

program_headers=$(readelf -lW "$bin")
dynamic_section=$(readelf -dW "$bin")
if grep -q 'INTERP' <<<"$program_headers"; then
  die "$bin is dynamically linked (it has a program interpreter)"
fi
if grep -q '(NEEDED)' <<<"$dynamic_section"; then
  die "$bin needs shared libraries: $(grep '(NEEDED)' <<<"$dynamic_section")"
fi
version_line=$(env -i "$bin" --version)
version=${version_line#keymint }
if [ -z "$version" ] || [ "$version_line" != "keymint $version" ]; then
  die "unexpected \`keymint --version\` output: $version_line"
fi

# ---- labels -----------------------------------------------------------------
package_field() { # the [package] table's string field $1 in Cargo.toml
  awk -v key="$1" '
    /^\[/ { in_package = ($0 == "[package]") ; next }
    in_package && $0 ~ "^" key "[ \t]*=" {
      sub(/^[^=]*=[ \t]*"/, ""); sub(/"[ \t]*$/, ""); print; exit
    }' Cargo.toml
}
description=$(package_field description)
licenses=$(package_field license)
source_url=${KEYMINT_IMAGE_SOURCE:-$(package_field repository)}
if [ -z "$source_url" ] && git rev-parse --git-dir >/dev/null 2>&1; then
  # Without any user:password@ part a remote URL may carry.
  source_url=$(git remote get-url origin 2>/dev/null | sed -E 's#^([a-z+]+://)[^/@]*@#\1#') || true
fi
revision=$(git rev-parse HEAD 2>/dev/null || true)
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

labels=(
  "org.opencontainers.image.title=keymint"
  "org.opencontainers.image.description=$description"
  "org.opencontainers.image.version=$version"
  "org.opencontainers.image.licenses=$licenses"
)
[ -n "$source_url" ] && labels+=("org.opencontainers.image.source=$source_url")
[ -n "$revision" ] && labels+=("org.opencontainers.image.revision=$revision")
[ -z "$source_url" ] &&
  say "no source URL (set \`repository\` in Cargo.toml or KEYMINT_IMAGE_SOURCE): image has no org.opencontainers.image.source label"

# ---- the image ----------------------------------------------------------------
# The layout's ref.name: a name and a tag, so `podman load` names it keymint.
ref="keymint:$version"
say "image $ref -> $layout"
rm -rf "$layout" "$archive" "$bundle"
mkdir -p "$out"
rootless=()
[ "$(id -u)" -eq 0 ] || rootless=(--rootless)

umoci init --layout "$layout"
umoci new --image "$layout:$ref"
umoci unpack "${rootless[@]}" --image "$layout:$ref" "$bundle"

rootfs="$bundle/rootfs"
install -d -m 0755 "$rootfs/etc"
strip --strip-all -o "$rootfs/keymint" "$bin"
chmod 0755 "$rootfs/keymint"
binary_size=$(du -h "$rootfs/keymint" | cut -f1)
printf 'keymint:x:%s:%s:keymint:/nonexistent:/sbin/nologin\n' "$uid" "$gid" > "$rootfs/etc/passwd"
printf 'keymint:x:%s:\n' "$gid" > "$rootfs/etc/group"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
find "$rootfs" -exec touch -h -d "@$epoch" {} +

umoci repack --image "$layout:$ref" \
  --history.created "$created" \
  --history.created_by "keymint $version: /keymint (static, $profile), /etc/passwd, /etc/group" \
  "$bundle"
config_args=(
  --created "$created" --no-history
  --config.user "$uid:$gid"
  --config.entrypoint /keymint
  --config.cmd run
  --config.exposedports 8080/tcp
)
for label in "${labels[@]}"; do config_args+=(--config.label "$label"); done
umoci config --image "$layout:$ref" "${config_args[@]}"
umoci gc --layout "$layout"
chmod -R a+rX "$layout"
rm -rf "$bundle"

# An oci-archive is a tar of the layout.
find "$layout" -exec touch -h -d "@$epoch" {} +
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
  -C "$layout" -cf "$archive" .

manifest=$(sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p' "$layout/index.json")
say "done: $layout ($ref, manifest $manifest)"
say "      $archive ($(du -h "$archive" | cut -f1)); /keymint $binary_size uncompressed"
