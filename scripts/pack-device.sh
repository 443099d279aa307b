#!/usr/bin/env bash
# Packs everything the many-core comparison needs for a bare, offline x86-64 Linux machine on which
# nothing can be installed (e.g. a 16-core machine reached by a tool that copies the working tree and
# runs one command): release builds of wtgate and wtgate-bench, haproxy, nginx, wrk and taskset, every
# shared library `ldd` lists for them (glibc's ld-linux-x86-64.so.2 included), scripts/compare.sh,
# scripts/scaling.sh and their two configs, into ONE file, device/wtgate-device.tar.gz, with
# device/run.sh beside it (also inside it). Every program there is started as
#   lib/ld-linux-x86-64.so.2 --library-path lib bin/PROG …
# so neither the machine's libraries nor its loader are used. python3 is not needed.
#
#   scripts/pack-device.sh [--no-build]
#
# Then, there (from the repository root of the copy; device/ is git-ignored, so carry it):
#   device/run.sh                   scaling.sh for N = 1 2 4 8 (full runs), results in $OUT/scaling
#   device/run.sh --quick 4 8       quick runs, N = 4 and 8
# or, with the tar alone: tar -xzf wtgate-device.tar.gz -C /tmp && /tmp/wtgate-device/run.sh …
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=1
case "${1:-}" in
  --no-build) BUILD=0 ;;
  "") ;;
  -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
  *) echo "pack-device.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
esac
log() { echo "pack-device.sh: $*" >&2; }

missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
apt_install "${missing[@]}"
if [ "$BUILD" = 1 ]; then
  log "building release binaries"
  cargo build --release -q -p wtgate -p wtgate-bench
fi

STAGE=$(mktemp -d /tmp/wtgate-pack.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
D="$STAGE/wtgate-device"
mkdir -p "$D/bin" "$D/lib" "$D/scripts"

PROGS=("$ROOT/target/release/wtgate" "$ROOT/target/release/wtgate-bench"
  "$(command -v haproxy)" "$(command -v nginx)" "$(command -v wrk)" "$(command -v taskset)")
for p in "${PROGS[@]}"; do
  cp -L "$p" "$D/bin/"
  # ldd: "libx.so.1 => /path (0x…)", "/lib64/ld-linux-x86-64.so.2 (0x…)", "linux-vdso.so.1 (0x…)"
  while read -r name arrow path _; do
    case "$name" in linux-vdso.so.*|linux-gate.so.*) continue ;; esac
    if [ "$arrow" = "=>" ]; then
      [ "$path" != "not" ] || { log "$p: $name not found"; exit 1; }
      cp -Ln "$path" "$D/lib/$name"
    elif [ "${name#/}" != "$name" ]; then
      cp -Ln "$name" "$D/lib/$(basename "$name")"
    fi
  done < <(ldd "$p")
done
# glibc loads libgcc_s itself (dlopen) to unwind threads in pthread_exit/pthread_cancel.
gcc_s=$(ldconfig -p | awk '/libgcc_s\.so\.1 .*x86-64/ {print $NF; exit}')
[ -z "$gcc_s" ] || cp -Ln "$gcc_s" "$D/lib/libgcc_s.so.1"
[ -e "$D/lib/ld-linux-x86-64.so.2" ] || { log "no ld-linux-x86-64.so.2 among the libraries"; exit 1; }

cp scripts/compare.sh scripts/scaling.sh scripts/lib.sh scripts/bench-haproxy.cfg scripts/bench-nginx.conf "$D/scripts/"
git rev-parse --short HEAD 2>/dev/null >"$D/REV" || echo unknown >"$D/REV"
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  sed -i 's/$/+dirty/' "$D/REV"
fi

