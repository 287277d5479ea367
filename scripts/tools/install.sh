#!/usr/bin/env bash
# Installs the operator-artifact tools the tests use, when missing: podman (+ runc) and debootstrap for the
# image test, Debian's prometheus package (server + promtool) for the rules, metrics and dashboard tests, and
# OpenLDAP (slapd, ldap-utils) for the stack's directory (STACK_LDAP=1).
# Needs root for apt; without root it only says what is missing (the tests then say how to enable them).
# podman-compose comes from pip (a dev extra), the Prometheus Operator CRDs through `go mod download`
# (scripts/tools/operator_crds.py), both at test time.
set -euo pipefail

wanted=()
command -v podman >/dev/null || wanted+=(podman)
command -v runc >/dev/null || wanted+=(runc)
command -v debootstrap >/dev/null || wanted+=(debootstrap)
command -v promtool >/dev/null || wanted+=(prometheus)
# podman's rootful networking and overlay storage helpers; cheap to check, harmless when present.
command -v fuse-overlayfs >/dev/null || wanted+=(fuse-overlayfs)
command -v go >/dev/null || wanted+=(golang-go)
# /usr/sbin is not on every PATH; the stack runs its own slapd, never the system's.
[ -x /usr/sbin/slapd ] || wanted+=(slapd)
command -v ldapsearch >/dev/null || wanted+=(ldap-utils)

if [ ${#wanted[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/tools/install.sh: missing ${wanted[*]}; run it as root (or install them) to enable those tests" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: the tests need the binaries, not the desktop/helpers the recommends pull in.
apt-get install -y -qq --no-install-recommends "${wanted[@]}" ca-certificates
# Debian's slapd package may start a system directory on port 389; the stack starts its own.
if command -v systemctl >/dev/null && systemctl is-active --quiet slapd 2>/dev/null; then
  systemctl disable --now slapd || true
fi
# The Debian package starts a system Prometheus (and its node exporter); the tests run their own server.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl disable --now prometheus || true
fi
