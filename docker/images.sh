#!/usr/bin/env bash
# Makes sure the images that docker-compose.yml and the tests use exist in the local Docker engine,
# and prints their names for the shell:
#
#     eval "$(docker/images.sh)"          # sets RABBITMQ_IMAGE and PYTHON_IMAGE
#     docker/images.sh --test sid         # also the image of a test run on Debian sid (TEST_IMAGE)
#     docker/images.sh --test trixie      # ... or on Debian 13
#
# Where a registry answers it pulls the official images of today's series (rabbitmq:4.3-management,
# python:3.14-slim). Where none does it builds look-alikes from Debian sid's packages (debootstrap,
# then docker build with docker/rabbitmq/ and docker/python/): RabbitMQ 4.3.6 laid out as the official
# image (tagged rabbitmq:4.3-management and rabbitmq:4-management), and Python 3.14 in which
# `pip install -r requirements.txt` works. A test run's image (docker/test-run/) is built on the
# RabbitMQ look-alike of its Debian release: sid gives RabbitMQ 4.3.6, Python 3.14 and pika 1.4.4;
# trixie (Debian 13) RabbitMQ 4.0.5, Python 3.13 and pika 1.3.2. Images are kept: a second run only
# checks that they are there (and rebuilds a look-alike whose recipe in docker/ has changed).
# Progress goes to stderr; stdout is only the NAME=image lines. Needs root for debootstrap.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

SUITE=sid  # the Debian release of the default look-alikes
LOCAL=workqueues-local  # the look-alikes' repository prefix, never an official image's name
test_suite=
case "${1:-}" in
  --test) test_suite="${2:?--test needs a Debian release: sid or trixie}" ;;
  "") ;;
  *) echo "usage: docker/images.sh [--test sid|trixie]" >&2; exit 2 ;;
esac

say() { echo "images: $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# What each Debian release carries: the RabbitMQ series and the Python version of its look-alikes.
rabbitmq_series() { case "$1" in sid) echo 4.3 ;; trixie) echo 4.0 ;; *) die "no look-alikes for Debian $1 (sid or trixie)" ;; esac; }
python_version() { case "$1" in sid) echo 3.14 ;; trixie) echo 3.13 ;; *) die "no look-alikes for Debian $1 (sid or trixie)" ;; esac; }

RABBITMQ_OFFICIAL="${RABBITMQ_IMAGE:-rabbitmq:$(rabbitmq_series $SUITE)-management}"
PYTHON_OFFICIAL="${PYTHON_IMAGE:-python:$(python_version $SUITE)-slim}"

command -v docker >/dev/null || die "docker is not installed (Debian: apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd, or Docker Desktop)"

have() { docker image inspect "$1" >/dev/null 2>&1; }

