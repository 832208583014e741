#!/usr/bin/env bash
# The kind path for users who have Docker (docs/kind.md). It creates a kind cluster with simulated
# GPU nodes, builds and loads both images, and installs Prometheus and the chart. Then it applies
# the example resource and waits until the operator reports it Ready.
#
#   hack/kind/e2e.sh            # everything; KEEP_CLUSTER=1 leaves the cluster running
#   hack/kind/e2e.sh --delete   # delete the cluster
#
# NOTE: never run on the development machines of this project (they have no Docker), so this path is
# untested. The local cluster (make cluster-up, make test) is what the test suite runs on.
#
# Needs: docker, kind (v0.20 or newer), kubectl, helm 3, and the trained tier checkpoints
# (make train-tiers) for the model-server image.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cluster=${KIND_CLUSTER:-tierscale}
gpus_per_node=${GPUS_PER_NODE:-4}
tag=${IMAGE_TAG:-0.1.0}
cache=${TIERSCALE_CACHE:-$HOME/.cache/tierscale}
context="kind-$cluster"
kubectl=(kubectl --context "$context")

if [ "${1:-}" = "--delete" ]; then
    kind delete cluster --name "$cluster"
    exit 0
fi

for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || { echo "e2e.sh: $tool not found on PATH; see docs/kind.md" >&2; exit 1; }
done
if ! ls "$cache"/checkpoints/*.pt >/dev/null 2>&1; then
    echo "e2e.sh: no checkpoints in $cache/checkpoints; run 'make train-tiers' first" >&2
    exit 1
fi

echo "== cluster $cluster"
if ! kind get clusters | grep -qx "$cluster"; then
    kind create cluster --name "$cluster" --config "$root/hack/kind/cluster.yaml" --wait 120s
fi

echo "== simulated GPUs: $gpus_per_node nvidia.com/gpu on each GPU node"
# An extended resource patched onto node status, as in the Kubernetes task "Advertise Extended
# Resources for a Node". The scheduler counts it like real GPUs; no device is behind it, and the
# model server runs on the CPU.
"${kubectl[@]}" proxy --port=0 >"${TMPDIR:-/tmp}/tierscale-kind-proxy.log" 2>&1 &
proxy_pid=$!
trap 'kill "$proxy_pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    port=$(sed -n 's/.*127.0.0.1:\([0-9]*\).*/\1/p' "${TMPDIR:-/tmp}/tierscale-kind-proxy.log")
    [ -n "$port" ] && break
    sleep 0.2
done
for node in $("${kubectl[@]}" get nodes -l tierscale.io/gpu-node=true -o name); do
    curl -fsS -H 'Content-Type: application/json-patch+json' -X PATCH \
        --data "[{\"op\": \"add\", \"path\": \"/status/capacity/nvidia.com~1gpu\", \"value\": \"$gpus_per_node\"}]" \
        "http://127.0.0.1:$port/api/v1/nodes/${node#node/}/status" >/dev/null
done

echo "== images (tag $tag)"
mkdir -p "$root/build/checkpoints"
cp "$cache"/checkpoints/*.pt "$root/build/checkpoints/"
docker build -f "$root/operator/Dockerfile" -t "tierscale/operator:$tag" "$root"
docker build -f "$root/model_server/Dockerfile" -t "tierscale/model-server:$tag" "$root"
kind load docker-image --name "$cluster" "tierscale/operator:$tag" "tierscale/model-server:$tag"

echo "== Prometheus and the chart"
"${kubectl[@]}" apply -f "$root/hack/kind/prometheus.yaml"
"${kubectl[@]}" -n tierscale-monitoring rollout status deployment/prometheus --timeout=180s
helm --kube-context "$context" upgrade --install tierscale "$root/charts/tierscale" \
    --namespace tierscale-system --create-namespace --set image.tag="$tag" --wait --timeout 180s

echo "== the example resource"
"${kubectl[@]}" apply -f "$root/manifests/examples/00-namespace.yaml"
# The example points at the local cluster's Prometheus; here it is the in-cluster Service.
sed -e 's|url: "http://127.0.0.1:16406"|url: "http://prometheus.tierscale-monitoring:9090"|' \
    "$root/manifests/examples/movielens-bert.yaml" | "${kubectl[@]}" apply -f -
"${kubectl[@]}" -n recsys wait recdeploy/movielens-bert --for=condition=Ready --timeout=600s
"${kubectl[@]}" -n recsys get recdeploy,pods -o wide

if [ "${KEEP_CLUSTER:-0}" != "1" ]; then
    helm --kube-context "$context" uninstall tierscale --namespace tierscale-system --wait
    kind delete cluster --name "$cluster"
fi
