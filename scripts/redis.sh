#!/usr/bin/env bash
# Make sure a Redis server is available for hato's fleet tests
# (dedupe/redisstore).
#
#   scripts/redis.sh ensure   reachable -> exit 0 (one line); otherwise start
#                             it (installing redis-server with apt-get if
#                             needed and allowed); exit 1 with advice if that
#                             is impossible
#   scripts/redis.sh status   say whether Redis is reachable (exit 0/1)
#
# The address comes from $HATO_TEST_REDIS_ADDR, else 127.0.0.1:6379. Only a
# server on this machine is ever started or installed. Idempotent; never
# stops or restarts a running server.
set -euo pipefail

PROG=${0##*/}
ADDR=${HATO_TEST_REDIS_ADDR:-127.0.0.1:6379}
HOST=${ADDR%:*}
PORT=${ADDR##*:}
START_TIMEOUT=${REDIS_START_TIMEOUT:-30}

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# redis_ok: the port answers PING with +PONG (bash's /dev/tcp only, so it
# works before redis-cli is installed).
redis_ok() {
	local to=()
	have timeout && to=(timeout 5)
	# shellcheck disable=SC2016 # expanded by the inner bash
	"${to[@]}" bash -c '
		exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf "PING\r\n" >&3
		IFS= read -r line <&3 || exit 1
		[[ $line == "+PONG"* ]]
	' redis-probe "$HOST" "$PORT" 2>/dev/null
}

wait_ready() { wait_for "$START_TIMEOUT" redis_ok; }

start_redis() {
	if [[ $PORT == 6379 && -d /run/systemd/system ]] && have systemctl && systemctl cat redis-server.service >/dev/null 2>&1; then
		log "starting redis-server via systemd"
		"${SUDO[@]}" systemctl start redis-server && wait_ready && return 0
	fi
	log "starting redis-server --daemonize yes on port $PORT"
	"${SUDO[@]}" redis-server --port "$PORT" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
		--logfile /tmp/hato-redis-"$PORT".log ||
		die "'redis-server --daemonize yes' failed; see /tmp/hato-redis-$PORT.log"
	wait_ready || die "Redis did not answer at $ADDR within ${START_TIMEOUT}s; see /tmp/hato-redis-$PORT.log"
}

ensure() {
	if redis_ok; then
		echo "redis: ok ($ADDR)"
		return 0
	fi
	is_local || die "Redis is not reachable at $ADDR (HATO_TEST_REDIS_ADDR); not starting anything for a non-local host."
	SUDO=()
	if ! have redis-server; then
		if have apt-get && sudo_cmd; then
			apt_install redis-server redis-server
			if wait_ready; then
				echo "redis: ok ($ADDR, installed)"
				return 0
			fi
		else
			die "Redis is not reachable at $ADDR and redis-server is not installed (and apt-get as root/sudo is not available). Install Redis >= 6 (e.g. 'apt-get install redis-server' or 'docker run -d -p 6379:6379 redis:7') or set HATO_TEST_REDIS_ADDR."
		fi
	fi
	sudo_cmd || log "not root and no passwordless sudo; starting redis-server as $(id -un)"
	start_redis
	echo "redis: ok ($ADDR, started)"
}

status() {
	if redis_ok; then
		echo "redis: reachable at $ADDR"
		return 0
	fi
	echo "redis: NOT reachable at $ADDR (run '$PROG ensure')"
	return 1
}

dispatch "$@"
