#!/usr/bin/env bash
# Build the otel-tokenfix Collector distribution from builder-config.yaml, cached outside the repo.
#
#   bash collector-config/build.sh               build if needed; print the binary path (last stdout line)
#   bash collector-config/build.sh --print-path  print the path; exit 1 if it is not built yet
#
# Cache: ${OTEL_TOKENFIX_CACHE:-~/.cache/otel-tokenfix}/otelcol/<hash of manifest>/.
# Idempotent and safe to run concurrently (flock); never reads stdin. Needs Go and the Go module proxy.
# OTEL_TOKENFIX_NO_COLLECTOR=1 ("no collector" mode): exit 0 without building when no build is cached.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OCB_VERSION="v0.161.0"  # the same release as every module in builder-config.yaml
CACHE_ROOT="${OTEL_TOKENFIX_CACHE:-$HOME/.cache/otel-tokenfix}/otelcol"
NAME="otelcol-tokenfix"

hash_inputs() {
  {
    echo "ocb=$OCB_VERSION"
    cat "$HERE/builder-config.yaml"
  } | sha256sum | cut -c1-16
}

HASH="$(hash_inputs)"
DIST="$CACHE_ROOT/$HASH"
BIN="$DIST/$NAME"

if [[ "${1:-}" == "--print-path" ]]; then
  echo "$BIN"
  [[ -x "$BIN" ]]
  exit $?
fi

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

if [[ "${OTEL_TOKENFIX_NO_COLLECTOR:-}" == "1" ]]; then
  echo "build.sh: OTEL_TOKENFIX_NO_COLLECTOR=1: not building the Collector (its tests will skip)" >&2
  exit 0
fi

command -v go >/dev/null 2>&1 || { echo "build.sh: Go is not installed (needed to build the Collector)" >&2; exit 1; }
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.lock"
flock 9  # another build of the same cache finishes first
if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

OCB="$CACHE_ROOT/bin/ocb-$OCB_VERSION"
LOG="$CACHE_ROOT/$HASH.build.log"
: >"$LOG"
if [[ ! -x "$OCB" ]]; then
  echo "build.sh: installing OCB $OCB_VERSION" >&2
  mkdir -p "$CACHE_ROOT/bin"
  GOBIN="$CACHE_ROOT/bin/tmp.$$" go install "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION" >>"$LOG" 2>&1 \
    || { tail -n 40 "$LOG" >&2; echo "build.sh: installing OCB failed (log: $LOG)" >&2; exit 1; }
  mv "$CACHE_ROOT/bin/tmp.$$/builder" "$OCB"
  rmdir "$CACHE_ROOT/bin/tmp.$$"
fi

WORK="$CACHE_ROOT/$HASH.tmp.$$"
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
sed -e "s#^  output_path: .*#  output_path: $WORK/src#" \
    "$HERE/builder-config.yaml" >"$WORK/manifest.yaml"

echo "build.sh: building the Collector into $DIST (first build takes several minutes; log: $LOG)" >&2
if ! "$OCB" --config "$WORK/manifest.yaml" --ldflags "-s -w" >>"$LOG" 2>&1; then
  tail -n 40 "$LOG" >&2
  echo "build.sh: the Collector build failed (log: $LOG)" >&2
  exit 1
fi
mkdir -p "$WORK/dist"
mv "$WORK/src/$NAME" "$WORK/dist/$NAME"
cp "$WORK/manifest.yaml" "$WORK/dist/builder-config.yaml"
"$WORK/dist/$NAME" --version >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; echo "build.sh: built binary does not run" >&2; exit 1; }
rm -rf "$DIST"
mv "$WORK/dist" "$DIST"
echo "$BIN"
