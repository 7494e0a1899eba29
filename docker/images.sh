#!/usr/bin/env bash
# Makes sure the images that docker-compose.yml and the tests use exist in the local Docker engine,
# and prints their names for the shell:
#
#     eval "$(docker/images.sh)"        # sets RABBITMQ_IMAGE and PYTHON_IMAGE
#     docker/images.sh --debian13       # also the image of the Debian 13 test run (DEBIAN13_IMAGE)
#
# Where a registry answers it pulls the official images (rabbitmq:4.0-management, python:3.13-slim).
# Where none does it builds look-alikes from Debian 13's packages (debootstrap, then docker build
# with docker/rabbitmq/ and docker/python/): RabbitMQ 4.0.5 laid out as the official image, and
# Python 3.13 in which `pip install -r requirements.txt` works. Images are kept: a second run only
# checks that they are there (and rebuilds a look-alike whose recipe in docker/ has changed).
# Progress goes to stderr; stdout is only the NAME=image lines. Needs root for debootstrap.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

RABBITMQ_OFFICIAL="${RABBITMQ_IMAGE:-rabbitmq:4.0-management}"
PYTHON_OFFICIAL="${PYTHON_IMAGE:-python:3.13-slim}"
SUITE=trixie  # Debian 13: rabbitmq-server 4.0.5, python3 3.13
LOCAL=workqueues-local  # the look-alikes' repository prefix, never an official image's name
want_debian13=
[ "${1:-}" = --debian13 ] && want_debian13=1

say() { echo "images: $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed (Debian: apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd, or Docker Desktop)"

have() { docker image inspect "$1" >/dev/null 2>&1; }

# The recipe of a look-alike: its build folder's files and its base image. A change rebuilds it.
recipe() { { cat "$here/$1"/*; docker image inspect -f '{{.Id}}' "$2"; } | sha256sum | cut -c1-12; }
built_from() { docker image inspect -f '{{ index .Config.Labels "workqueues.recipe" }}' "$1" 2>/dev/null || true; }

# One scratch folder for the whole run (the functions below run in subshells), removed at exit.
tmp="$(mktemp -d /tmp/workqueues-images.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT

# Debian 13, minimal, as an image of its own: the base of every look-alike.
base_image() {
  local name="$LOCAL/debian:$SUITE"
  if have "$name"; then echo "$name"; return; fi
  command -v debootstrap >/dev/null || die "debootstrap is not installed (Debian: apt-get install debootstrap)"
  [ "$(id -u)" = 0 ] || die "building $name with debootstrap needs root"
  local mirror
  mirror="$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  say "building $name with debootstrap from $mirror (about a minute)"
  debootstrap --variant=minbase "$SUITE" "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
    || { tail -20 "$tmp/debootstrap.log" >&2; die "debootstrap $SUITE failed"; }
  tar -C "$tmp/root" -c . | docker import -c 'CMD ["bash"]' - "$name" >/dev/null
  rm -rf "$tmp/root"
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

rabbitmq_image() {
  if pulled "$RABBITMQ_OFFICIAL"; then echo "$RABBITMQ_OFFICIAL"; return; fi
  local name="$LOCAL/rabbitmq:4.0-management"
  say "no registry gave $RABBITMQ_OFFICIAL: using $name, built from Debian 13's rabbitmq-server"
  build rabbitmq "$(base_image)" "$name"
  echo "$name"
}

python_image() {
  if pulled "$PYTHON_OFFICIAL"; then echo "$PYTHON_OFFICIAL"; return; fi
  local name="$LOCAL/python:3.13-slim"
  say "no registry gave $PYTHON_OFFICIAL: using $name, built from Debian 13's python3"
  local base
  base="$(base_image)"
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
if [ -n "$want_debian13" ]; then
  # Always Debian's RabbitMQ 4.0.5 and Python 3.13: the test run's container has no official twin.
  local_rabbitmq="$LOCAL/rabbitmq:4.0-management"
  build rabbitmq "$(base_image)" "$local_rabbitmq"
  build debian13 "$local_rabbitmq" "$LOCAL/debian13-test:latest"
  echo "DEBIAN13_IMAGE=$LOCAL/debian13-test:latest"
fi
