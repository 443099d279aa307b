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

# default_pinning: the proxy on the last core (PROXY_CPUS), clients and backends on the others
# (LOAD_CPUS), unless the caller set them; on one core, both on it.
default_pinning() {
  local n
  n=$(nproc)
  if [ "$n" -ge 2 ]; then
    PROXY_CPUS=${PROXY_CPUS:-$((n - 1))}
    LOAD_CPUS=${LOAD_CPUS:-0-$((n - 2))}
  else
    PROXY_CPUS=${PROXY_CPUS:-0}
    LOAD_CPUS=${LOAD_CPUS:-0}
  fi
}

# nginx_user: the `user` directive nginx needs here. Started as root, its workers switch to its
# compiled-in user (www-data on Debian), which a bare machine may lack: then root.
nginx_user() {
  if [ "$(id -u)" = 0 ] && ! grep -q '^www-data:' /etc/passwd; then echo " user root root;"; fi
}
