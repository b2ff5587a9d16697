#!/bin/sh
# Entrypoint of the offline PostgreSQL image (see postgres.Dockerfile). A new data directory is initialised,
# opened to the compose network with the authentication POSTGRES_HOST_AUTH_METHOD names (only `trust` is
# supported: this image is for the offline test of the compose file), and given the init scripts' databases.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
    echo "offline postgres image: set POSTGRES_HOST_AUTH_METHOD=trust" >&2
    exit 1
  fi
  initdb --username=postgres --auth=trust --encoding=UTF8 --pgdata="$PGDATA" >/dev/null
  {
    echo "listen_addresses = '*'"
    echo "unix_socket_directories = '/tmp'"
  } >>"$PGDATA/postgresql.conf"
  echo "host all all all trust" >>"$PGDATA/pg_hba.conf"
  pg_ctl --pgdata="$PGDATA" --wait --options="-c listen_addresses=''" start >/dev/null
  for script in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$script" ] || continue
    echo "running $script"
    psql --host=/tmp --username=postgres --no-psqlrc --set=ON_ERROR_STOP=1 --quiet --file="$script"
  done
  pg_ctl --pgdata="$PGDATA" --wait --mode=fast stop >/dev/null
fi
exec "$@"
