#!/usr/bin/env bash
# Peer Compute quickstart: on this one machine, a gateway (dev TLS, *.apps.localhost), a
# provider, and a client identity that trust each other; a demo web app image built locally
# with no registry and deployed with `peerctl deploy`; its public HTTPS URL printed and checked.
#
# Usage: deploy/quickstart.sh [--once] [--keep-state] [--help]
#   --once        exit (and clean up) right after the URL answered once — for CI
#   --keep-state  keep .quickstart/ identities between runs (default: kept anyway; use
#                 `rm -rf .quickstart` for a fresh start)
# Ports (override with env): HTTPS_PORT=8443 TUNNEL_PORT=7443 (UDP) ADMIN_PORT=9180 P2P_PORT=9000
#   GATEWAY_P2P_PORT=4001 (the gateway's relay/rendezvous, TCP and UDP)
set -euo pipefail

ONCE=0
for arg in "$@"; do
    case "$arg" in
        --once) ONCE=1 ;;
        --keep-state) ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DOMAIN=apps.localhost
HTTPS_PORT=${HTTPS_PORT:-8443}
TUNNEL_PORT=${TUNNEL_PORT:-7443}
ADMIN_PORT=${ADMIN_PORT:-9180}
P2P_PORT=${P2P_PORT:-9000}
GATEWAY_P2P_PORT=${GATEWAY_P2P_PORT:-4001}
STATE=$ROOT/.quickstart
NAME=demo

die() { echo "quickstart: $*" >&2; exit 1; }
step() { echo "==> $*" >&2; }

# --- prerequisites, each explained in one line -------------------------------------------
command -v cargo >/dev/null || die "Rust is not installed: get it from https://rustup.rs (cargo must be on PATH)"
command -v docker >/dev/null || die "the docker CLI is missing: install Docker (apt-get install docker.io)"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
    || die "no Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}: start it (systemctl start docker) or set DOCKER_HOST"
command -v curl >/dev/null || die "curl is missing: apt-get install curl"

