#!/usr/bin/env bash
# Make sure a RabbitMQ broker is available for hato's integration tests.
#
#   scripts/rabbitmq.sh ensure   reachable -> exit 0 (one line); otherwise start
#                                it (installing rabbitmq-server with apt-get if
#                                needed and allowed); exit 1 with advice if that
#                                is impossible
#   scripts/rabbitmq.sh status   say whether the broker is reachable (exit 0/1)
#
# The broker address comes from $AMQP_URL, else $HATO_TEST_AMQP_URL, else
# amqp://guest:guest@127.0.0.1:5672/. Only a broker on this machine
# (localhost/127.x/::1) is ever started or installed; for another host the
# script only checks reachability.
#
# Environment:
#   RABBITMQ_START_TIMEOUT  seconds to wait for a starting broker (default 90)
#   HATO_TEST_RABBITMQCTL   rabbitmqctl to use (default: rabbitmqctl in PATH)
#
# Idempotent; never stops or restarts a running broker.
set -euo pipefail

PROG=${0##*/}
URL=${AMQP_URL:-${HATO_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}}
START_TIMEOUT=${RABBITMQ_START_TIMEOUT:-90}
CTL=${HATO_TEST_RABBITMQCTL:-rabbitmqctl}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
	cat >&2 <<EOF
usage: $PROG ensure|status

  ensure  make sure RabbitMQ is reachable at the test broker address
          (starting or installing a local broker if necessary)
  status  report whether it is reachable (exit status 0/1)

Broker: \$AMQP_URL, else \$HATO_TEST_AMQP_URL, else amqp://guest:guest@127.0.0.1:5672/
EOF
	exit 2
}

# --- URL parsing (simple: scheme://[user[:pass]@]host[:port][/vhost]) -------

