#!/usr/bin/env bash
# Builds the artifactd container image with podman, from this machine's
# files only (no base image is pulled): the release binary, stripped; the
# glibc files it links, found with ldd; the system CA bundle; a passwd
# entry for the non-root user; the default configuration of
# deploy/container/. Prints the image's size.
#
# Usage: image.sh [BINARY] [TAG]   (default: target/release/artifactd,
# artifactd:latest and artifactd:VERSION)
#        image.sh --stage-only     (only the context, in target/image: what
#                                   Containerfile.source's build stage runs)
set -euo pipefail
cd "$(dirname "$0")/.."

stage_only=false
if [[ ${1:-} == --stage-only ]]; then
    stage_only=true
    shift
fi
binary=${1:-target/release/artifactd}
tag=${2:-artifactd:latest}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
source=$(git remote get-url origin 2>/dev/null || echo "artifactd")
uid=65532

context=target/image
rm -rf "$context"
mkdir -p "$context/rootfs/usr/local/bin" "$context/rootfs/etc/artifactd" \
    "$context/rootfs/etc/ssl/certs" "$context/writable/var/cache/artifactd" \
    "$context/writable/tmp"
chmod 1777 "$context/writable/tmp"

# The binary without its symbols (a third of its size), then every
# library the loader would map for it, at the path it would map it from.
objcopy --strip-all "$binary" "$context/rootfs/usr/local/bin/artifactd"
ldd "$binary" | awk '/=> \// {print $3} /^[ \t]*\/[^ ]+ \(/ {print $1}' | while read -r lib; do
    install -D -m 0755 "$(readlink -f "$lib")" "$context/rootfs$lib"
done

cp /etc/ssl/certs/ca-certificates.crt "$context/rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nartifactd:x:%d:%d:artifactd:/var/cache/artifactd:/sbin/nologin\n' \
    "$uid" "$uid" > "$context/rootfs/etc/passwd"
printf 'root:x:0:\nartifactd:x:%d:\n' "$uid" > "$context/rootfs/etc/group"
cp deploy/container/artifactd.yaml deploy/container/remotes.yaml "$context/rootfs/etc/artifactd/"
cp deploy/container/Containerfile "$context/"
if $stage_only; then
    exit 0
fi

podman build --quiet --format docker \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    --build-arg SOURCE="$source" \
    -t "$tag" -t "artifactd:$version" "$context" >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "image $tag (artifactd $version, $revision): $((size / 1000000)) MB"
