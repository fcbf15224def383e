#!/usr/bin/env bash
# Builds the binaries the integration tests run against (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, helm, and KServe's controller manager with its webhooks) from Go modules pinned in hack/testbins/*/go.{mod,sum}, into a cache outside the repo:
#
#   ${VSS_CACHE:-$HOME/.cache/vss}/k8s-bins/<key>/bin/
#
# <key> names every pinned version plus the Go toolchain and a hash of the wrapper modules and link
# flags, so a change to any pin builds a fresh directory and CI can cache the whole k8s-bins/ folder.
# When every binary already exists under the key, the script exits at once.
#
# Nothing is downloaded except modules through the Go module proxy (GOPROXY); GOTOOLCHAIN=local
# keeps Go from fetching another toolchain. go.sum is committed and -mod=readonly is in force, so a
# build can never silently change a pin.
#
# Output: progress and timings on stderr; the bin directory (absolute path) as the last stdout line.
# Usage: hack/build-test-binaries.sh [--print-key]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TESTBINS="${HERE}/testbins"
CACHE_ROOT="${VSS_CACHE:-${HOME}/.cache/vss}/k8s-bins"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm kserve-manager)

export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false"
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="/usr/local/go/bin:${PATH}"
fi
command -v go >/dev/null 2>&1 || { echo "build-test-binaries: 'go' not found on PATH" >&2; exit 1; }

log() { echo "build-test-binaries: $*" >&2; }

# Version of MODULE as required by GO_MOD (single-line or block require), read without running go.
pinned() {
  local gomod="$1" module="$2" v
  v="$(awk -v m="${module}" '$1 == "require" { $1 = ""; $0 = substr($0, 2) } $1 == m { print $2; exit }' "${gomod}")"
  [[ -n "${v}" ]] || { log "${module} is not required in ${gomod}"; exit 1; }
  echo "${v}"
}

K8S_VERSION="$(pinned "${TESTBINS}/kube/go.mod" k8s.io/kubernetes)"        # v1.34.4
KUBECTL_MODULE_VERSION="$(pinned "${TESTBINS}/kubectl/go.mod" k8s.io/kubectl)" # v0.34.4
ETCD_VERSION="$(pinned "${TESTBINS}/etcd/go.mod" go.etcd.io/etcd/server/v3)"   # v3.6.5
HELM_VERSION="$(pinned "${TESTBINS}/helm/go.mod" helm.sh/helm/v3)"             # v3.19.5
KSERVE_VERSION="$(pinned "${TESTBINS}/kserve/go.mod" github.com/kserve/kserve)" # v0.20.0
KUBECTL_VERSION="v1.${KUBECTL_MODULE_VERSION#v0.}"                               # k8s.io/kubectl v0.X.Y is Kubernetes v1.X.Y
GO_VERSION="$(go env GOVERSION)"

# Every staging repo that k8s.io/kubernetes requires as v0.0.0 must be replaced by the matching release.
staging_want="v0.${K8S_VERSION#v1.}"
if grep -E '^\s*k8s\.io/[a-z0-9-]+ => k8s\.io/[a-z0-9-]+ v' "${TESTBINS}/kube/go.mod" | grep -v " ${staging_want}\$" >&2; then
  log "the replace lines above in hack/testbins/kube/go.mod do not match ${K8S_VERSION} (want ${staging_want})"
  exit 1
fi

# The linker flags stamp real versions, so servers and clients report what they are.
k8s_version_flags() { # $1: vX.Y.Z
  local v="$1" major minor pkg flags=""
  major="${v#v}"; major="${major%%.*}"
  minor="${v#v*.}"; minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=${v} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
    flags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.gitCommit="
  done
  echo "${flags}"
}
helm_k8s_minor="${KUBECTL_VERSION#v1.}"; helm_k8s_minor="${helm_k8s_minor%%.*}"
LDFLAGS_KUBE="-s -w$(k8s_version_flags "${K8S_VERSION}")"
LDFLAGS_KUBECTL="-s -w$(k8s_version_flags "${KUBECTL_VERSION}")"
LDFLAGS_ETCD="-s -w"
LDFLAGS_KSERVE="-s -w"
LDFLAGS_HELM="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
LDFLAGS_HELM+=" -X helm.sh/helm/v3/internal/version.metadata= -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  LDFLAGS_HELM+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${helm_k8s_minor}"
done

inputs_hash="$(
  {
    (cd "${TESTBINS}" && find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) | LC_ALL=C sort | xargs sha256sum)
    printf '%s\n' "${LDFLAGS_KUBE}" "${LDFLAGS_KUBECTL}" "${LDFLAGS_ETCD}" "${LDFLAGS_HELM}" "${LDFLAGS_KSERVE}" "${CGO_ENABLED}"
  } | sha256sum | cut -c1-12
)"
KEY="k8s-${K8S_VERSION}_kubectl-${KUBECTL_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_kserve-${KSERVE_VERSION}_${GO_VERSION}_${inputs_hash}"
if [[ "${1:-}" == "--print-key" ]]; then
  echo "${KEY}"
  exit 0
fi

KEY_DIR="${CACHE_ROOT}/${KEY}"
BIN_DIR="${KEY_DIR}/bin"

all_present() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "${BIN_DIR}/${b}" ]] || return 1; done
}

