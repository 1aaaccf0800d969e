#!/usr/bin/env bash
# Tests for scripts/rabbitmq.sh that never touch a real broker: every
# scenario runs with a PATH of fakes (rabbitmqctl, rabbitmq-server, apt-get)
# and a fake AMQP listener (python3) on a free loopback port.
#
#   scripts/rabbitmq_test.sh        # prints one line per scenario, exit 0 if all pass
#
# shellcheck disable=SC2317 # functions are invoked indirectly (trap, check)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SUT=$HERE/rabbitmq.sh
PY=$(python3 -c 'import sys; print(sys.executable)')
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rabbitmq-sh-test.XXXXXX")
FAILED=0

cleanup() {
	stop_fake_amqp
	rm -rf "$WORK"
}
trap cleanup EXIT

stop_fake_amqp() {
	if [[ -f ${STATE:-/nonexistent}/amqp.pid ]]; then
		kill "$(cat "$STATE/amqp.pid")" 2>/dev/null || true
		rm -f "$STATE/amqp.pid"
	fi
}

free_port() {
	"$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# A minimal PATH so that the real rabbitmq-server/rabbitmqctl/apt-get are
# invisible.
MINBIN=$WORK/minbin
mkdir -p "$MINBIN"
for tool in bash sh timeout id sleep tr cat env touch rm mkdir dirname cp seq grep sed; do
	ln -s "$(command -v "$tool")" "$MINBIN/$tool"
done
ln -s "$PY" "$MINBIN/python3"

# Fake AMQP server: answers every connection with one 0x01 byte (the start of
# a method frame), like a broker answering the protocol header.
cat >"$WORK/fake_amqp.py" <<'EOF'
import os, socket, sys
port, pidfile = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
with open(pidfile, "w") as f:
    f.write(str(os.getpid()))
while True:
    c, _ = s.accept()
    try:
        c.settimeout(2)
        c.recv(8)
        c.sendall(b"\x01\x00\x00")
    except OSError:
        pass
    c.close()
EOF

# Fakes log their calls to $STATE/calls and keep node/app state in files.
write_fakes() {
	local bin=$1
	mkdir -p "$bin"
	cat >"$bin/rabbitmqctl" <<'EOF'
#!/bin/bash
echo "rabbitmqctl $*" >>"$STATE/calls"
args=("$@"); [[ ${args[0]} == -q ]] && args=("${args[@]:1}")
case ${args[0]} in
ping) [[ -f $STATE/node_up ]] ;;
await_startup) [[ -f $STATE/app_running && ! -f $STATE/ctl_broken ]] ;;
eval)
	case ${args[1]} in
	rabbit:is_running*) [[ -f $STATE/app_running ]] && echo true || echo false ;;
	rabbit_misc:version*) echo '"3.10.8"' ;;
	esac ;;
start_app) touch "$STATE/app_running"; "$STATE/start_amqp" ;;
*) exit 64 ;;
esac
EOF
	cat >"$STATE/start_amqp" <<EOF
#!/bin/bash
[[ -f "\$STATE/amqp.pid" ]] && exit 0
python3 "$WORK/fake_amqp.py" "\$PORT" "\$STATE/amqp.pid" >/dev/null 2>&1 &
for _ in \$(seq 50); do [[ -f "\$STATE/amqp.pid" ]] && break; sleep 0.1; done
EOF
	cat >"$WORK/fake-rabbitmq-server" <<'EOF'
#!/bin/bash
echo "rabbitmq-server $*" >>"$STATE/calls"
touch "$STATE/node_up" "$STATE/app_running"
"$STATE/start_amqp"
EOF
	cat >"$bin/apt-get" <<EOF
#!/bin/bash
echo "apt-get \$*" >>"\$STATE/calls"
if [[ \$* == *install*rabbitmq-server* ]]; then
	cp "$WORK/fake-rabbitmq-server" "$bin/rabbitmq-server"
	exit 100 # like a postinst that could not start the service in a container
