#!/usr/bin/env bash
# A throw-away RabbitMQ cluster (3 nodes by default) on loopback, beside the
# default broker, for hato's cluster tests (internal/clustertest, make test-cluster).
#
#   scripts/cluster.sh start            start the nodes and cluster them (join_cluster);
#                                       a no-op if that cluster already runs whole,
#                                       otherwise it first removes any leftover
#   scripts/cluster.sh stop             kill -9 every node and remove the base dir
#                                       (always safe to call)
#   scripts/cluster.sh status           print the nodes, their ports and pids
#                                       (exit 0 only if every node runs)
#   scripts/cluster.sh kill N           kill -9 node N's Erlang VM
#   scripts/cluster.sh stop-node N      stop node N gracefully (rabbitmqctl stop)
#   scripts/cluster.sh start-node N     start node N again and wait until it runs
#   scripts/cluster.sh ctl N ARGS...    rabbitmqctl -n <node N> ARGS...
#   scripts/cluster.sh queues N ARGS... rabbitmq-queues -n <node N> ARGS...
#   scripts/cluster.sh reap-after PID   wait until process PID exits, then take the
#                                       cluster lock (flock DIR.lock) and stop
#                                       (the Go helper's watchdog against a killed
#                                       test binary)
#
# N is a node number (1..HATO_CLUSTER_NODES) or a full node name.
#
# Node N is named ${HATO_CLUSTER_NAME}N@${HATO_CLUSTER_HOST} (hato-c1@localhost ...),
# listens for AMQP on 127.0.0.1:PORT_BASE+N (5681..5683, guest/guest) and for
# Erlang distribution on 127.0.0.1:DIST_BASE+N (25681..25683). No plugins are
# enabled (no management listener). The nodes run as the calling user with
# HOME=DIR, so they use DIR/.erlang.cookie (a fresh random cookie per start)
# and never the default broker's cookie, config (/etc/rabbitmq/*), data, logs
# or pid file. epmd is shared with the default broker (it is left running).
#
# This script never touches the default broker (rabbit@<host>, port 5672), and
# it does not need it to run: it calls RabbitMQ's own scripts directly, not
# Debian's su wrappers in /usr/sbin.
#
# Environment:
#   HATO_CLUSTER_DIR        base dir; everything the nodes write is below it and
#                           `stop` removes it (default ${TMPDIR:-/tmp}/hato-cluster)
#   HATO_CLUSTER_NODES      number of nodes (default 3)
#   HATO_CLUSTER_PORT_BASE  AMQP port of node N is PORT_BASE+N (default 5680)
#   HATO_CLUSTER_DIST_BASE  distribution port of node N is DIST_BASE+N (default 25680)
#   HATO_CLUSTER_CTL_PORTS  distribution port range of the CLI tools (default 35690-35719)
#   HATO_CLUSTER_NAME       node name prefix (default hato-c)
#   HATO_CLUSTER_HOST       host part of the node names; must resolve to
#                           loopback (default localhost)
#   HATO_CLUSTER_TIMEOUT    seconds to wait for a node to boot (default 90)
#   HATO_CLUSTER_ERL_ARGS   extra arguments for the nodes' Erlang VMs (default none)
#   RABBITMQ_SBIN           directory holding RabbitMQ's rabbitmq-server and
#                           rabbitmqctl scripts (default /usr/lib/rabbitmq/bin on
#                           Debian, else the directory of rabbitmq-server in PATH)
#
# Start takes about 15 s; each node needs about 130 MB of memory.
set -euo pipefail

PROG=${0##*/}
DIR=${HATO_CLUSTER_DIR:-${TMPDIR:-/tmp}/hato-cluster}
DIR=${DIR%/}
NODES=${HATO_CLUSTER_NODES:-3}
PORT_BASE=${HATO_CLUSTER_PORT_BASE:-5680}
DIST_BASE=${HATO_CLUSTER_DIST_BASE:-25680}
CTL_PORTS=${HATO_CLUSTER_CTL_PORTS:-35690-35719}
NAME=${HATO_CLUSTER_NAME:-hato-c}
HOST=${HATO_CLUSTER_HOST:-localhost}
TIMEOUT=${HATO_CLUSTER_TIMEOUT:-90}
ERL_ARGS=${HATO_CLUSTER_ERL_ARGS:-}
MARKER=.hato-cluster # file in DIR: proves DIR is ours before rm -rf

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
	log "$*"
	exit 1
}

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

