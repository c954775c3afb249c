#!/usr/bin/env bash
# Builds Peer Compute container images with no base image and no registry: fully static
# release binaries (glibc with crt-static) copied into `FROM scratch` images. Logs go to
# stderr; stdout gets only what was built (one image tag, or with --no-image one binary
# path, per line), so scripts can do `tag=$(docker/build-scratch.sh demo)`. Every call
# builds the binaries of all images (one cargo invocation, one feature set), so whichever
# call comes first warms the cache for the others.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: docker/build-scratch.sh [OPTIONS] IMAGE...

Builds static release binaries and `FROM scratch` images from them (no registry needed).

IMAGE (one or more):
  gateway    peercompute-gateway:TAG  the public HTTPS edge (state volume /var/lib/peercompute-gateway)
  provider   peercomputed:TAG         the provider daemon, with peerctl (home /var/lib/peercomputed)
  demo       peercompute-demo:TAG     the demo web app (listens on 8080)
  all        all three

Options:
  --tag TAG        image tag [default: local]
  --target TRIPLE  x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu [default: this machine's]
  --profile NAME   cargo profile: release (what ships) or quickstart (nothing optimised, quick
                   to build: the quickstart's demo image) [default: release]
  --no-image       build the static binaries only and print their paths
  -h, --help       print this help

Environment:
  PEERCOMPUTE_STATIC_TARGET_DIR  cargo target directory [default: <repo>/target/static], kept
                                 apart so the crt-static flags never invalidate target/
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER  cross linker [default: aarch64-linux-gnu-gcc]

Examples:
  docker/build-scratch.sh all
  docker/build-scratch.sh demo                     # prints peercompute-demo:local
  docker/build-scratch.sh --profile quickstart demo  # unoptimised, builds only the demo app
  docker/build-scratch.sh --tag 0.1.0 gateway provider
  docker/build-scratch.sh --target aarch64-unknown-linux-gnu --no-image gateway provider
EOF
}

die() {
    echo "build-scratch.sh: $*" >&2
    exit 1
}

# Everything runs from main, so bash has read the whole file before it starts: editing the
# script while a build runs cannot change what that run executes.
main() {
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    tag=local
    target=""
    images=()
    no_image=false
    profile=release

    while [ $# -gt 0 ]; do
        case "$1" in
            -h | --help) usage; exit 0 ;;
            --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag="$2"; shift 2 ;;
            --target) [ $# -ge 2 ] || die "--target needs a value"; target="$2"; shift 2 ;;
            --profile) [ $# -ge 2 ] || die "--profile needs a value"; profile="$2"; shift 2 ;;
            --no-image) no_image=true; shift ;;
            gateway | provider | demo) images+=("$1"); shift ;;
            all) images+=(gateway provider demo); shift ;;
            *) die "unknown argument '$1' (try --help)" ;;
        esac
    done
    [ ${#images[@]} -gt 0 ] || { usage >&2; die "name at least one image: gateway, provider, demo or all"; }
    [[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "'$tag' is not a valid image tag"

    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
    host="$(rustc -vV | sed -n 's/^host: //p')"
    target="${target:-$host}"
    case "$target" in
        x86_64-unknown-linux-gnu) platform=linux/amd64; tool_prefix="" ;;
        aarch64-unknown-linux-gnu) platform=linux/arm64; tool_prefix=aarch64-linux-gnu- ;;
        *) die "unsupported --target '$target': use x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu" ;;
    esac
    if [ "$target" = "$host" ]; then
        tool_prefix=""
    else
        if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$target"; then
            die "the Rust standard library for $target is not installed: rustup target add $target"
        fi
        if [ "$target" = aarch64-unknown-linux-gnu ]; then
            linker="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}"
            command -v "$linker" >/dev/null 2>&1 ||
                die "no cross linker '$linker' for $target: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
            export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="$linker"
            # ring's C and assembly parts need the cross C compiler too.
            export CC_aarch64_unknown_linux_gnu="${CC_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-gcc}"
        fi
    fi
    if ! $no_image; then
        command -v docker >/dev/null 2>&1 || die "docker not found: apt-get install docker.io"
        docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
            die "no Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}: start it (systemctl start docker) or set DOCKER_HOST"
    fi

    # Every image's packages, whichever images were asked for: cargo unifies features across the
    # packages of one invocation, so another selection can mean other features and shared crates
    # compiled again (minutes). With one fixed selection, one warm cache serves every call.
    packages=(-p peercompute-gateway -p peercompute-provider -p peerctl -p peercompute-demo)
    case "$profile" in
        release) profile_dir=release ;;
        # The quickstart profile serves the quickstart's demo image alone: one selection of its own.
        quickstart) profile_dir=quickstart; packages=() ;;
        *) die "unsupported --profile '$profile': use release or quickstart" ;;
    esac
    # image name -> binaries, image repository (the Dockerfile is docker/Dockerfile.scratch-NAME)
    binaries_of() {
        case "$1" in
            gateway) echo peercompute-gateway ;;
            provider) echo peercomputed peerctl ;;
            demo) echo peercompute-demo ;;
        esac
    }
    repository_of() {
        case "$1" in
            gateway) echo peercompute-gateway ;;
            provider) echo peercomputed ;;
            demo) echo peercompute-demo ;;
        esac
    }

    if [ ${#packages[@]} -eq 0 ]; then
        for image in "${images[@]}"; do
            case "$image" in
                gateway) packages+=(-p peercompute-gateway) ;;
                provider) packages+=(-p peercompute-provider -p peerctl) ;;
                demo) packages+=(-p peercompute-demo) ;;
            esac
        done
    fi
    target_dir="${PEERCOMPUTE_STATIC_TARGET_DIR:-$repo/target/static}"
    out="$target_dir/$target/$profile_dir"
    echo "building static binaries for $target (${packages[*]//-p /}, $profile profile) into $out" >&2
    started=$SECONDS
    # CARGO_ENCODED_RUSTFLAGS would take precedence over RUSTFLAGS (and silently drop crt-static).
    unset CARGO_ENCODED_RUSTFLAGS
    # Run from `cargo test` (the packaging test) or `cargo run`, we inherit the package variables
    # cargo sets for its child processes. Build scripts (ring's among them) declare
    # `rerun-if-env-changed` on some of them, and cargo compares their values in its own
    # environment: inherited, they would make every run from a test rebuild everything.
    while IFS= read -r var; do
        case "$var" in
            CARGO_PKG_* | CARGO_MANIFEST_* | CARGO_CRATE_NAME | CARGO_PRIMARY_PACKAGE | CARGO_BIN_* | \
                CARGO_TARGET_TMPDIR | CARGO_CFG_* | CARGO_FEATURE_* | OUT_DIR) unset "$var" ;;
        esac
    done < <(compgen -e)
    # --target keeps RUSTFLAGS away from build scripts and proc macros, which must stay dynamic.
    (cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --profile "$profile" --target "$target" --target-dir "$target_dir" "${packages[@]}") ||
        die "cargo build failed (see above)"
    echo "static build took $((SECONDS - started))s" >&2

    readelf="$(command -v "${tool_prefix}readelf" || command -v readelf || true)"
    for image in "${images[@]}"; do
        for bin in $(binaries_of "$image"); do
            [ -x "$out/$bin" ] || die "cargo did not produce $out/$bin"
            # A static(-pie) executable has no program interpreter (no PT_INTERP segment).
            if [ -n "$readelf" ] && "$readelf" -lW "$out/$bin" | grep -q 'Requesting program interpreter'; then
                die "$out/$bin is dynamically linked; it would not run in a FROM scratch image"
            fi
        done
    done

    if $no_image; then
        for image in "${images[@]}"; do
            for bin in $(binaries_of "$image"); do echo "$out/$bin"; done
        done
        exit 0
    fi

    context="$(mktemp -d "${TMPDIR:-/tmp}/peercompute-image.XXXXXX")"
    trap 'rm -rf "$context"' EXIT
    strip="$(command -v "${tool_prefix}strip" || true)"
    ca_bundle=/etc/ssl/certs/ca-certificates.crt
    built=()
    for image in "${images[@]}"; do
        rm -rf "${context:?}"/*
        for bin in $(binaries_of "$image"); do
            cp "$out/$bin" "$context/$bin"
            # Debug line tables make up most of the size; symbols stay for readable backtraces.
            if [ -n "$strip" ]; then "$strip" --strip-debug "$context/$bin"; fi
        done
        case "$image" in
            gateway | provider)
                if [ -r "$ca_bundle" ]; then
                    cp "$ca_bundle" "$context/ca-certificates.crt"
                else
                    echo "warning: no $ca_bundle on this machine (apt-get install ca-certificates): the image gets an empty CA bundle, so only pinned gateway peer ids and --gateway-ca work" >&2
                    : >"$context/ca-certificates.crt"
                fi
                mkdir "$context/state" "$context/home"
                ;;
        esac
        name="$(repository_of "$image"):$tag"
        echo "building image $name ($platform)" >&2
        platform_args=()
        # --no-cache: the legacy builder would reuse a cached layer of the host's platform and
        # then refuse it ("does not match the specified platform"). The steps are only COPYs.
        if [ "$target" != "$host" ]; then platform_args=(--platform "$platform" --no-cache); fi
        docker build "${platform_args[@]}" -f "$repo/docker/Dockerfile.scratch-$image" -t "$name" "$context" >&2 ||
            die "docker build of $name failed (see above)"
        built+=("$name")
    done

    for name in "${built[@]}"; do echo "$name"; done
}

main "$@"