# Leftovers of an earlier run that did not clean up (killed with -9, say).
if [ -f "$STATE/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$STATE/pids"
    rm -f "$STATE/pids"
fi
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$HTTPS_PORT" "$ADMIN_PORT" "$P2P_PORT"; do
    if port_busy "$p"; then die "port $p is taken by another program: free it or set HTTPS_PORT/ADMIN_PORT/P2P_PORT"; fi
done

# --- build -----------------------------------------------------------------------------------
# The `quickstart` cargo profile (root Cargo.toml): nothing optimised and no debuginfo, less than
# half the compile work of a debug build, which is what the first run waits for. The programs
# only serve a demo. Only the demo app must be static (its image is FROM scratch); it builds
# alongside, in target/static.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/quickstart
mkdir -p "$STATE"
step "building the demo app image in the background (log: $STATE/demo-build.log)"
docker/build-scratch.sh --profile quickstart demo >"$STATE/demo-image" 2>"$STATE/demo-build.log" &
DEMO_BUILD=$!
trap 'kill "$DEMO_BUILD" 2>/dev/null || true' EXIT
step "building peercompute-gateway, peercomputed and peerctl (the first build takes a few minutes; then seconds)"
cargo build --profile quickstart --bins -p peercompute-gateway -p peercompute-provider -p peerctl \
    || die "cargo build failed (see above)"
for b in peercompute-gateway peercomputed peerctl; do
    [ -x "$BIN/$b" ] || die "the build did not produce $BIN/$b"
done
wait "$DEMO_BUILD" || die "building the demo image failed: $(tail -n 20 "$STATE/demo-build.log")"
IMAGE=$(tail -n 1 "$STATE/demo-image")
[ -n "$IMAGE" ] || die "the demo image build printed no tag (see $STATE/demo-build.log)"
step "built in $SECONDS s; demo image $IMAGE"

# --- identities and trust ----------------------------------------------------------------
GW_STATE=$STATE/gateway PROV_HOME=$STATE/provider CLIENT_HOME=$STATE/client
GW_ID=$("$BIN/peercompute-gateway" id --state-dir "$GW_STATE" 2>/dev/null)
PROV_ID=$("$BIN/peercomputed" --home "$PROV_HOME" init 2>/dev/null)
CLIENT_ID=$("$BIN/peerctl" --home "$CLIENT_HOME" init 2>/dev/null)
step "gateway $GW_ID"
step "provider $PROV_ID"
step "client $CLIENT_ID"
"$BIN/peerctl" --home "$PROV_HOME" peers add "$CLIENT_ID" --name me 2>/dev/null || true
"$BIN/peerctl" --home "$CLIENT_HOME" peers add "$PROV_ID" --name local \
    --addr "/ip4/127.0.0.1/tcp/$P2P_PORT" 2>/dev/null || true

# --- start gateway and provider ----------------------------------------------------------
# The gateway and the provider run in their own sessions (setsid): Ctrl-C in the terminal
# reaches only this script, whose trap first stops the deployment (the provider must still be
# up for that) and then the processes.
PIDS=()
cleanup() {
    set +e
    if [ -n "${DEPLOYED_ID:-}" ]; then
        "$BIN/peerctl" --home "$CLIENT_HOME" --no-mdns stop "$DEPLOYED_ID" --peer local >/dev/null 2>&1
    fi
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    rm -f "$STATE/pids"
    echo "==> stopped the gateway and the provider, removed the demo container" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "starting the gateway on https://*.$DOMAIN:$HTTPS_PORT (logs: $STATE/gateway.log)"
RUST_LOG=${RUST_LOG:-info} setsid "$BIN/peercompute-gateway" run --domain "$DOMAIN" --state-dir "$GW_STATE" \
    --https-listen "127.0.0.1:$HTTPS_PORT" --no-http --tunnel-listen "127.0.0.1:$TUNNEL_PORT" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" --public-port "$HTTPS_PORT" \
    --p2p-listen "/ip4/127.0.0.1/tcp/$GATEWAY_P2P_PORT" --p2p-listen "/ip4/127.0.0.1/udp/$GATEWAY_P2P_PORT/quic-v1" \
    --allow-provider "$PROV_ID" >"$STATE/gateway.log" 2>&1 &
PIDS+=($!); echo $! >>"$STATE/pids"

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2; shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "timed out waiting for $what (see $STATE/*.log)"
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || die "a process exited while waiting for $what (see $STATE/*.log)"; done
        sleep 0.2
    done
}
wait_for 20 "the gateway" curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz"

step "starting the provider (logs: $STATE/provider.log)"
RUST_LOG=${RUST_LOG:-info} setsid "$BIN/peercomputed" --home "$PROV_HOME" run \
    --gateway "$GW_ID@127.0.0.1:$TUNNEL_PORT" --listen "/ip4/127.0.0.1/tcp/$P2P_PORT" --no-mdns \
    >"$STATE/provider.log" 2>&1 &
PIDS+=($!); echo $! >>"$STATE/pids"
wait_for 30 "the provider" "$BIN/peerctl" --home "$CLIENT_HOME" --no-mdns --timeout 2s ls --peer local

# A deployment named demo left by an earlier run (re-adopted by the provider): stop it.
old=$("$BIN/peerctl" --home "$CLIENT_HOME" --no-mdns ls --peer local --json \
    | tr -d ' \n' | grep -o "\"id\":\"[0-9a-f]*\",\"name\":\"$NAME\"" | cut -d'"' -f4 || true)
for id in $old; do "$BIN/peerctl" --home "$CLIENT_HOME" --no-mdns stop "$id" --peer local >/dev/null 2>&1 || true; done

# --- deploy -------------------------------------------------------------------------------
step "peerctl deploy $IMAGE --peer local --port 8080 --name $NAME"
OUT=$("$BIN/peerctl" --home "$CLIENT_HOME" --no-mdns deploy "$IMAGE" --peer local --port 8080 --name "$NAME" --json)
URL=$(printf '%s' "$OUT" | grep -o '"url": *"[^"]*"' | cut -d'"' -f4)
DEPLOYED_ID=$(printf '%s' "$OUT" | grep -o '"id": *"[^"]*"' | cut -d'"' -f4)
[ -n "$URL" ] || die "deploy printed no URL: $OUT"

CA=$GW_STATE/dev-ca.pem
CURL="curl --cacert $CA $URL/"
body=$($CURL -sS) || die "the URL did not answer: $CURL"
printf '%s' "$body" | grep -q "on Peer Compute" || die "the URL answered, but not with the demo page"

cat <<EOF

  Your app is live:   $URL/   (${SECONDS} s after the start of this script)

  Fetch it:           $CURL
  In a browser:       open $URL/ — *.localhost resolves to this machine; the certificate is
                      signed by the local dev CA $CA
                      (import it in the browser's certificate settings, or accept the warning).
                      The page shows which provider served it, the headers the container saw
                      (X-Forwarded-For, Forwarded, …) and a live WebSocket counter.
  Gateway dashboard:  http://127.0.0.1:$ADMIN_PORT/ (providers, apps and their traffic, live;
                      its API is described at http://127.0.0.1:$ADMIN_PORT/api/v1/openapi.json)

  Try:                $BIN/peerctl --home $CLIENT_HOME ls --peer local
                      $BIN/peerctl --home $CLIENT_HOME logs $DEPLOYED_ID --peer local -f

EOF
if [ "$ONCE" = 1 ]; then
    echo "quickstart: the URL answered; --once given, cleaning up" >&2
    exit 0
fi
echo "Press Ctrl-C to stop everything." >&2
while true; do
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || die "a process exited unexpectedly (see $STATE/*.log)"; done
    sleep 2
done
