#!/usr/bin/env bash
# Make sure PostgreSQL is available for hato's fleet tests (dedupe/pgstore,
# outbox/pgoutbox), with a role and database for them.
#
#   scripts/postgres.sh ensure   reachable with the test role -> exit 0 (one
#                                line); otherwise start a local cluster
#                                (installing postgresql with apt-get if needed
#                                and allowed) and create the role and database;
#                                exit 1 with advice if that is impossible
#   scripts/postgres.sh status   say whether the test database is reachable
#
# The database is $HATO_TEST_PG_URL, else
# postgres://hato:hato@127.0.0.1:5432/hato_test. Only a server on this
# machine is started or installed, and the role and database are created
# (idempotently) as the postgres superuser through its local socket (run as
# root or with passwordless sudo). Never stops or restarts a running server.
set -euo pipefail

PROG=${0##*/}
URL=${HATO_TEST_PG_URL:-postgres://hato:hato@127.0.0.1:5432/hato_test}
START_TIMEOUT=${PG_START_TIMEOUT:-60}

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# parse_url: postgres://user:pass@host:port/db (no query string).
parse_url() {
	local rest=${URL#postgres://}
	rest=${rest#postgresql://}
	local cred=${rest%%@*} hp=${rest#*@}
	PGROLE=${cred%%:*}
	PGPASS=${cred#*:}
	DB=${hp#*/}
	DB=${DB%%\?*}
	hp=${hp%%/*}
	HOST=${hp%:*}
	PORT=${hp##*:}
	[[ $PORT =~ ^[0-9]+$ ]] || PORT=5432
	[[ $PGROLE =~ ^[a-z_][a-z0-9_]*$ && $DB =~ ^[a-z_][a-z0-9_]*$ ]] ||
		die "role and database in '$URL' must be plain lower-case identifiers"
}

db_ok() { have psql && PGCONNECT_TIMEOUT=5 psql "$URL" -Atqc 'select 1' >/dev/null 2>&1; }

server_up() {
	if have pg_isready; then
		pg_isready -q -h "$HOST" -p "$PORT" -t 5
	else
		(exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
	fi
}

# as_postgres runs a command as the postgres OS user.
as_postgres() {
	if [[ $(id -u) == 0 ]]; then
		su postgres -s /bin/bash -c "$(printf '%q ' "$@")"
	else
		"${SUDO[@]}" -u postgres "$@"
	fi
}

wait_up() { wait_for "$START_TIMEOUT" server_up; }

# start_cluster starts the Debian cluster on PORT (creating one if none).
start_cluster() {
	local ver name
	read -r ver name < <(pg_lsclusters -h 2>/dev/null | awk -v p="$PORT" '$3 == p {print $1, $2; exit}') || true
	if [[ -z ${ver:-} ]]; then
		ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
		[[ -n $ver ]] || die "no PostgreSQL version under /usr/lib/postgresql"
		log "creating cluster $ver/main on port $PORT"
		"${SUDO[@]}" pg_createcluster "$ver" main -p "$PORT" >/dev/null
		name=main
	fi
	log "starting PostgreSQL cluster $ver/$name"
	"${SUDO[@]}" pg_ctlcluster "$ver" "$name" start || log "pg_ctlcluster start failed; waiting anyway"
	wait_up || die "PostgreSQL did not come up on $HOST:$PORT within ${START_TIMEOUT}s; see /var/log/postgresql/"
}

# create_role_db creates the test role and database if absent.
create_role_db() {
	local sql
	sql="DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PGROLE') THEN
    CREATE ROLE $PGROLE LOGIN PASSWORD '$PGPASS';
  END IF;
END \$\$;"
	as_postgres psql -p "$PORT" -qAt -v ON_ERROR_STOP=1 -c "$sql" >/dev/null
	if [[ -z $(as_postgres psql -p "$PORT" -qAt -c "SELECT 1 FROM pg_database WHERE datname = '$DB'") ]]; then
		log "creating database $DB owned by $PGROLE"
		as_postgres psql -p "$PORT" -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB OWNER $PGROLE" >/dev/null
	fi
}

ensure() {
	parse_url
	if db_ok; then
		echo "postgres: ok ($HOST:$PORT/$DB as $PGROLE)"
		return 0
	fi
	is_local || die "PostgreSQL is not reachable with $URL (HATO_TEST_PG_URL); not starting anything for a non-local host."
	SUDO=()
	sudo_cmd || die "the test database is not reachable with $URL and creating it needs root or passwordless sudo. Create it yourself: CREATE ROLE $PGROLE LOGIN PASSWORD '...'; CREATE DATABASE $DB OWNER $PGROLE; or set HATO_TEST_PG_URL."
	if ! have pg_lsclusters && ! server_up; then
		have apt-get || die "PostgreSQL is not installed and apt-get is not available. Install PostgreSQL >= 13 (e.g. 'docker run -d -p 5432:5432 -e POSTGRES_PASSWORD=hato postgres:16') and set HATO_TEST_PG_URL."
		apt_install postgresql pg_lsclusters
	fi
	server_up || start_cluster
	create_role_db
	db_ok || die "created role $PGROLE and database $DB but cannot connect with $URL (check pg_hba.conf allows password or trust logins on $HOST)"
	echo "postgres: ok ($HOST:$PORT/$DB as $PGROLE, set up)"
}

status() {
	parse_url
	if db_ok; then
		echo "postgres: reachable ($HOST:$PORT/$DB as $PGROLE)"
		return 0
	fi
	echo "postgres: NOT reachable with $URL (run '$PROG ensure')"
	return 1
}

dispatch "$@"
