#!/usr/bin/env bash
# Builds wtgate in release mode and installs the binary as /usr/local/bin/wtgate; with --systemd also
# the unit scripts/wtgate.service as /etc/systemd/system/wtgate.service and wtgate.example.toml as
# its config file /etc/wtgate/wtgate.toml (an existing unit or config file, which you may have
# edited, is left alone).
#
#   scripts/install.sh [--systemd]
#
# Run it as the user that has cargo (rustup installs it per user); the install steps use sudo when
# that user is not root.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  "" | --systemd) ;;
  *) echo "usage: scripts/install.sh [--systemd]" >&2; exit 2 ;;
esac
command -v cargo >/dev/null || { echo "install.sh: cargo not found (https://rustup.rs)" >&2; exit 1; }
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

cargo build --release --locked -p wtgate --bin wtgate
$SUDO install -D -m 0755 target/release/wtgate /usr/local/bin/wtgate
echo "installed /usr/local/bin/wtgate ($(/usr/local/bin/wtgate --version 2>/dev/null || echo wtgate))"

if [ "${1:-}" = "--systemd" ]; then
  UNIT=/etc/systemd/system/wtgate.service
  if [ -e "$UNIT" ]; then
    echo "kept the existing $UNIT (the shipped one is scripts/wtgate.service)"
  else
    $SUDO install -m 0644 scripts/wtgate.service "$UNIT"
    echo "installed $UNIT"
  fi
  CONF=/etc/wtgate/wtgate.toml
  if [ -e "$CONF" ]; then
    echo "kept the existing $CONF (the example is wtgate.example.toml)"
  else
    $SUDO install -D -m 0644 wtgate.example.toml "$CONF"
    echo "installed $CONF (from wtgate.example.toml)"
  fi
  $SUDO systemctl daemon-reload
  echo "edit $CONF (test it with 'wtgate check --config $CONF'), then:"
  echo "  systemctl enable --now wtgate"
else
  echo "add --systemd to install the systemd unit too"
fi