if all_present; then
  log "cached: ${BIN_DIR}"
  echo "${BIN_DIR}"
  exit 0
fi

mkdir -p "${KEY_DIR}"
# One builder per key: a second caller waits here, then finds the binaries present.
exec 9>"${KEY_DIR}/.lock"
flock 9
if all_present; then
  log "cached (built by a concurrent run): ${BIN_DIR}"
  echo "${BIN_DIR}"
  exit 0
fi

mkdir -p "${BIN_DIR}"
STAGE="$(mktemp -d "${KEY_DIR}/stage.XXXXXX")"
trap 'rm -rf "${STAGE}"' EXIT

# Seconds each binary took in the last build on this machine (`NAME SECONDS` lines): the estimate of what a
# build has left. Outside the key: it describes the machine, not the binaries.
TIMINGS="${CACHE_ROOT}/build-seconds.txt"
BUILT=0

# The order of the builds below, for the n/N count and the estimate.
BUILD_ORDER=(etcd kubectl helm kube-apiserver kube-controller-manager kube-scheduler kserve-manager)

# Seconds the builds from the INDEX-th of BUILD_ORDER on took last time; empty when one was never timed.
seconds_left() { # INDEX
  local i sum=0 s
  for ((i = $1; i < ${#BUILD_ORDER[@]}; i++)); do
    s="$(awk -v n="${BUILD_ORDER[i]}" '$1 == n { print $2; exit }' "${TIMINGS}" 2>/dev/null || true)"
    [[ -n "${s}" ]] || return 0
    sum=$((sum + s))
  done
  echo "${sum}"
}

# build NAME MODULE_DIR LDFLAGS PACKAGE: builds into the stage dir, then renames into bin/ (atomic),
# so an interrupted build never leaves a truncated binary where the cache check would trust it.
build() {
  local name="$1" dir="$2" ldflags="$3" pkg="$4" start end left
  BUILT=$((BUILT + 1))
  local step="[${BUILT}/${#BUILD_ORDER[@]}]"
  if [[ -x "${BIN_DIR}/${name}" ]]; then
    log "${step} ${name}: already built"
    return 0
  fi
  left="$(seconds_left $((BUILT - 1)))"
  log "${step} ${name}: building ${pkg} in hack/testbins/$(basename "${dir}"), $((SECONDS - total_start))s elapsed${left:+, ~${left}s left (the last build here)}"
  start="${SECONDS}"
  (cd "${dir}" && go build -trimpath -ldflags "${ldflags}" -o "${STAGE}/${name}" "${pkg}")
  end="${SECONDS}"
  mv -f "${STAGE}/${name}" "${BIN_DIR}/${name}"
  log "${step} ${name}: built in $((end - start))s"
  { grep -v "^${name} " "${TIMINGS}" 2>/dev/null || true; echo "${name} $((end - start))"; } >"${TIMINGS}.new"
  mv -f "${TIMINGS}.new" "${TIMINGS}"
}

# Upstream commit of a pinned module, from the proxy's origin record (empty when it has none): only
# stamps `etcd --version` / `helm version`; it follows from the pinned version, so it is not in the key.
origin_commit() { # MODULE_DIR MODULE VERSION
  (cd "$1" && go mod download -json "$2@$3" 2>/dev/null || true) |
    sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]\{40\}\)".*/\1/p' | head -n 1
}
LDFLAGS_ETCD+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=$(origin_commit "${TESTBINS}/etcd" go.etcd.io/etcd/server/v3 "${ETCD_VERSION}" | cut -c1-7)"
LDFLAGS_HELM+=" -X helm.sh/helm/v3/internal/version.gitCommit=$(origin_commit "${TESTBINS}/helm" helm.sh/helm/v3 "${HELM_VERSION}")"

log "building ${#BINARIES[@]} binaries into ${BIN_DIR} (go ${GO_VERSION}, GOFLAGS='${GOFLAGS}')"
total_start="${SECONDS}"
build etcd "${TESTBINS}/etcd" "${LDFLAGS_ETCD}" .
build kubectl "${TESTBINS}/kubectl" "${LDFLAGS_KUBECTL}" .
build helm "${TESTBINS}/helm" "${LDFLAGS_HELM}" helm.sh/helm/v3/cmd/helm
build kube-apiserver "${TESTBINS}/kube" "${LDFLAGS_KUBE}" ./cmd/kube-apiserver
build kube-controller-manager "${TESTBINS}/kube" "${LDFLAGS_KUBE}" ./cmd/kube-controller-manager
build kube-scheduler "${TESTBINS}/kube" "${LDFLAGS_KUBE}" ./cmd/kube-scheduler
build kserve-manager "${TESTBINS}/kserve" "${LDFLAGS_KSERVE}" ./cmd/manager
log "all binaries built in $((SECONDS - total_start))s"

# Record what went in, for whoever inspects the cache.
{
  echo "kubernetes=${K8S_VERSION}"
  echo "kubectl=${KUBECTL_VERSION}"
  echo "etcd=${ETCD_VERSION}"
  echo "helm=${HELM_VERSION}"
  echo "kserve=${KSERVE_VERSION}"
  echo "go=${GO_VERSION}"
  echo "inputs=${inputs_hash}"
} >"${KEY_DIR}/versions.txt"

all_present || { log "missing binaries after build in ${BIN_DIR}"; exit 1; }
echo "${BIN_DIR}"
