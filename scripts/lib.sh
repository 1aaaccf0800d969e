# shellcheck shell=bash
# Functions shared by the scripts that make a test dependency available on
# this machine (scripts/redis.sh, scripts/postgres.sh). Source it after
# setting PROG (and HOST, for is_local):
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It defines functions only; it runs nothing.

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "$*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# is_local: HOST is this machine (only a local server is ever started).
is_local() { case $HOST in localhost | 127.* | ::1) return 0 ;; esac; return 1; }

# sudo_cmd sets SUDO to what runs a command as root (nothing when root,
# sudo -n with passwordless sudo); it fails when neither is possible.
sudo_cmd() {
	if [[ $(id -u) == 0 ]]; then
		SUDO=()
	elif have sudo && sudo -n true 2>/dev/null; then
		SUDO=(sudo -n)
	else
		return 1
	fi
}

# wait_for SECONDS CMD...: run CMD once a second until it succeeds (exit 0)
# or SECONDS have passed (exit 1).
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	while ((SECONDS < deadline)); do
		"$@" && return 0
		sleep 1
	done
	return 1
}

# apt_install PACKAGE COMMAND: install PACKAGE with apt-get (as SUDO) and
# die unless COMMAND exists afterwards. apt-get's own error is only
# logged: in a container it is often just the service failing to start.
apt_install() {
	log "$1 is not installed; installing it with apt-get"
	"${SUDO[@]}" apt-get update -qq
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null ||
		log "apt-get install reported an error (often just the service start in a container); continuing"
	have "$2" || die "installing $1 failed"
}

# dispatch ARG: run ensure or status (functions of the sourcing script)
# for the script's one argument; anything else prints the usage, exit 2.
dispatch() {
	case ${1:-} in
	ensure) ensure ;;
	status) status ;;
	*) echo "usage: $PROG ensure|status" >&2; exit 2 ;;
	esac
}
