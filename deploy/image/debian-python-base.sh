#!/bin/sh
# A local stand-in for the Dockerfile's default base (python:3.11-slim-bookworm), made from
# Debian's own packages, for machines that reach a Debian mirror but no container registry:
#
#   deploy/image/debian-python-base.sh [--extra-ca-dir DIR] [TAG]
#   make image BASE=localhost/debian-python:bookworm
#
# Debian bookworm minbase + python3 (3.11) + python3-venv + ca-certificates, imported with
# buildah as TAG (default localhost/debian-python:bookworm). Python is /usr/bin/python3
# there, /usr/local/bin/python3 in python:*-slim: the Dockerfile only says `python3`.
# --extra-ca-dir DIR: *.crt files (an egress proxy's CA) added to the image's trust store,
# and PIP_CERT set to that store (pip otherwise trusts only its own certifi). A base made
# with it is for building here only: never push it, nor what is built on it.
set -eu

extra_ca=
if [ "${1:-}" = --extra-ca-dir ]; then extra_ca=$2; shift 2; fi
tag=${1:-localhost/debian-python:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

for tool in mmdebstrap buildah; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "$tool is missing (Debian/Ubuntu: apt-get install -y mmdebstrap buildah)" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

set -- --variant=minbase --include=python3,python3-venv,ca-certificates \
  --aptopt='Acquire::Retries "3"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
if [ -n "$extra_ca" ]; then
  set -- "$@" --customize-hook="sync-in $extra_ca /usr/local/share/ca-certificates" \
    --customize-hook='chroot "$1" update-ca-certificates'
fi
# no apt lists or caches in the image (mmdebstrap leaves none in /var/cache/apt either)
set -- "$@" --customize-hook='rm -rf "$1"/var/lib/apt/lists/*'
mmdebstrap "$@" bookworm "$work/rootfs.tar" \
  "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main"

ctr=$(buildah from scratch)
buildah add --quiet "$ctr" "$work/rootfs.tar" /
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 --cmd '["python3"]' \
  --label org.opencontainers.image.title=debian-python \
  --label org.opencontainers.image.description="Debian bookworm minbase + python3.11, local stand-in for python:3.11-slim-bookworm" \
  "$ctr"
if [ -n "$extra_ca" ]; then
  buildah config --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$ctr"
fi
buildah commit --quiet --rm "$ctr" "$tag" >/dev/null
echo "$tag"