# The recipe of a look-alike: its build folder's files and its base image. A change rebuilds it.
recipe() { { cat "$here/$1"/*; docker image inspect -f '{{.Id}}' "$2"; } | sha256sum | cut -c1-12; }
built_from() { docker image inspect -f '{{ index .Config.Labels "workqueues.recipe" }}' "$1" 2>/dev/null || true; }

# One scratch folder for the whole run (the functions below run in subshells), removed at exit.
tmp="$(mktemp -d /tmp/workqueues-images.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT

# A Debian release, minimal, as an image of its own: the base of every look-alike.
base_image() {
  local suite="$1" name="$LOCAL/debian:$1"
  if have "$name"; then echo "$name"; return; fi
  command -v debootstrap >/dev/null || die "debootstrap is not installed (Debian: apt-get install debootstrap)"
  [ "$(id -u)" = 0 ] || die "building $name with debootstrap needs root"
  local mirror
  mirror="$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  say "building $name with debootstrap from $mirror (about a minute)"
  debootstrap --variant=minbase "$suite" "$tmp/root-$suite" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
    || { tail -20 "$tmp/debootstrap.log" >&2; die "debootstrap $suite failed"; }
  # A mirror's sid may be a frozen copy whose Release file is past its Valid-Until date: apt inside the
  # image would refuse it (debootstrap does not check it).
  [ "$suite" != sid ] || echo 'Acquire::Check-Valid-Until "false";' >"$tmp/root-$suite/etc/apt/apt.conf.d/99no-valid-until"
  tar -C "$tmp/root-$suite" -c . | docker import -c 'CMD ["bash"]' - "$name" >/dev/null
  rm -rf "$tmp/root-$suite"
  echo "$name"
}

# docker build of docker/FOLDER on top of BASE, tagged NAME; extra files copied into the context.
build() {
  local folder="$1" base="$2" name="$3"; shift 3
  local sum
  sum="$(recipe "$folder" "$base")"
  if have "$name" && [ "$(built_from "$name")" = "$sum" ]; then return; fi
  local old
  old="$(docker image inspect -f '{{.Id}}' "$name" 2>/dev/null || true)"
  local context="$tmp/$folder"
  rm -rf "$context" && mkdir -p "$context" && cp "$here/$folder"/* "$context"/
  for extra in "$@"; do cp "$extra" "$context"/; done
  say "building $name (docker/$folder/)"
  DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$base" --label "workqueues.recipe=$sum" -t "$name" "$context" \
    >"$tmp/build.log" 2>&1 || { tail -30 "$tmp/build.log" >&2; die "docker build of docker/$folder failed"; }
  rm -rf "$context"
  # The image this one replaces, unless something still uses it.
  [ -z "$old" ] || docker rmi "$old" >/dev/null 2>&1 || true
}

pulled() {
  have "$1" && return 0
  say "pulling $1"
  timeout 600 docker pull -q "$1" >/dev/null 2>&1
}

# The RabbitMQ look-alike of a Debian release: rabbitmq:SERIES-management (and, for the newest series,
# rabbitmq:4-management, as the official image is also tagged).
local_rabbitmq() {
  local suite="$1" name
  name="$LOCAL/rabbitmq:$(rabbitmq_series "$suite")-management"
  build rabbitmq "$(base_image "$suite")" "$name"
  if [ "$suite" = sid ]; then docker tag "$name" "$LOCAL/rabbitmq:4-management"; fi
  echo "$name"
}

rabbitmq_image() {
  if pulled "$RABBITMQ_OFFICIAL"; then echo "$RABBITMQ_OFFICIAL"; return; fi
  say "no registry gave $RABBITMQ_OFFICIAL: using $LOCAL/rabbitmq:$(rabbitmq_series $SUITE)-management," \
      "built from Debian $SUITE's rabbitmq-server"
  local_rabbitmq "$SUITE"
}

python_image() {
  if pulled "$PYTHON_OFFICIAL"; then echo "$PYTHON_OFFICIAL"; return; fi
  local name
  name="$LOCAL/python:$(python_version $SUITE)-slim"
  say "no registry gave $PYTHON_OFFICIAL: using $name, built from Debian $SUITE's python3"
  local base
  base="$(base_image "$SUITE")"
  if have "$name" && [ "$(built_from "$name")" = "$(recipe python "$base")" ]; then echo "$name"; return; fi
  # pip inside the image: this machine's CA bundle, and its pip settings that reach an index.
  local ca=/etc/ssl/certs/ca-certificates.crt
  [ -f "$ca" ] || die "no CA bundle at $ca (Debian: apt-get install ca-certificates)"
  {
    echo "[global]"
    echo "cert = /usr/local/share/workqueues/ca-certificates.crt"
    for key in index-url trusted-host; do
      value="$(pip3 config get "global.$key" 2>/dev/null || true)"
      [ -z "$value" ] || echo "$key = $value"
    done
  } >"$tmp/pip.conf"
  build python "$base" "$name" "$ca" "$tmp/pip.conf"
  echo "$name"
}

rabbitmq="$(rabbitmq_image)"
python="$(python_image)"
echo "RABBITMQ_IMAGE=$rabbitmq"
echo "PYTHON_IMAGE=$python"
if [ -n "$test_suite" ]; then
  # Always Debian's own RabbitMQ and Python of that release: a test run's container has no official twin.
  test_image="$LOCAL/test-run:$test_suite"
  build test-run "$(local_rabbitmq "$test_suite")" "$test_image"
  echo "TEST_IMAGE=$test_image"
fi
