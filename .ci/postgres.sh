#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback, from Debian's package (apt-get install postgresql),
# for the test suite and the load test. Run as root it runs the server as the `postgres` user.
#
#   .ci/postgres.sh start DIR [PORT]   initialise DIR, start the server, print its DATABASE_URL
#   .ci/postgres.sh stop DIR           stop it (DIR can then be removed)
#
# The role `skincare` has a random password and may create databases (Django's test database).
set -euo pipefail
action=${1:?usage: $0 start|stop DIR [PORT]}
dir=${2:?usage: $0 start|stop DIR [PORT]}
port=${3:-54329}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
    echo "PostgreSQL server not found under /usr/lib/postgresql: apt-get install postgresql" >&2
    exit 1
fi
as_owner() {
    if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case $action in
start)
    mkdir -p "$dir"
    [[ $(id -u) == 0 ]] && chown postgres: "$dir"
    password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
    superuser_password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
    as_owner sh -c "umask 077; echo '$superuser_password' > '$dir/superuser-password'"
    as_owner "$bin/initdb" --pgdata="$dir/data" --username=postgres --pwfile="$dir/superuser-password" \
        --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log"
    # Loopback only, the socket in DIR; fsync off: a test server, thrown away afterwards.
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --timeout=60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$dir' -c fsync=off -c max_connections=100" \
        start >/dev/null
    as_owner "$bin/psql" --quiet --no-psqlrc -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE skincare LOGIN CREATEDB PASSWORD '$password'" \
        -c "CREATE DATABASE skincare OWNER skincare" >/dev/null
    url="postgres://skincare:$password@127.0.0.1:$port/skincare"
    echo "$url" | as_owner sh -c "umask 077; cat > '$dir/database-url'"
    echo "$url"
    ;;
stop)
    if [[ -d "$dir/data" ]]; then
        as_owner "$bin/pg_ctl" --pgdata="$dir/data" --mode=fast --wait stop >/dev/null || true
    fi
    ;;
*)
    echo "usage: $0 start|stop DIR [PORT]" >&2
    exit 2
    ;;
esac
