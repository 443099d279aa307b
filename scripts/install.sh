#!/usr/bin/env bash
# Builds wtgate in release mode and installs the binary (and, with --systemd, the unit file).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin wtgate
install -m 0755 target/release/wtgate /usr/local/bin/wtgate
if [ "${1:-}" = "--systemd" ]; then
  install -m 0644 scripts/wtgate.service /etc/systemd/system/wtgate.service
  systemctl daemon-reload
  echo "installed; edit /etc/systemd/system/wtgate.service, then: systemctl enable --now wtgate"
else
  echo "installed /usr/local/bin/wtgate (add --systemd to install the unit too)"
fi
