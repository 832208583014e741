#!/usr/bin/env bash
# Builds the local cluster's binaries from the Go modules in hack/tools/*/go.mod:
#   kubernetes: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (one version)
#   etcd:       etcd 3.6 (Kubernetes 1.34+ expects it; Debian ships 3.4)
#   kwok:       kwok, which keeps the simulated GPU nodes Ready
#   helm:       helm v3
# Each tool set goes to $TIERSCALE_CACHE/tools/<name>-<version>-<go.mod/go.sum hash>/, so a second run
# builds nothing and a version change builds beside the old one.
#
#   hack/build-tools.sh            build what is missing
#   hack/build-tools.sh --bindir   also print "name<TAB>directory" for each tool set
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${TIERSCALE_CACHE:-$HOME/.cache/tierscale}
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0
# The sum database may be out of reach on some machines; go.sum in the repo still pins every module.
if [ "${TIERSCALE_GOSUMDB_OFF:-0}" = 1 ]; then export GONOSUMDB='*' GOSUMDB=off; fi

# name | package paths | extra ldflags
tool_sets=(
    "kubernetes|k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl"
    "etcd|go.etcd.io/etcd/server/v3"
    "kwok|sigs.k8s.io/kwok/cmd/kwok"
    "helm|helm.sh/helm/v3/cmd/helm"
)

module_version() {  # module_version DIR MODULE -> version required by DIR/go.mod
    (cd "$1" && go list -m -f '{{.Version}}' "$2")
}

ldflags_for() {  # ldflags_for NAME DIR -> version stamps the upstream Makefiles set
    local name=$1 dir=$2 v
    case $name in
    kubernetes)
        v=$(module_version "$dir" k8s.io/kubernetes)
        local major minor; major=${v#v}; major=${major%%.*}; minor=$(echo "$v" | cut -d. -f2)
        echo "-X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=$major" \
             "-X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean" \
             "-X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=$major" \
             "-X k8s.io/client-go/pkg/version.gitMinor=$minor"
        ;;
    helm)
        v=$(module_version "$dir" helm.sh/helm/v3)
        local k8s; k8s=$(module_version "$dir" k8s.io/client-go)
        echo "-X helm.sh/helm/v3/internal/version.version=$v" \
             "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(echo "$k8s" | cut -d. -f2)" \
             "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(echo "$k8s" | cut -d. -f2)"
        ;;
    etcd | kwok) ;;  # their version strings are in the source
    esac
}

version_of() {
    case $1 in
    kubernetes) module_version "$2" k8s.io/kubernetes ;;
    etcd) module_version "$2" go.etcd.io/etcd/server/v3 ;;
    kwok) module_version "$2" sigs.k8s.io/kwok ;;
    helm) module_version "$2" helm.sh/helm/v3 ;;
    esac
}

# One build at a time: a second caller waits, then finds the tools built.
mkdir -p "$cache/tools"
exec 9>"$cache/tools/.lock"
flock 9

print_dirs=0
[ "${1:-}" = --bindir ] && print_dirs=1

for entry in "${tool_sets[@]}"; do
    name=${entry%%|*}
    packages=${entry#*|}
    dir=$root/hack/tools/$name
    version=$(version_of "$name" "$dir")
    hash=$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -c1-12)
    out=$cache/tools/$name-$version-$hash

    if [ ! -e "$out/.complete" ]; then
        echo "building $name $version into $out (first time only; the Kubernetes set takes tens of minutes on 2 cores)" >&2
        start=$(date +%s)
        rm -rf "$out.partial" && mkdir -p "$out.partial"
        # shellcheck disable=SC2086
        (cd "$dir" && go build -trimpath -tags selinux,notest,grpcnotrace \
            -ldflags "-s -w $(ldflags_for "$name" "$dir")" -o "$out.partial/" $packages)
        if [ "$name" = etcd ]; then mv "$out.partial/server" "$out.partial/etcd"; fi
        touch "$out.partial/.complete"
        rm -rf "$out" && mv "$out.partial" "$out"
        echo "built $name $version in $(( $(date +%s) - start )) s" >&2
    fi
    if [ $print_dirs = 1 ]; then printf '%s\t%s\n' "$name" "$out"; fi
done
