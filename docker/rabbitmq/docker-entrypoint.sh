#!/bin/sh
# The look-alike's entrypoint (docker/images.sh): `docker-entrypoint.sh rabbitmq-server` starts the
# broker in the foreground as the rabbitmq user, as the official image's entrypoint does; any other
# command runs as it is.
set -e
if [ "${1#-}" != "$1" ]; then
  set -- rabbitmq-server "$@"
fi
if [ "$1" = rabbitmq-server ]; then
  shift
  if [ "$(id -u)" = 0 ]; then
    chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
    exec gosu rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
  fi
  exec /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
fi
exec "$@"