[[ $DIR == /* && $DIR != / ]] || die "HATO_CLUSTER_DIR must be an absolute path other than / (got '$DIR')"
for v in NODES PORT_BASE DIST_BASE TIMEOUT; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number (got '${!v}')"
done
[[ $CTL_PORTS =~ ^([0-9]+)-([0-9]+)$ ]] || die "HATO_CLUSTER_CTL_PORTS must look like 35690-35719"
CTL_PORT_MIN=${BASH_REMATCH[1]}
CTL_PORT_MAX=${BASH_REMATCH[2]}

# --- RabbitMQ's scripts ----------------------------------------------------------

find_sbin() {
	if [[ -n ${RABBITMQ_SBIN:-} ]]; then
		SBIN=$RABBITMQ_SBIN
	elif [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]]; then
		SBIN=/usr/lib/rabbitmq/bin # Debian/Ubuntu: bypass the su wrappers in /usr/sbin
	elif command -v rabbitmq-server >/dev/null 2>&1; then
		SBIN=$(dirname "$(readlink -f "$(command -v rabbitmq-server)")")
	else
		die "rabbitmq-server is not installed; install it (as root: 'apt-get install rabbitmq-server', or 'make broker') or set RABBITMQ_SBIN"
	fi
	[[ -x $SBIN/rabbitmq-server && -x $SBIN/rabbitmqctl ]] ||
		die "no rabbitmq-server/rabbitmqctl in $SBIN (set RABBITMQ_SBIN to RabbitMQ's sbin directory)"
}

# --- nodes -------------------------------------------------------------------------

# node_index N|name -> sets IDX (1..NODES)
node_index() {
	local arg=${1:-}
	if [[ $arg =~ ^[0-9]+$ ]] && ((arg >= 1 && arg <= NODES)); then
		IDX=$arg
		return 0
	fi
	local i
	for ((i = 1; i <= NODES; i++)); do
		if [[ $arg == "$(node_name "$i")" ]]; then
			IDX=$i
			return 0
		fi
	done
	die "unknown node '$arg' (want 1..$NODES or a node name such as $(node_name 1))"
}

node_name() { echo "$NAME$1@$HOST"; }
node_dir() { echo "$DIR/$NAME$1"; }
amqp_port() { echo $((PORT_BASE + $1)); }
dist_port() { echo $((DIST_BASE + $1)); }

# node_env I: export everything RabbitMQ's scripts read for node I (call it
# in a subshell). Nothing points at the default broker's files.
node_env() {
	local i=$1 nd
	nd=$(node_dir "$i")
	export HOME=$DIR # DIR/.erlang.cookie, for the node and the CLI alike
	export RABBITMQ_CONF_ENV_FILE=$DIR/rabbitmq-env.conf # instead of /etc/rabbitmq/rabbitmq-env.conf
	export RABBITMQ_NODENAME
	RABBITMQ_NODENAME=$(node_name "$i")
	export RABBITMQ_USE_LONGNAME=false
	export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
	export RABBITMQ_NODE_PORT
	RABBITMQ_NODE_PORT=$(amqp_port "$i")
	export RABBITMQ_DIST_PORT
	RABBITMQ_DIST_PORT=$(dist_port "$i")
	export RABBITMQ_CONFIG_FILE=$nd/rabbitmq.conf
	export RABBITMQ_ADVANCED_CONFIG_FILE=$nd/advanced.config
	export RABBITMQ_ENABLED_PLUGINS_FILE=$nd/enabled_plugins
	export RABBITMQ_MNESIA_BASE=$nd/mnesia
	export RABBITMQ_LOG_BASE=$nd/log
	export RABBITMQ_PID_FILE=$nd/pid
	export RABBITMQ_PLUGINS_EXPAND_DIR=$nd/plugins-expand
	export RABBITMQ_FEATURE_FLAGS_FILE=$nd/feature_flags
	export RABBITMQ_MOTD_FILE=$nd/motd
	export RABBITMQ_CTL_DIST_PORT_MIN=$CTL_PORT_MIN
	export RABBITMQ_CTL_DIST_PORT_MAX=$CTL_PORT_MAX
	export ERL_EPMD_ADDRESS=127.0.0.1 # only matters if epmd is not running yet
	export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} $ERL_ARGS"
	export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
	unset RABBITMQ_CONFIG_FILES RABBITMQ_MNESIA_DIR RABBITMQ_QUORUM_DIR RABBITMQ_STREAM_DIR RABBITMQ_LOGS
}

# ctl I ARGS...: rabbitmqctl against node I (stdout/stderr as is).
ctl() {
	local i=$1
	shift
	(
		node_env "$i"
		cd "$DIR"
		exec "$SBIN/rabbitmqctl" -n "$(node_name "$i")" "$@"
	)
}

queues() {
	local i=$1
	shift
	(
		node_env "$i"
		cd "$DIR"
		exec "$SBIN/rabbitmq-queues" -n "$(node_name "$i")" "$@"
	)
}

# ctl_quiet I ARGS...: ctl, showing the output only on failure.
ctl_quiet() {
	local out
	if out=$(ctl "$@" 2>&1); then
		return 0
	fi
	printf '%s\n' "$out" >&2
	return 1
}

# marker_pids COMM GREP_OPTS STRING: pids of processes whose environment has
# a line matching STRING (grep -q GREP_OPTS STRING) and whose name is COMM,
# or, for COMM '*', any name but epmd (a node may have started epmd, which
# the default broker shares).
marker_pids() {
	local p comm
	for p in /proc/[0-9]*; do
		comm=
		read -r comm 2>/dev/null <"$p/comm" || continue
		if [[ $1 == '*' ]]; then
			[[ $comm != epmd ]] || continue
		else
			[[ $comm == "$1" ]] || continue
		fi
		if tr '\0' '\n' 2>/dev/null <"$p/environ" | grep -q "$2" -- "$3"; then
			echo "${p#/proc/}"
		fi
	done
}

# node_pids I: pids of node I's Erlang VM, found by the marker variable
# start_node puts in its environment (HATO_CLUSTER_SERVER=DIR/NODENAME). Never
# matches the default broker or a CLI VM: they do not carry the marker.
node_pids() { marker_pids beam.smp -xF "HATO_CLUSTER_SERVER=$DIR/$(node_name "$1")"; }

# all_pids: every process of every node of the cluster in DIR: the VMs, their
# helpers and launch scripts (epmd excepted).
all_pids() { marker_pids '*' -F "HATO_CLUSTER_SERVER=$DIR/"; }

# alive PID: the process exists and is not a zombie.
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat%% *} != Z ]]
}

# wait_gone PIDS...: wait (up to 15 s) until none of PIDS is alive.
wait_gone() {
	local deadline=$((SECONDS + 15)) p any
	while :; do
		any=
		for p in "$@"; do
			alive "$p" && any=1
		done
		[[ -z $any ]] && return 0
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
}

# tcp_open PORT: something accepts connections on 127.0.0.1:PORT.
tcp_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' tcp-probe "$1" 2>/dev/null; }

epmd_has() { epmd -names 2>/dev/null | grep -q "^name $1 at port"; }

check_host() {
	local addr
	addr=$(getent ahostsv4 "$HOST" 2>/dev/null | awk 'NR==1{print $1}')
	[[ $addr == 127.* ]] || die "node host '$HOST' resolves to '${addr:-nothing}', not loopback; set HATO_CLUSTER_HOST"
}

write_files() {
	mkdir -p "$DIR"
	chmod 700 "$DIR"
	: >"$DIR/$MARKER"
	: >"$DIR/rabbitmq-env.conf"
	if [[ ! -s $DIR/.erlang.cookie ]]; then
		umask 077
		od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$DIR/.erlang.cookie"
		chmod 400 "$DIR/.erlang.cookie"
		umask 022
	fi
	local i nd
	for ((i = 1; i <= NODES; i++)); do
		nd=$(node_dir "$i")
		mkdir -p "$nd/log" "$nd/mnesia"
		cat >"$nd/rabbitmq.conf" <<EOF
# hato test cluster node $(node_name "$i") (written by scripts/cluster.sh)
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$i")
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = info
EOF
		echo '[].' >"$nd/enabled_plugins"
	done
}

# start_node I: launch node I (detached from this shell) and wait until the
# rabbit app runs.
start_node() {
	local i=$1 nd name pids watch
	nd=$(node_dir "$i")
	name=$(node_name "$i")
	pids=$(node_pids "$i")
	if [[ -n $pids ]]; then
		log "$name already runs (pid $pids)"
		watch=${pids%%$'\n'*}
	else
		[[ -f $DIR/$MARKER ]] || die "no cluster files in $DIR; run '$PROG start' first"
		epmd_has "$NAME$i" && die "a node named $name is already registered with epmd (someone else's?)"
		tcp_open "$(amqp_port "$i")" && die "port 127.0.0.1:$(amqp_port "$i") is in use; set HATO_CLUSTER_PORT_BASE"
		tcp_open "$(dist_port "$i")" && die "port 127.0.0.1:$(dist_port "$i") is in use; set HATO_CLUSTER_DIST_BASE"
		rm -f "$nd/pid"
		(
			node_env "$i"
			export HATO_CLUSTER_SERVER=$DIR/$name
			cd "$DIR"
			exec setsid "$SBIN/rabbitmq-server" >>"$nd/log/console.log" 2>&1 </dev/null
		) &
		watch=$! # rabbitmq-server's sh, which lives as long as the VM
	fi
	wait_node "$i" "$watch"
}

# wait_node I PID: wait until node I's rabbit app runs; fail early if
# process PID (the node's launcher or VM) dies.
wait_node() {
	local i=$1 watch=$2 deadline=$((SECONDS + TIMEOUT)) name nd left
	name=$(node_name "$i")
	nd=$(node_dir "$i")
	while :; do
		left=$((deadline - SECONDS))
		if ((left <= 0)); then
			node_log "$i"
			die "$name did not start within ${TIMEOUT}s"
		fi
		if ! alive "$watch"; then
			node_log "$i"
			die "$name exited while starting (see above and $nd/log)"
		fi
		# The AMQP listener opens at the end of the boot; poll it (cheap)
		# before asking the node itself (each CLI call boots an Erlang VM).
		if tcp_open "$(amqp_port "$i")" && ctl "$i" -q await_startup --timeout "$left" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
}

node_log() {
	local nd f
	nd=$(node_dir "$1")
	for f in "$nd"/log/console.log "$nd"/log/*.log; do
		[[ -s $f ]] || continue
		log "--- last lines of $f"
		tail -n 30 "$f" >&2
	done
}

# running_nodes I: the running cluster members as node I sees them, one a line.
running_nodes() {
	ctl "$1" -q cluster_status --formatter json 2>/dev/null |
		grep -o '"running_nodes":\[[^]]*\]' | grep -o '"[^"]*@[^"]*"' | tr -d '"'
}

healthy() {
	local i n
	[[ -f $DIR/$MARKER ]] || return 1
	for ((i = 1; i <= NODES; i++)); do
		[[ -n $(node_pids "$i") ]] || return 1
		tcp_open "$(amqp_port "$i")" || return 1
	done
	n=$(running_nodes 1 | wc -l)
	((n == NODES))
}

# --- actions -----------------------------------------------------------------------

cmd_start() {
	find_sbin
	check_host
	if healthy; then
		log "cluster already runs"
		cmd_status
		return 0
	fi
	cmd_stop
	[[ ! -e $DIR ]] || die "$DIR exists but was not made by $PROG; remove it or set HATO_CLUSTER_DIR"
	write_files
	local i pids=() failed=0 t0=$SECONDS
	log "starting $NODES nodes in $DIR"
	for ((i = 1; i <= NODES; i++)); do
		start_node "$i" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || failed=1; done
	((failed == 0)) || die "some nodes did not start (cluster left in $DIR; '$PROG stop' removes it)"
	# One node after the other: concurrent joins can make mnesia fail to
	# start on a joining node.
	local seed
	seed=$(node_name 1)
	for ((i = 2; i <= NODES; i++)); do
		ctl_quiet "$i" -q stop_app &&
			ctl_quiet "$i" -q join_cluster "$seed" &&
			ctl_quiet "$i" -q start_app ||
			die "$(node_name "$i") could not join $seed (cluster left in $DIR; '$PROG stop' removes it)"
	done
	local running
	running=$(running_nodes 1 | wc -l)
	((running == NODES)) || die "cluster_status on $seed shows $running running nodes, want $NODES"
	log "cluster of $NODES nodes up in $((SECONDS - t0))s"
	cmd_status
}

cmd_stop() {
	local pids round
	# Twice: a launch script caught between two forks may still have
	# started a VM.
	for round in 1 2; do
		pids=$(all_pids)
		[[ -n $pids ]] || break
		# shellcheck disable=SC2086
		kill -9 $pids 2>/dev/null || true
		# shellcheck disable=SC2086
		wait_gone $pids || log "some cluster processes did not exit: $pids"
	done
	if [[ -d $DIR ]]; then
		if [[ -f $DIR/$MARKER ]]; then
			rm -rf "$DIR"
		else
			log "not removing $DIR: it has no $MARKER file (not made by $PROG)"
		fi
	fi
}

cmd_status() {
	local i pids up=0 state
	for ((i = 1; i <= NODES; i++)); do
		pids=$(node_pids "$i" | tr '\n' ' ')
		pids=${pids% }
		if [[ -z $pids ]]; then
			state=down
		elif tcp_open "$(amqp_port "$i")"; then
			state="running pid=$pids"
			up=$((up + 1))
		else
			state="starting/stopped-app pid=$pids"
		fi
		printf '%s amqp://guest:guest@127.0.0.1:%s/ dist=%s %s\n' \
			"$(node_name "$i")" "$(amqp_port "$i")" "$(dist_port "$i")" "$state"
	done
	echo "dir=$DIR"
	((up == NODES))
}

cmd_kill() {
	node_index "${1:-}"
	local pids
	pids=$(node_pids "$IDX")
	[[ -n $pids ]] || die "$(node_name "$IDX") is not running"
	# shellcheck disable=SC2086
	kill -9 $pids
	# shellcheck disable=SC2086
	wait_gone $pids || die "$(node_name "$IDX") (pid $pids) did not exit after kill -9"
	log "killed $(node_name "$IDX") (pid $pids)"
}

cmd_stop_node() {
	find_sbin
	node_index "${1:-}"
	local pids
	pids=$(node_pids "$IDX")
	[[ -n $pids ]] || die "$(node_name "$IDX") is not running"
	ctl_quiet "$IDX" -q stop || die "rabbitmqctl stop failed for $(node_name "$IDX")"
	# shellcheck disable=SC2086
	wait_gone $pids || die "$(node_name "$IDX") (pid $pids) did not exit after rabbitmqctl stop"
	log "stopped $(node_name "$IDX")"
}

cmd_start_node() {
	find_sbin
	node_index "${1:-}"
	start_node "$IDX"
	log "started $(node_name "$IDX")"
}

# reap_after PID: the last resort against a test binary that was killed
# before its cleanup ran. Holding the cluster lock means no live test owns a
# cluster in DIR, so stopping it then is always right.
cmd_reap_after() {
	local pid=${1:-}
	[[ $pid =~ ^[0-9]+$ ]] || die "reap-after needs a pid"
	while kill -0 "$pid" 2>/dev/null; do sleep 1; done
	exec flock "$DIR.lock" "$0" stop
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
kill) cmd_kill "${2:-}" ;;
stop-node) cmd_stop_node "${2:-}" ;;
start-node) cmd_start_node "${2:-}" ;;
ctl | queues)
	what=$1
	shift
	find_sbin
	node_index "${1:-}"
	shift
	"$what" "$IDX" "$@"
	;;
reap-after) cmd_reap_after "${2:-}" ;;
*) usage ;;
esac
