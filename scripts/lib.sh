# Shared by the benchmark scripts (sourced, not run).

# apt_install PKG…: installs the Debian packages given (none: nothing), with sudo unless root.
apt_install() {
  [ $# -gt 0 ] || return 0
  echo "${0##*/}: installing $* from apt" >&2
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# busy_pct: how busy all cores were over one second, in percent (the machine may be shared).
busy_pct() {
  local a b
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  awk -v u=$(( (b[1]+b[2]+b[3]+b[6]+b[7]+b[8]) - (a[1]+a[2]+a[3]+a[6]+a[7]+a[8]) )) \
      -v i=$(( (b[4]+b[5]) - (a[4]+a[5]) )) 'BEGIN { printf "%.0f", 100 * u / (u + i) }'
}
