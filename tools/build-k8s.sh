#!/usr/bin/env bash
# Build the Kubernetes test tooling (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, helm) from the Go modules pinned in tools/go.mod and
# tools/helm/go.mod, once per machine, cached.
#
#   tools/build-k8s.sh            # build if needed; last stdout line = bin dir
#   CODER_TOOLS_BIN=/some/bin tools/build-k8s.sh   # install there instead
#
# The install dir defaults to ~/.cache/coder-platform/tools/<key>/bin where <key>
# hashes the go.mod/go.sum/tools.go files, this script and the Go version, so any
# change there rebuilds, and an unchanged re-run only checks the binaries and exits.
# A .build-key stamp in the bin dir guards an explicit CODER_TOOLS_BIN the same way.
# Compilation uses the ordinary Go build and module caches (GOCACHE, GOMODCACHE),
# so a rebuild after a version bump is incremental.
#
# Knobs: TOOLS_BUILD_P (go build -p, default 2: sized for 2 cores / modest RAM).
# Progress goes to stderr; only the bin dir is printed on stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
self="$here/$(basename "${BASH_SOURCE[0]}")"
cd "$here"

log() { printf '[build-k8s] %s\n' "$*" >&2; }

# The official Go install lives here; a CI shell may not have it on PATH.
command -v go >/dev/null 2>&1 || PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null 2>&1 || { log "go not found on PATH (need Go >= 1.26)"; exit 1; }

K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
ALL_BINS=(etcd "${K8S_BINS[@]}" helm)

key="$(
  {
    cat go.mod go.sum tools.go helm/go.mod helm/go.sum helm/tools.go "$self" || echo "unreadable"
    go env GOVERSION GOOS GOARCH
  } | sha256sum | cut -c1-16
)"
[[ -r go.sum && -r helm/go.sum ]] || { log "missing tools/go.sum or tools/helm/go.sum"; exit 1; }
bin="${CODER_TOOLS_BIN:-$HOME/.cache/coder-platform/tools/$key/bin}"

up_to_date() {
  [[ -f "$bin/.build-key" && "$(cat "$bin/.build-key")" == "$key" ]] || return 1
  local b
  for b in "${ALL_BINS[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

if up_to_date; then
  log "up to date (key $key)"
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
# Serialise concurrent builders (e.g. parallel test sessions) on the same bin dir.
exec 9>"$bin/.lock"
flock 9
if up_to_date; then
  log "built by a concurrent run (key $key)"
  echo "$bin"
  exit 0
fi

start=$(date +%s)
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-p=${TOOLS_BUILD_P:-2} -buildvcs=false -mod=readonly"
log "building into $bin (key $key, $(go env GOVERSION), GOFLAGS='$GOFLAGS')"

modver() { go list -m -f '{{.Version}}' "$1"; }
modtime() { go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "$1"; }

kube_version="$(modver k8s.io/kubernetes)"                       # e.g. v1.36.3
kube_date="$(modtime k8s.io/kubernetes)"                         # release time, for buildDate
etcd_version="$(modver go.etcd.io/etcd/server/v3)"
helm_version="$(cd helm && modver helm.sh/helm/v3)"
IFS=. read -r kube_major kube_minor kube_patch <<<"${kube_version#v}"

# go.mod must replace every staging module of k8s.io/kubernetes (the list in that
# version's own go.mod) with k8s.io/<m> v0.<minor>.<patch>. Check it; on mismatch
# print the expected block (to paste into go.mod) and stop.
kube_gomod="$(go mod download -json "k8s.io/kubernetes@$kube_version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
want="$(sed -n '/^replace (/,/^)/p' "$kube_gomod" \
  | awk -v v="v0.$kube_minor.$kube_patch" '$2 == "=>" && $3 ~ /^\.\/staging\// {printf "\t%s => %s %s\n", $1, $1, v}')"
have="$(go mod edit -json | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    print("\t%s => %s %s" % (r["Old"]["Path"], r["New"]["Path"], r["New"].get("Version", "")))' | sort)"
if [[ -z "$want" || "$(sort <<<"$want")" != "$have" ]]; then
  log "tools/go.mod replace block does not match the staging modules of k8s.io/kubernetes $kube_version; expected:"
  printf 'replace (\n%s\n)\n' "$want" >&2
  exit 1
fi

tmp="$(mktemp -d "$bin/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# Same -X set as kubernetes' hack/lib/version.sh (kube::version::ldflags). The git
# commit is not available from a module zip, so gitCommit is left empty and
# buildDate is the module's release time (reproducible).
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$kube_version"
  kube_ldflags+=" -X $pkg.gitMajor=$kube_major -X $pkg.gitMinor=$kube_minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit= -X $pkg.buildDate=$kube_date"
done

t0=$(date +%s)
log "go build kubernetes $kube_version: ${K8S_BINS[*]}"
go build -trimpath -ldflags "$kube_ldflags" -o "$tmp/" \
  $(printf 'k8s.io/kubernetes/cmd/%s ' "${K8S_BINS[@]}")
log "kubernetes done in $(( $(date +%s) - t0 ))s"

t0=$(date +%s)
log "go build etcd $etcd_version"
go build -trimpath \
  -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_version" \
  -o "$tmp/etcd" go.etcd.io/etcd/server/v3
log "etcd done in $(( $(date +%s) - t0 ))s"

# Helm's own Makefile sets these; without chartutil/lint k8sVersion, `helm template`
# assumes Kubernetes v1.20. Point them at the Kubernetes version built above.
t0=$(date +%s)
log "go build helm $helm_version (separate module tools/helm)"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.metadata= -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=$kube_major -X $pkg.k8sVersionMinor=$kube_minor"
done
(cd helm && go build -trimpath -ldflags "$helm_ldflags" -o "$tmp/helm" helm.sh/helm/v3/cmd/helm)
log "helm done in $(( $(date +%s) - t0 ))s"

# Smoke-check the version stamping before installing.
"$tmp/kube-apiserver" --version >&2
"$tmp/kubectl" version --client -o yaml 2>/dev/null | grep -q "gitVersion: $kube_version" \
  || { log "kubectl does not report $kube_version"; exit 1; }
"$tmp/etcd" --version >&2
"$tmp/helm" version --short >&2

rm -f "$bin/.build-key"
for b in "${ALL_BINS[@]}"; do mv -f "$tmp/$b" "$bin/$b"; done
echo "$key" >"$bin/.build-key"
log "installed ${ALL_BINS[*]} in $(( $(date +%s) - start ))s"
echo "$bin"
