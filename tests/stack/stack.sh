#!/usr/bin/env bash
# TEST ONLY: the compose stack on podman 4.3 + podman-compose 1.0.3 (Debian bookworm) without a
# container registry and without systemd.
#
#   tests/stack/stack.sh images   # app image + the test stand-ins, FROM localhost/debian-base:bookworm
#   tests/stack/stack.sh up       # start in dependency order, wait until every service is healthy
#   tests/stack/stack.sh check    # the webserver answers and has loaded the code location
#   tests/stack/stack.sh down     # stop and remove containers, network and volumes
#
# Why `up` is staged here instead of one `podman-compose up -d`: podman-compose 1.0.3 ignores
# depends_on conditions (it only orders), and podman 4.3 runs healthchecks from systemd timers
# ("unable to get systemd connection to add healthchecks"), which a machine without systemd has
# not: a container stays "starting" until `podman healthcheck run` is called. So each stage is
# started, then its healthchecks are run by hand until they pass.
#
# Needs: setup-podman.sh and base-image.sh (or their effect); CONTAINERS_CONF as they say.
set -euo pipefail
cd "$(dirname "$0")/../.."

PROJECT=${STACK_PROJECT:-ratatouille-test}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian-base:bookworm}
export RATATOUILLE_IMAGE=${RATATOUILLE_IMAGE:-localhost/ratatouille:latest}
export RATATOUILLE_NOTEBOOK_IMAGE=${RATATOUILLE_NOTEBOOK_IMAGE:-localhost/ratatouille-notebook:latest}
TIMEOUT=${STACK_TIMEOUT:-180}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

pc() { podman-compose --no-ansi -p "$PROJECT" -f docker-compose.yml -f tests/stack/compose.test.yml "$@"; }
cname() { echo "${PROJECT}_$1_1"; }
log() { printf '[stack %s] %s\n' "$(date +%T)" "$*" >&2; }

secret=()
[ -f "$CA_BUNDLE" ] && secret=(--secret "id=ca_bundle,src=$CA_BUNDLE")

# podman build ARGS... > LOG, timed; its log is shown only when it fails.
build() {
    local log=$1 t0=$SECONDS; shift
    if podman build "$@" >"$log" 2>&1; then
        log "built ${*: -2:1} in $((SECONDS - t0)) s"
    else
        tail -n 40 "$log" >&2; log "FAILED: podman build $*"; return 1
    fi
}

images() {
    # The two test stand-ins build beside the app image (they wait on the network more than on the
    # CPU): ~15 s less than one after the other, cold, on 2 cores.
    local logs; logs=$(mktemp -d)
    build "$logs/postgres.log" --build-arg BASE_IMAGE="$BASE_IMAGE" -f tests/stack/postgres.Dockerfile \
        -t localhost/ratatouille-test-postgres:15 tests/stack &
    local pg=$!
    build "$logs/s3.log" "${secret[@]}" --build-arg BASE_IMAGE="$BASE_IMAGE" -f tests/stack/s3.Dockerfile \
        -t localhost/ratatouille-test-s3:moto tests/stack &
    local s3=$! rc=0
    build "$logs/app.log" "${secret[@]}" --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$RATATOUILLE_IMAGE" . || rc=1
    # The `jupyter` service's image: the same build plus the notebook extra (its first stages are
    # the app image's cached layers). podman-compose 1.0.3 knows no profiles: it creates every service.
    build "$logs/notebook.log" "${secret[@]}" --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg "UV_EXTRAS=--extra notebook" \
        -t "$RATATOUILLE_NOTEBOOK_IMAGE" . || rc=1
    wait "$pg" || rc=1
    wait "$s3" || rc=1
    rm -rf "$logs"
    # Each rebuild leaves the previous images untagged (~2.3 GB a time): drop those, nothing else.
    podman image prune -f >/dev/null || true
    return $rc
}

# Run each container's healthcheck until all pass; fail on timeout or when one exits.
wait_healthy() {
    local deadline=$((SECONDS + TIMEOUT)) pending=("$@") next svc state
    while ((${#pending[@]})); do
        next=()
        for svc in "${pending[@]}"; do
            state=$(podman inspect -f '{{.State.Status}}' "$(cname "$svc")")
            if [ "$state" != running ]; then
                log "$svc is $state"; podman logs --tail 40 "$(cname "$svc")" >&2; return 1
            fi
            if podman healthcheck run "$(cname "$svc")" >/dev/null 2>&1; then
                log "$svc healthy"
            else
                next+=("$svc")
            fi
        done
        pending=("${next[@]}")
        if ((${#pending[@]})); then
            if ((SECONDS > deadline)); then
                log "timeout waiting for: ${pending[*]}"
                for svc in "${pending[@]}"; do podman logs --tail 40 "$(cname "$svc")" >&2; done
                return 1
            fi
            sleep 1
        fi
    done
}

# service_completed_successfully: wait for the one-shot to exit, with code 0.
wait_done() {
    local svc=$1 code
    code=$(timeout "$TIMEOUT" podman wait "$(cname "$svc")")
    podman logs "$(cname "$svc")" >&2
    [ "$code" = 0 ] || { log "$svc exited $code"; return 1; }
    log "$svc completed"
}

up() {
    # Create every container, volume and network (podman-compose 1.0.3: `up --no-start` without
    # -d runs `podman create` for each service), then start them stage by stage with plain podman:
    # `podman-compose up -d SERVICE` would re-run each dependency's `podman run` (name in use, then
    # `podman start`), which restarts the finished one-shot bucket init every time.
    # A run killed before its `down` leaves containers of the same names behind; starting those
    # would bring up an old stack (or a dead one). Clear this project's leftovers first, and fail
    # loudly if the containers cannot be created.
    down
    local out
    if ! out=$(pc up --no-start --no-build 2>&1); then
        tail -n 40 <<<"$out" >&2; log "FAILED: podman-compose up --no-start"; return 1
    fi
    start postgres minio
    wait_healthy postgres minio
    start minio-init
    wait_done minio-init
    start code
    wait_healthy code
    start webserver daemon sql jupyter
    wait_healthy webserver daemon sql jupyter
    podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}\t{{.Status}}'
}

start() {
    local svc names=()
    for svc in "$@"; do names+=("$(cname "$svc")"); done
    # podman 4.3 without systemd prints "unable to get systemd connection to start healthchecks":
    # harmless, the healthchecks are run by wait_healthy.
    podman start "${names[@]}" 2>&1 | grep -v 'systemd connection' >&2 || true
}

check() {
    local port=${WEBSERVER_PORT:-3000}
    curl -fsS "http://127.0.0.1:$port/server_info"; echo
    local out
    out=$(curl -fsS -H 'Content-Type: application/json' "http://127.0.0.1:$port/graphql" \
        -d '{"query":"{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"}')
    echo "$out"
    grep -q '"name":"ratatouille","loadStatus":"LOADED","locationOrLoadError":{"__typename":"RepositoryLocation"}' <<<"$out"
}

# -t: a daemon thread or an RPC in flight (a sensor tick) can hold dagster-daemon or the code
# server past the default 10 s; a test has nothing to lose to SIGKILL.
down() { pc down -v -t "${STACK_STOP_TIMEOUT:-3}" >/dev/null 2>&1 || true; podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true; }

case ${1:-} in
    images) images ;;
    up) up ;;
    check) check ;;
    down) down ;;
    *) echo "usage: $0 images|up|check|down" >&2; exit 2 ;;
esac
