#!/usr/bin/env bash
# Makes a local stand-in for the official python:3.11-slim-bookworm image where no image registry answers:
# Debian bookworm (debootstrap --variant=minbase) with python3.11 + pip and the host's CA certificates (so
# HTTPS from inside a build trusts what the host trusts), imported with `podman import`.
#
#   scripts/image/make_base.sh [IMAGE]     # default localhost/reconciler-base:bookworm-py3.11
#
# Then build with `--build-arg PYTHON_IMAGE=IMAGE`. Needs root (debootstrap, rootful podman). Does nothing
# when the image already exists (REBUILD=1 forces it). The Debian mirror is the host's own apt source.
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${1:-localhost/reconciler-base:bookworm-py3.11}
PODMAN=(scripts/image/podman.sh)

if [ "${REBUILD:-0}" != 1 ] && "${PODMAN[@]}" image exists "$IMAGE"; then
  echo "$IMAGE exists"
  exit 0
fi

# The first bookworm mirror the host's apt uses (deb822 sources or the one-line format).
mirror=$(
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources || true
    grep -hs '^deb ' /etc/apt/sources.list || true; } | awk '{print $2}' | grep -v -- '-security' | head -n1
)
[ -n "$mirror" ] || { echo "no Debian mirror found in the host's apt sources" >&2; exit 1; }

root=$(mktemp -d "${TMPDIR:-/tmp}/reconciler-base.XXXXXX")
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
  bookworm "$root" "$mirror"

# The host's trust store replaces the fresh one (a proxy's CA, a company root: whatever the host trusts).
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
# The official image's pip installs into the system Python; Debian's refuses (PEP 668) unless told.
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
# Keep the image small: package lists, caches, docs and locales are not needed at run time.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/log/*

tar -C "$root" -c . | "${PODMAN[@]}" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$IMAGE"
echo "made $IMAGE"
