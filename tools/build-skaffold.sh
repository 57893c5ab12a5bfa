#!/usr/bin/env bash
# Build skaffold from the Go module pinned in tools/skaffold/go.mod, once per machine, cached.
#
#   tools/build-skaffold.sh           # build if needed; last stdout line = bin dir
#   CODER_SKAFFOLD_BIN=/some/bin tools/build-skaffold.sh   # install there instead
#
# No container engine runs on these machines, so skaffold is only used to render and validate
# skaffold.yaml (`skaffold render`, `skaffold diagnose`); tests/delivery/test_skaffold.py does that.
# The bin dir defaults to ~/.cache/coder-platform/tools/skaffold-<key>/bin, <key> hashing the
# module files, this script and the Go version: any change rebuilds, an unchanged re-run only
# checks the binary. A cold build takes about 5 minutes on 2 cores (the Go caches make a rebuild
# after a version bump incremental). Progress goes to stderr; only the bin dir goes to stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
self="$here/$(basename "${BASH_SOURCE[0]}")"
cd "$here/skaffold"

log() { printf '[build-skaffold] %s\n' "$*" >&2; }

# The official Go install lives here; a CI shell may not have it on PATH.
command -v go >/dev/null 2>&1 || PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null 2>&1 || { log "go not found on PATH"; exit 1; }
[[ -r go.sum ]] || { log "missing tools/skaffold/go.sum"; exit 1; }

key="$({ cat go.mod go.sum tools.go "$self"; go env GOVERSION GOOS GOARCH; } | sha256sum | cut -c1-16)"
bin="${CODER_SKAFFOLD_BIN:-$HOME/.cache/coder-platform/tools/skaffold-$key/bin}"

up_to_date() { [[ -f "$bin/.build-key" && "$(cat "$bin/.build-key")" == "$key" && -x "$bin/skaffold" ]]; }

if up_to_date; then
  log "up to date (key $key)"
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
exec 9>"$bin/.lock"  # serialise concurrent builders on the same bin dir
flock 9
if up_to_date; then
  echo "$bin"
  exit 0
fi

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-p=${TOOLS_BUILD_P:-2} -buildvcs=false -mod=readonly"
module=github.com/GoogleContainerTools/skaffold/v2
version="$(go list -m -f '{{.Version}}' "$module")"
released="$(go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "$module")"

# A dependency's replace and exclude directives do not apply to the module requiring it, so
# go.mod carries skaffold's own; check they still match that version's go.mod.
upstream="$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
directives() { grep -E '^(replace|exclude) ' "$1" | sort; }
if [[ "$(directives "$upstream")" != "$(directives go.mod)" ]]; then
  log "tools/skaffold/go.mod replace/exclude lines differ from skaffold $version's go.mod; expected:"
  directives "$upstream" >&2
  exit 1
fi

tmp="$(mktemp -d "$bin/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
log "go build skaffold $version into $bin (key $key)"
pkg="$module/pkg/skaffold/version"
go build -trimpath -ldflags "-s -w -X $pkg.version=$version -X $pkg.buildDate=$released" \
  -o "$tmp/skaffold" "$module/cmd/skaffold"
"$tmp/skaffold" version >&2
rm -f "$bin/.build-key"
mv -f "$tmp/skaffold" "$bin/skaffold"
echo "$key" >"$bin/.build-key"
log "installed skaffold in $(( $(date +%s) - start ))s"
echo "$bin"
