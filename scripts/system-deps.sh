#!/bin/sh
# Debian packages the tests talk to as independent peers: DCMTK (echoscu, storescu,
# findscu, storescp) for the DIMSE sidecar, and Chromium for the browser CORS test.
# Installs only what is missing, so a machine that has them pays nothing.
set -eu

missing=""
command -v storescu >/dev/null 2>&1 || missing="$missing dcmtk"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -z "$missing" ] && exit 0

echo "installing Debian packages:$missing" >&2
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "need root (or sudo) to install:$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