parse_url() {
	local rest=$URL scheme=amqp
	case $rest in
	amqps://*) scheme=amqps; rest=${rest#amqps://} ;;
	amqp://*) rest=${rest#amqp://} ;;
	*) die "unsupported AMQP URL '$URL' (want amqp://user:pass@host:port/vhost)" ;;
	esac
	rest=${rest%%[/?#]*} # authority only
	rest=${rest##*@}     # drop user:pass@
	if [[ $rest == \[* ]]; then # [ipv6]:port
		HOST=${rest%%]*}
		HOST=${HOST#[}
		rest=${rest#*]}
		PORT=${rest#:}
	elif [[ $rest == *:* ]]; then
		HOST=${rest%%:*}
		PORT=${rest##*:}
	else
		HOST=$rest
		PORT=
	fi
	[[ -n $HOST ]] || HOST=127.0.0.1
	if [[ -z $PORT ]]; then
		if [[ $scheme == amqps ]]; then PORT=5671; else PORT=5672; fi
	fi
	[[ $PORT =~ ^[0-9]+$ ]] || die "bad port '$PORT' in AMQP URL"
	case $HOST in
	localhost | 127.* | ::1 | 0.0.0.0) LOCAL=1 ;;
	*) LOCAL=0 ;;
	esac
	ADDR=$HOST:$PORT
	[[ $HOST == *:* ]] && ADDR="[$HOST]:$PORT"
	return 0
}

# --- probes ------------------------------------------------------------------

# amqp_ok: the port accepts a TCP connection and answers the AMQP 0-9-1
# protocol header with a frame (first byte 0x01 = method frame
# connection.start). Bounded by `timeout`; uses bash's /dev/tcp only.
amqp_ok() {
	local to=()
	command -v timeout >/dev/null 2>&1 && to=(timeout 5)
	# shellcheck disable=SC2016 # expanded by the inner bash
	"${to[@]}" bash -c '
		exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf "AMQP\x00\x00\x09\x01" >&3
		LC_ALL=C IFS= read -r -d "" -n 1 b <&3 || exit 1
		[[ $b == $'"'"'\x01'"'"' ]]
	' amqp-probe "$HOST" "$PORT" 2>/dev/null
}

have() { command -v "$1" >/dev/null 2>&1; }

ctl() { "$CTL" "$@"; }

# ctl_quiet runs rabbitmqctl, showing its output only on failure.
ctl_quiet() {
	local out
	if out=$(ctl "$@" 2>&1); then
		return 0
	fi
	printf '%s\n' "$out" >&2
	return 1
}

# node_up: the Erlang node answers (even if the rabbit app is stopped).
node_up() { have "$CTL" && ctl -q ping >/dev/null 2>&1; }

is_root_or_sudo() {
	if [[ $(id -u) == 0 ]]; then
		SUDO=()
		return 0
	fi
	if have sudo && sudo -n true 2>/dev/null; then
		SUDO=(sudo -n)
		return 0
	fi
	return 1
}

# wait_ready waits until the node has booted and AMQP answers.
wait_ready() {
	local deadline=$((SECONDS + START_TIMEOUT))
	while ((SECONDS < deadline)); do
		# await_startup fails at once while the node is not yet registered
		# with epmd, hence the loop.
		if node_up && ctl -q await_startup --timeout "$((deadline - SECONDS > 5 ? deadline - SECONDS : 5))" >/dev/null 2>&1 && amqp_ok; then
			return 0
		fi
		# Brokers without a local rabbitmqctl (e.g. systemd started it and
		# the CLI is elsewhere): AMQP answering is good enough.
		if ! have "$CTL" && amqp_ok; then
			return 0
		fi
		sleep 1
	done
	return 1
}

# --- actions -------------------------------------------------------------------

start_detached() {
	log "starting rabbitmq-server -detached"
	# Debian's wrapper switches to the rabbitmq user when run as root.
	"${SUDO[@]}" rabbitmq-server -detached ||
		die "'rabbitmq-server -detached' failed (it must run as root or the rabbitmq user); see /var/log/rabbitmq/"
}

start_local() {
	if node_up; then
		# The node runs but AMQP does not answer: it is booting, or a fault
		# test left the app stopped (rabbitmqctl stop_app).
		if [[ $(ctl -q eval 'rabbit:is_running().' 2>/dev/null) == true ]]; then
			# Running app: either still opening listeners or listening elsewhere.
			wait_ready_quick && return 0
			die "RabbitMQ is running but nothing answers AMQP at $ADDR; check its listeners ('$CTL status') or fix AMQP_URL"
		fi
		log "RabbitMQ node is up but its app is not running; starting it (rabbitmqctl start_app)"
		ctl_quiet start_app || log "start_app failed; waiting anyway"
	elif [[ -d /run/systemd/system ]] && have systemctl && systemctl cat rabbitmq-server.service >/dev/null 2>&1; then
		log "starting rabbitmq-server via systemd"
		"${SUDO[@]}" systemctl start rabbitmq-server || log "systemctl start failed; trying rabbitmq-server -detached"
		wait_ready && return 0
		node_up || start_detached
	else
		start_detached
	fi
	wait_ready || die "RabbitMQ did not become ready at $ADDR within ${START_TIMEOUT}s; see /var/log/rabbitmq/"
}

install_rabbitmq() {
	log "rabbitmq-server is not installed; installing it with apt-get"
	"${SUDO[@]}" apt-get update -qq
	# In containers without systemd the package's postinst may fail to start
	# the service; we start it ourselves below, so tolerate that failure.
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null ||
		log "apt-get install reported an error (often just the service start in a container); continuing"
	have rabbitmq-server || die "installing rabbitmq-server failed"
}

ensure() {
	parse_url
	if amqp_ok; then
		# Something speaks AMQP there. If we have a CLI for a local broker,
		# make sure it can talk to the node too (the Go tests need it to
		# create vhosts).
		if ((LOCAL)) && have "$CTL"; then
			if ! ctl -q await_startup --timeout 30 >/dev/null 2>&1; then
				die "AMQP answers at $ADDR but '$CTL await_startup' fails (is it another broker, e.g. in a container?). The tests need rabbitmqctl: set HATO_TEST_RABBITMQCTL to a wrapper that reaches that broker."
			fi
		fi
		echo "rabbitmq: ok ($ADDR)"
		return 0
	fi

	if ((!LOCAL)); then
		die "RabbitMQ is not reachable at $ADDR (from AMQP_URL/HATO_TEST_AMQP_URL); not starting anything for a non-local host. Start that broker or point AMQP_URL at a reachable RabbitMQ >= 3.10."
	fi

	SUDO=()
	if ! have rabbitmq-server && ! node_up; then
		if have apt-get && is_root_or_sudo; then
			install_rabbitmq
			# The package may have started the service already (systemd).
			if wait_ready_quick; then
				echo "rabbitmq: ok ($ADDR, installed)"
				return 0
			fi
		else
			die "RabbitMQ is not reachable at $ADDR and rabbitmq-server is not installed (and apt-get as root/sudo is not available). Install RabbitMQ >= 3.10 (e.g. 'apt-get install rabbitmq-server' or 'docker run -d -p 5672:5672 rabbitmq:3.10') or set AMQP_URL to a reachable broker."
		fi
	fi
	if [[ $(id -u) != 0 ]] && ! node_up; then
		is_root_or_sudo || log "not root and no passwordless sudo; trying to start RabbitMQ as $(id -un)"
	fi
	start_local
	echo "rabbitmq: ok ($ADDR, started)"
}

# wait_ready_quick: give a just-installed service a few seconds.
wait_ready_quick() {
	local _
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		amqp_ok && return 0
		sleep 1
	done
	return 1
}

status() {
	parse_url
	if amqp_ok; then
		local ver=""
		if ((LOCAL)) && have "$CTL"; then
			ver=$(ctl -q eval 'rabbit_misc:version().' 2>/dev/null | tr -d '"' || true)
		fi
		echo "rabbitmq: reachable at $ADDR${ver:+ (RabbitMQ $ver)}"
		return 0
	fi
	if ((LOCAL)) && node_up; then
		if [[ $(ctl -q eval 'rabbit:is_running().' 2>/dev/null) == true ]]; then
			echo "rabbitmq: NOT reachable at $ADDR (a local RabbitMQ runs but does not answer there; check its listeners or AMQP_URL)"
		else
			echo "rabbitmq: NOT reachable at $ADDR (local node is up but its app is stopped or booting; run '$PROG ensure')"
		fi
	else
		echo "rabbitmq: NOT reachable at $ADDR (run '$PROG ensure')"
	fi
	return 1
}

case ${1:-} in
ensure) ensure ;;
status) status ;;
*) usage ;;
esac