fi
EOF
	chmod +x "$bin"/* "$STATE/start_amqp" "$WORK/fake-rabbitmq-server"
}

# scenario NAME: fresh state, fresh port; sets STATE, PORT, BIN.
scenario() {
	stop_fake_amqp
	NAME=$1
	STATE=$WORK/$NAME
	BIN=$STATE/bin
	PORT=$(free_port)
	mkdir -p "$STATE"
	: >"$STATE/calls"
	export STATE PORT
	write_fakes "$BIN"
}

# run_sut ARGS...: runs rabbitmq.sh with the fake PATH; sets RC and OUT.
run_sut() {
	RC=0
	OUT=$(env -i PATH="$BIN:$MINBIN" STATE="$STATE" PORT="$PORT" \
		AMQP_URL="${URL:-amqp://guest:guest@127.0.0.1:$PORT/}" RABBITMQ_START_TIMEOUT=10 \
		bash "$SUT" "$@" 2>&1) || RC=$?
}

check() { # check DESCRIPTION CONDITION...
	local what=$1
	shift
	if "$@"; then
		return 0
	fi
	echo "FAIL [$NAME] $what"
	echo "  rc=$RC output:"
	printf '%s\n' "$OUT" | sed 's/^/    /'
	echo "  calls:"
	sed 's/^/    /' "$STATE/calls"
	FAILED=1
	return 1
}

contains() { [[ $1 == *"$2"* ]]; }
called() { grep -q -- "$1" "$STATE/calls"; }
not_called() { ! called "$1"; }

# 1. Broker already up: one line, nothing started.
scenario already-up
touch "$STATE/node_up" "$STATE/app_running"
cp "$WORK/fake-rabbitmq-server" "$BIN/rabbitmq-server"
"$STATE/start_amqp"
run_sut ensure
check "exit 0" test $RC = 0 && check "one ok line" test "$OUT" = "rabbitmq: ok (127.0.0.1:$PORT)" &&
	check "no start" not_called "rabbitmq-server" && check "no start_app" not_called "start_app" &&
	echo "ok   already-up"
run_sut status
check "status exit 0" test $RC = 0 && check "status text" contains "$OUT" "reachable at 127.0.0.1:$PORT (RabbitMQ 3.10.8)" &&
	echo "ok   status-up"

# 2. Installed but not running: rabbitmq-server -detached.
scenario installed-stopped
cp "$WORK/fake-rabbitmq-server" "$BIN/rabbitmq-server"
run_sut status
check "status exit 1" test $RC = 1 && check "status text" contains "$OUT" "NOT reachable" && echo "ok   status-down"
run_sut ensure
check "exit 0" test $RC = 0 && check "started" contains "$OUT" "rabbitmq: ok (127.0.0.1:$PORT, started)" &&
	check "detached" called "rabbitmq-server -detached" && check "no apt" not_called "apt-get" &&
	echo "ok   installed-stopped"

# 3. Node up, app stopped (e.g. a fault test died after stop_app): start_app.
scenario app-stopped
cp "$WORK/fake-rabbitmq-server" "$BIN/rabbitmq-server"
touch "$STATE/node_up"
run_sut ensure
check "exit 0" test $RC = 0 && check "start_app" called "rabbitmqctl start_app" &&
	check "no second node" not_called "rabbitmq-server -detached" && echo "ok   app-stopped"

# 4. Not installed, apt-get available (as root): install, then start.
scenario install
if [[ $(id -u) == 0 ]]; then
	run_sut ensure
	check "exit 0" test $RC = 0 && check "apt update" called "apt-get update" &&
		check "apt install" called "apt-get install -y -qq rabbitmq-server" &&
		check "detached" called "rabbitmq-server -detached" && echo "ok   install"
else
	echo "ok   install (not run: needs root to reach the apt-get branch)"
fi

# 5. Not installed, no apt-get: clear advice, exit 1.
scenario no-apt
rm "$BIN/apt-get"
run_sut ensure
check "exit 1" test $RC = 1 && check "advice" contains "$OUT" "Install RabbitMQ >= 3.10" &&
	check "mentions AMQP_URL" contains "$OUT" "AMQP_URL" && echo "ok   no-apt"

# 6. Non-local URL: only reachability, never start or install.
scenario remote
URL="amqp://u:p@broker.invalid:5672/vh" run_sut ensure
check "exit 1" test $RC = 1 && check "message" contains "$OUT" "non-local host" &&
	check "nothing run" test ! -s "$STATE/calls" && echo "ok   remote"

# 7. AMQP answers but the local rabbitmqctl cannot reach the node.
scenario ctl-broken
touch "$STATE/node_up" "$STATE/app_running" "$STATE/ctl_broken"
"$STATE/start_amqp"
run_sut ensure
check "exit 1" test $RC = 1 && check "message" contains "$OUT" "HATO_TEST_RABBITMQCTL" && echo "ok   ctl-broken"

# 8. A running local broker that does not listen on the URL's port.
scenario wrong-port
cp "$WORK/fake-rabbitmq-server" "$BIN/rabbitmq-server"
touch "$STATE/node_up" "$STATE/app_running"
run_sut ensure
check "exit 1" test $RC = 1 && check "message" contains "$OUT" "nothing answers AMQP" &&
	check "no start_app" not_called "start_app" && echo "ok   wrong-port"

# 9. URL parsing.
scenario parse
URL='amqps://u:p@[::1]/x' run_sut status
check "ipv6 + amqps default port" contains "$OUT" "[::1]:5671" && echo "ok   parse-ipv6"
URL='amqp://localhost' run_sut status
check "no port, no path" contains "$OUT" "localhost:5672" && echo "ok   parse-bare"
URL='http://x' run_sut status
check "bad scheme" test $RC = 1 && check "message" contains "$OUT" "unsupported AMQP URL" && echo "ok   parse-scheme"

exit $FAILED