# --- run.sh: next to the tar it unpacks it; inside the unpacked tree it runs scaling.sh ----------
cat >"$D/run.sh" <<'RUN'
#!/usr/bin/env bash
# wtgate many-core comparison on a bare machine: runs scripts/scaling.sh with packed binaries only.
#   run.sh [--quick] [--rounds N] [--duration D] [--out DIR] [N ...]   (default N = 1 2 4 8)
# Beside wtgate-device.tar.gz it unpacks it into ${WTGATE_DEVICE_DIR:-/tmp}/wtgate-device and runs
# the copy there. Results: --out DIR, else $OUT/scaling when $OUT is set, else ./wtgate-scaling.
# Open files are capped at 20 000 on the lent machines: compare.sh raises the soft limit to the hard
# one and, with --proxy-cores, keeps maxconn at 4000 (idle test 3900 connections).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [ ! -d "$HERE/bin" ]; then
  PARENT=${WTGATE_DEVICE_DIR:-/tmp}
  rm -rf "$PARENT/wtgate-device"
  mkdir -p "$PARENT"
  tar -xzf "$HERE/wtgate-device.tar.gz" -C "$PARENT"
  exec "$PARENT/wtgate-device/run.sh" "$@"
fi
D=$HERE
case "$D" in *[[:space:]]*) echo "run.sh: $D has a space; unpack elsewhere" >&2; exit 2 ;; esac

need=(bash awk sed grep tar timeout nproc mktemp head tail cut paste seq tee date uname sleep id getconf)
lack=()
for t in "${need[@]}"; do command -v "$t" >/dev/null || lack+=("$t"); done
[ ${#lack[@]} -eq 0 ] || { echo "run.sh: this machine lacks ${lack[*]}" >&2; exit 2; }

L="$D/lib/ld-linux-x86-64.so.2 --library-path $D/lib"
export WTGATE="$L $D/bin/wtgate" BENCH="$L $D/bin/wtgate-bench" HAPROXY="$L $D/bin/haproxy"
export NGINX="$L $D/bin/nginx" WRK="$L $D/bin/wrk" TASKSET="$L $D/bin/taskset"
export WTGATE_REV; WTGATE_REV=$(cat "$D/REV")
export ROOT=$D
mkdir -p /var/lib/nginx 2>/dev/null || true # nginx makes its default temp folders there
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

RES=${OUT:+$OUT/scaling}
RES=${RES:-$PWD/wtgate-scaling}
echo "run.sh: $(nproc) cores, uid $(id -u), open files $(ulimit -n) (hard $(ulimit -Hn)), locked memory hard $(ulimit -Hl) KiB, wtgate $WTGATE_REV; results in $RES" >&2
for v in WTGATE:--help BENCH:--help HAPROXY:-v NGINX:-v WRK:-v TASKSET:-V; do
  name=${v%%:*}
  read -ra cmd <<<"${!name}"
  rc=0; "${cmd[@]}" "${v#*:}" >/dev/null 2>&1 || rc=$? # 126/127: cannot run; ≥ 128: crashed
  [ "$rc" -lt 126 ] || { echo "run.sh: packed $name does not start (rc $rc): ${cmd[*]}" >&2; exit 1; }
done
exec "$D/scripts/scaling.sh" --no-build --out "$RES" "$@"
RUN
chmod +x "$D/run.sh" "$D/scripts/"*.sh

# Smoke test: every packed program starts through the packed loader.
for p in wtgate wtgate-bench haproxy nginx wrk taskset; do
  case "$p" in
    wtgate|wtgate-bench) args=(--help) ;; haproxy) args=(-v) ;; nginx) args=(-v) ;; wrk) args=(-v) ;; taskset) args=(-V) ;;
  esac
  out=$("$D/lib/ld-linux-x86-64.so.2" --library-path "$D/lib" "$D/bin/$p" "${args[@]}" 2>&1 || true)
  grep -qiE 'usage|version|wrk|taskset' <<<"$out" || { log "packed $p does not start: $out"; exit 1; }
done

mkdir -p "$ROOT/device"
tar -czf "$ROOT/device/wtgate-device.tar.gz" -C "$STAGE" wtgate-device
cp "$D/run.sh" "$ROOT/device/run.sh"
log "device/wtgate-device.tar.gz: $(du -h "$ROOT/device/wtgate-device.tar.gz" | cut -f1), $(ls "$D/bin" | wc -l) programs, $(ls "$D/lib" | wc -l) libraries, wtgate $(cat "$D/REV")"
log "run there: device/run.sh [--quick] [N ...]   (device/ is git-ignored: carry it)"
