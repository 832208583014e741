"""The real scheduler places GPU pods on simulated nodes and leaves the rest Pending."""

from __future__ import annotations

from kubernetes import client

from support import wait_until


def test_third_gpu_replica_stays_pending_on_a_two_gpu_node(cluster, kube, namespace):
    # A node of this test's own, with 2 GPUs, that only this test's pods may use.
    node = f"gpu-2-{namespace}"[:63]
    from tierscale_localcluster.cluster import add_simulated_node

    add_simulated_node(
        cluster.config, cluster.tools, node, gpus=2,
        labels={"tierscale.io/test-node": node},
        taints=[{"key": "tierscale.io/test-node", "value": node, "effect": "NoSchedule"}],
    )
    try:
        _deploy_three_single_gpu_replicas(kube, namespace, node)

        def phases():
            pods = kube.core.list_namespaced_pod(namespace, label_selector="app=gpu-eater").items
            return sorted(p.status.phase for p in pods) if len(pods) == 3 else None

        assert wait_until(
            lambda: phases() == ["Pending", "Running", "Running"] and phases(),
            timeout_s=90, what="2 pods Running and 1 Pending",
        ) == ["Pending", "Running", "Running"]

        pending = [
            p for p in kube.core.list_namespaced_pod(namespace, label_selector="app=gpu-eater").items
            if p.status.phase == "Pending"
        ][0]
        scheduled = [c for c in pending.status.conditions if c.type == "PodScheduled"][0]
        assert scheduled.status == "False"
        assert scheduled.reason == "Unschedulable"
        assert "Insufficient nvidia.com/gpu" in scheduled.message
        running = [
            p for p in kube.core.list_namespaced_pod(namespace, label_selector="app=gpu-eater").items
            if p.status.phase == "Running"
        ]
        assert {p.spec.node_name for p in running} == {node}
    finally:
        kube.core.delete_node(node)


def _deploy_three_single_gpu_replicas(kube, namespace: str, node: str) -> None:
    container = client.V1Container(
        name="server",
        image="tierscale/placeholder:test",
        resources=client.V1ResourceRequirements(
            requests={"nvidia.com/gpu": "1"}, limits={"nvidia.com/gpu": "1"}
        ),
    )
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels={"app": "gpu-eater"}),
        spec=client.V1PodSpec(
            containers=[container],
            node_selector={"tierscale.io/test-node": node},
            tolerations=[client.V1Toleration(key="tierscale.io/test-node", operator="Equal",
                                             value=node, effect="NoSchedule")],
        ),
    )
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="gpu-eater"),
        spec=client.V1DeploymentSpec(
            replicas=3,
            selector=client.V1LabelSelector(match_labels={"app": "gpu-eater"}),
            template=template,
        ),
    )
    kube.apps.create_namespaced_deployment(namespace, deployment)
