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
