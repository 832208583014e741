"""A local stand-in for the kubelet: runs opted-in pods on the simulated nodes as local processes.

A pod opts in with the label ``tierscale.io/local-run`` (value ``"true"``). Once the scheduler has
bound it to a simulated (kwok) node, each of its containers is started as a process on this machine:

- ``command`` + ``args`` are run as given, with Kubernetes' ``$(VAR)`` expansion from the container's
  environment; a leading ``python``/``python3`` is replaced by this interpreter, so the pod sees the
  project's virtual environment. The image is not used.
- The environment is this process's own, plus the container's ``env`` (literal values, and
  ``fieldRef`` to ``metadata.name``, ``metadata.namespace``, ``metadata.uid``, ``spec.nodeName``,
  ``status.podIP`` and ``status.hostIP``, which are both 127.0.0.1 here).
- Each ``containerPort`` gets a free loopback port. The container port number is replaced by the
  local one wherever it is a whole env value or a whole argument, or ends an argument after ``=``
  or ``:`` (``--port=8080``, ``0.0.0.0:8080``); ``0.0.0.0`` is replaced by ``127.0.0.1`` the same
  way. The mapping is written to the pod's annotations ``tierscale.io/local-address`` (first port)
  and ``tierscale.io/local-ports`` (JSON, by port name or number).
- Readiness probes (``httpGet``, ``tcpSocket``, ``exec``) run against the local port with the pod's
  timings; without a probe a running process is ready. A process that exits is reported as
  terminated and the pod as not ready; it is restarted per ``restartPolicy`` with the kubelet's
  doubling back-off (10 s, then 20 s, ..., at most 300 s; ``TIERSCALE_RESTART_BACKOFF_S`` sets the
  first step).
- Each pod with a port becomes a Prometheus scrape target (file-based discovery) labelled with its
  namespace, pod, node and its labels, unless annotated ``prometheus.io/scrape: "false"``;
  ``prometheus.io/port`` and ``prometheus.io/path`` choose the port (container port number) and path.
- When the pod is deleted its processes get SIGTERM, then SIGKILL after the grace period (at most
  30 s), the target file is removed, and the pod object is deleted, as the kubelet does.

Not supported, and reported as an Event on the pod when used: volumes other than ``emptyDir``,
``projected``/``configMap`` mounts (ignored), init containers, ``envFrom``, and liveness probes
(ignored). Resource limits are not enforced.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client, config as kube_config, watch
from kubernetes.client.rest import ApiException

from .config import (
    LOCAL_ADDRESS_ANNOTATION,
    LOCAL_PORTS_ANNOTATION,
    LOCAL_RUN_LABEL,
    SIMULATED_NODE_ANNOTATION,
    ClusterConfig,
)

log = logging.getLogger("tierscale.podrunner")

TICK_S = 0.5
MAX_BACKOFF_S = 300.0
MAX_GRACE_S = 30.0
LOOPBACK = "127.0.0.1"
_VAR_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")
_PROMETHEUS_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_RESERVED_TARGET_LABELS = {"namespace", "pod", "node", "job", "instance"}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def expand_references(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known variables are replaced, ``$$`` escapes ``$``."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REFERENCE.sub(replace, value)


def substitute_port(value: str, port_map: dict[int, int]) -> str:
    """Rewrites a container port (and 0.0.0.0) in one env value or argument; see the module doc."""
    if value == "0.0.0.0":
        return LOOPBACK
    for container_port, local_port in port_map.items():
        text = str(container_port)
        if value == text:
            return str(local_port)
        for separator in ("=", ":"):
            if value.endswith(separator + text):
                prefix = value[: -len(text)]
                if prefix.endswith("0.0.0.0:"):
                    prefix = prefix[: -len("0.0.0.0:")] + LOOPBACK + ":"
                return prefix + str(local_port)
    return value


def prometheus_labels(pod: dict) -> dict[str, str]:
    """Target labels: namespace, pod, node and the pod's labels with names made Prometheus-safe."""
    metadata = pod["metadata"]
    labels = {
        "namespace": metadata["namespace"],
        "pod": metadata["name"],
        "node": pod["spec"].get("nodeName", ""),
    }
    for key, value in (metadata.get("labels") or {}).items():
        name = _PROMETHEUS_LABEL.sub("_", key)
        if name in _RESERVED_TARGET_LABELS or name[0].isdigit():
            continue
        labels[name] = value
    return labels


@dataclass
class Probe:
    """The readiness probe of one container, with its counters."""

    spec: dict
    port_map: dict[int, int]
    named_ports: dict[str, int]
    started_at: float
    last_run: float = 0.0
    successes: int = 0
    failures: int = 0
    ready: bool = False

    def due(self, now: float) -> bool:
        if now - self.started_at < self.spec.get("initialDelaySeconds", 0):
            return False
        return now - self.last_run >= self.spec.get("periodSeconds", 10)

    def run(self, now: float, env: dict[str, str]) -> None:
        self.last_run = now
        if self._succeeds(env):
            self.successes += 1
            self.failures = 0
            if self.successes >= self.spec.get("successThreshold", 1):
                self.ready = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= self.spec.get("failureThreshold", 3):
                self.ready = False

    def _local_port(self, port) -> int:
        if isinstance(port, str) and not port.isdigit():
            return self.port_map[self.named_ports[port]]
        return self.port_map.get(int(port), int(port))

    def _succeeds(self, env: dict[str, str]) -> bool:
        timeout_s = self.spec.get("timeoutSeconds", 1)
        try:
            if "httpGet" in self.spec:
                action = self.spec["httpGet"]
                url = f"http://{LOOPBACK}:{self._local_port(action['port'])}{action.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=timeout_s) as response:
                    return 200 <= response.status < 400
            if "tcpSocket" in self.spec:
                port = self._local_port(self.spec["tcpSocket"]["port"])
                with socket.create_connection((LOOPBACK, port), timeout=timeout_s):
                    return True
            if "exec" in self.spec:
                result = subprocess.run(
                    self.spec["exec"]["command"], env=env, timeout=timeout_s,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                return result.returncode == 0
        except (urllib.error.URLError, OSError, subprocess.TimeoutExpired, KeyError, ValueError):
            return False
        return True


@dataclass
class Container:
    """One container of a pod, run as one local process."""

    name: str
    image: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    pid_path: Path
    readiness: Probe | None
    process: subprocess.Popen | None = None
    started_at: str | None = None
    restart_count: int = 0
    last_termination: dict | None = None
    next_start: float = 0.0
    backoff_s: float = 0.0
    terminated: dict | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_path.write_text(str(self.process.pid))
        self.started_at = _now()
        self.terminated = None
        if self.readiness is not None:
            self.readiness.started_at = time.monotonic()
            self.readiness.last_run = 0.0
            self.readiness.successes = self.readiness.failures = 0
            self.readiness.ready = False
        log.info("started %s (pid %d): %s", self.log_path.parent.name, self.process.pid,
                 shlex.join(self.argv))

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        if not self.alive():
            return False
        return self.readiness.ready if self.readiness is not None else True

    def stop(self, grace_s: float) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        # Whatever the main process left in its group goes too.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.pid_path.unlink(missing_ok=True)

    def status(self) -> dict:
        status = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready(),
            "restartCount": self.restart_count,
            "started": self.alive(),
        }
        if self.alive():
            status["state"] = {"running": {"startedAt": self.started_at}}
        elif self.terminated is not None and self.next_start > 0:
            status["state"] = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {self.backoff_s:g}s restarting failed container",
                }
            }
        elif self.terminated is not None:
            status["state"] = {"terminated": self.terminated}
        else:
            status["state"] = {"waiting": {"reason": "ContainerCreating"}}
        if self.last_termination is not None:
            status["lastState"] = {"terminated": self.last_termination}
        return status


@dataclass
class LocalPod:
    """The processes and scrape target of one opted-in pod."""

    namespace: str
    name: str
    uid: str
    node: str
    restart_policy: str
    containers: list[Container]
    target_path: Path | None
    annotations: dict[str, str]
    phase: str = "Pending"
    deleting_since: float | None = None
    last_status: dict | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class PodRunner:
    """Watches opted-in pods and keeps their processes in line with them."""

    def __init__(self, cluster: ClusterConfig, api: client.CoreV1Api):
        self.cluster = cluster
        self.api = api
        self.pods: dict[str, LocalPod] = {}  # by uid
        self.failed: set[str] = set()  # uids of pods whose spec cannot run locally
        self.seen: dict[str, dict] = {}  # uid -> the latest pod object from the watch
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.first_backoff_s = float(os.environ.get("TIERSCALE_RESTART_BACKOFF_S", "10"))
        self.simulated_nodes: set[str] = set()

    # --- watch ------------------------------------------------------------------------------

    def watch_pods(self) -> None:
        """Keeps ``self.seen`` equal to the set of opted-in pods, re-listing after any error."""
        while not self.stopping.is_set():
            try:
                listing = self.api.list_pod_for_all_namespaces(label_selector=LOCAL_RUN_LABEL)
                with self.lock:
                    self.seen = {
                        p.metadata.uid: self.api.api_client.sanitize_for_serialization(p)
                        for p in listing.items
                    }
                stream = watch.Watch().stream(
                    self.api.list_pod_for_all_namespaces,
                    label_selector=LOCAL_RUN_LABEL,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=60,
                )
                for event in stream:
                    if self.stopping.is_set():
                        return
                    pod = self.api.api_client.sanitize_for_serialization(event["object"])
                    with self.lock:
                        if event["type"] == "DELETED":
                            self.seen.pop(pod["metadata"]["uid"], None)
                        else:
                            self.seen[pod["metadata"]["uid"]] = pod
            except (ApiException, OSError, ValueError) as error:
                if not self.stopping.is_set():
                    log.warning("pod watch failed (%s); listing again in 1 s", error)
                    time.sleep(1)

    def refresh_nodes(self) -> None:
        nodes = self.api.list_node().items
        self.simulated_nodes = {
            n.metadata.name
            for n in nodes
            if (n.metadata.annotations or {}).get(SIMULATED_NODE_ANNOTATION) == "fake"
        }

    # --- reconcile --------------------------------------------------------------------------

    def tick(self) -> None:
        with self.lock:
            seen = dict(self.seen)
        for uid, pod in seen.items():
            node = pod["spec"].get("nodeName")
            if not node:
                continue
            if node not in self.simulated_nodes:
                self.refresh_nodes()
                if node not in self.simulated_nodes:
                    continue
            local = self.pods.get(uid)
            if local is None and uid not in self.failed and pod["metadata"].get("deletionTimestamp") is None:
                local = self._admit(pod)
            if local is None:
                if pod["metadata"].get("deletionTimestamp") is not None:
                    self._delete_pod_object(pod["metadata"]["namespace"], pod["metadata"]["name"], uid)
                continue
            if pod["metadata"].get("deletionTimestamp") is not None:
                self._terminate(local, pod)
            else:
                self._supervise(local)
                self._report(local)
        self.failed &= set(seen)
        for uid in list(self.pods):
            if uid not in seen:
                # Deleted without a grace period (or by someone else): stop what is left.
                local = self.pods.pop(uid)
                self._stop_processes(local, grace_s=0)

    def _admit(self, pod: dict) -> LocalPod | None:
        metadata, spec = pod["metadata"], pod["spec"]
        pod_dir = self.cluster.pods_dir / metadata["namespace"] / metadata["name"]
        pod_dir.mkdir(parents=True, exist_ok=True)
        try:
            containers, ports = self._containers(pod, pod_dir)
        except ValueError as error:
            self._event(pod, "Failed", "LocalRunFailed", str(error))
            self._patch_status(pod, {"phase": "Failed", "reason": "LocalRunFailed", "message": str(error)})
            self.failed.add(metadata["uid"])
            return None
        for unsupported in self._unsupported(spec):
            self._event(pod, "Warning", "LocalRunUnsupported", unsupported)

        annotations = {LOCAL_PORTS_ANNOTATION: json.dumps(ports, sort_keys=True)}
        if ports:
            annotations[LOCAL_ADDRESS_ANNOTATION] = f"{LOOPBACK}:{next(iter(ports.values()))}"
        self._patch_annotations(pod, annotations)

        local = LocalPod(
            namespace=metadata["namespace"],
            name=metadata["name"],
            uid=metadata["uid"],
            node=spec["nodeName"],
            restart_policy=spec.get("restartPolicy", "Always"),
            containers=containers,
            target_path=self._write_target(pod, ports),
            annotations=annotations,
        )
        for container in containers:
            container.start()
        local.phase = "Running"
        self.pods[local.uid] = local
        log.info("pod %s runs on %s with ports %s", local.key, local.node, ports)
        return local

    def _containers(self, pod: dict, pod_dir: Path) -> tuple[list[Container], dict[str, int]]:
        metadata, spec = pod["metadata"], pod["spec"]
        field_values = {
            "metadata.name": metadata["name"],
            "metadata.namespace": metadata["namespace"],
            "metadata.uid": metadata["uid"],
            "spec.nodeName": spec["nodeName"],
            "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
            "status.podIP": LOOPBACK,
            "status.hostIP": LOOPBACK,
        }
        containers, ports = [], {}
        for c in spec["containers"]:
            argv = list(c.get("command") or []) + list(c.get("args") or [])
            if not argv:
                raise ValueError(
                    f"container {c['name']!r} has no command: the local runner cannot use the "
                    f"image's entrypoint ({c.get('image')!r}); set spec.containers[].command"
                )
            port_map, named = {}, {}
            for p in c.get("ports") or []:
                local_port = free_loopback_port()
                port_map[p["containerPort"]] = local_port
                if p.get("name"):
                    named[p["name"]] = p["containerPort"]
                ports[p.get("name") or str(p["containerPort"])] = local_port

            env = dict(os.environ)
            container_env: dict[str, str] = {}
            for item in c.get("env") or []:
                if "valueFrom" in item:
                    ref = (item["valueFrom"] or {}).get("fieldRef")
                    if not ref or ref.get("fieldPath") not in field_values:
                        raise ValueError(
                            f"container {c['name']!r} env {item['name']!r}: only fieldRef to "
                            f"{sorted(field_values)} is supported locally, got {item['valueFrom']}"
                        )
                    value = field_values[ref["fieldPath"]]
                else:
                    value = expand_references(item.get("value", ""), container_env)
                container_env[item["name"]] = substitute_port(value, port_map)
            env.update(container_env)

            argv = [substitute_port(expand_references(a, container_env), port_map) for a in argv]
            if argv[0] in ("python", "python3"):
                argv[0] = sys.executable
            probe = None
            if c.get("readinessProbe"):
                probe = Probe(c["readinessProbe"], port_map, named, started_at=time.monotonic())
            containers.append(
                Container(
                    name=c["name"],
                    image=c.get("image", ""),
                    argv=argv,
                    env=env,
                    log_path=pod_dir / f"{c['name']}.log",
                    pid_path=pod_dir / f"{c['name']}.pid",
                    readiness=probe,
                )
            )
        return containers, ports

    @staticmethod
    def _unsupported(spec: dict) -> list[str]:
        found = []
        if spec.get("initContainers"):
            found.append("init containers are not run by the local runner")
        for c in spec["containers"]:
            if c.get("envFrom"):
                found.append(f"container {c['name']!r}: envFrom is ignored by the local runner")
            if c.get("livenessProbe"):
                found.append(f"container {c['name']!r}: livenessProbe is ignored by the local runner")
        return found

    def _supervise(self, local: LocalPod) -> None:
        now = time.monotonic()
        for container in local.containers:
            if container.alive():
                if container.readiness is not None and container.readiness.due(now):
                    container.readiness.run(now, container.env)
                continue
            if container.process is not None and container.terminated is None:
                code = container.process.returncode
                container.terminated = {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": container.started_at,
                    "finishedAt": _now(),
                }
                container.pid_path.unlink(missing_ok=True)
                log.info("pod %s container %s exited with %s", local.key, container.name, code)
                restart = local.restart_policy == "Always" or (
                    local.restart_policy == "OnFailure" and code != 0
                )
                if restart:
                    container.backoff_s = min(
                        MAX_BACKOFF_S,
                        container.backoff_s * 2 if container.backoff_s else self.first_backoff_s,
                    )
                    container.next_start = now + container.backoff_s
                else:
                    container.next_start = 0.0
            if container.next_start and now >= container.next_start:
                container.last_termination = container.terminated
                container.restart_count += 1
                container.next_start = 0.0
                container.start()

        if all(c.terminated is not None and not c.next_start and not c.alive() for c in local.containers):
            failed = any(c.terminated["exitCode"] != 0 for c in local.containers)
            local.phase = "Failed" if failed else "Succeeded"

    def _report(self, local: LocalPod) -> None:
        ready = all(c.ready() for c in local.containers)
        statuses = [c.status() for c in local.containers]
        not_ready = [c.name for c in local.containers if not c.ready()]
        condition_status = "True" if ready else "False"
        key = (local.phase, condition_status, json.dumps(
            [{k: v for k, v in s.items() if k != "state"} | {"state": list(s["state"])} for s in statuses],
            sort_keys=True,
        ))
        if local.last_status == key:
            return
        now = _now()
        message = "" if ready else f"containers with unready status: [{' '.join(not_ready)}]"
        reason = "" if ready else "ContainersNotReady"
        status = {
            "phase": local.phase,
            "hostIP": LOOPBACK,
            "hostIPs": [{"ip": LOOPBACK}],
            "startTime": now if local.last_status is None else None,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": condition_status, "reason": reason,
                 "message": message, "lastTransitionTime": now},
                {"type": "Ready", "status": condition_status, "reason": reason,
                 "message": message, "lastTransitionTime": now},
            ],
            "containerStatuses": statuses,
        }
        if status["startTime"] is None:
            del status["startTime"]
        if self._patch_status({"metadata": {"namespace": local.namespace, "name": local.name}}, status):
            local.last_status = key

    def _terminate(self, local: LocalPod | None, pod: dict) -> None:
        grace_s = min(MAX_GRACE_S, float(pod["metadata"].get("deletionGracePeriodSeconds") or 0))
        if local is not None:
            self._stop_processes(local, grace_s)
            self.pods.pop(local.uid, None)
        self._delete_pod_object(pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"])

    def _stop_processes(self, local: LocalPod, grace_s: float) -> None:
        for container in local.containers:
            container.stop(grace_s)
        if local.target_path is not None:
            local.target_path.unlink(missing_ok=True)
        log.info("pod %s stopped", local.key)

    # --- API writes -------------------------------------------------------------------------

    def _patch_status(self, pod: dict, status: dict) -> bool:
        metadata = pod["metadata"]
        try:
            self.api.patch_namespaced_pod_status(
                metadata["name"], metadata["namespace"], {"status": status}
            )
            return True
        except ApiException as error:
            if error.status != 404:
                log.warning("status of pod %s/%s not written: %s", metadata["namespace"],
                            metadata["name"], error.reason)
            return False

    def _patch_annotations(self, pod: dict, annotations: dict[str, str]) -> None:
        metadata = pod["metadata"]
        try:
            self.api.patch_namespaced_pod(
                metadata["name"], metadata["namespace"], {"metadata": {"annotations": annotations}}
            )
        except ApiException as error:
            log.warning("annotations of pod %s/%s not written: %s", metadata["namespace"],
                        metadata["name"], error.reason)

    def _delete_pod_object(self, namespace: str, name: str, uid: str) -> None:
        try:
            self.api.delete_namespaced_pod(
                name, namespace,
                body=client.V1DeleteOptions(grace_period_seconds=0, preconditions={"uid": uid}),
            )
        except ApiException as error:
            if error.status not in (404, 409):
                log.warning("pod %s/%s not deleted: %s", namespace, name, error.reason)

    def _event(self, pod: dict, event_type: str, reason: str, message: str) -> None:
        metadata = pod["metadata"]
        log.warning("pod %s/%s: %s", metadata["namespace"], metadata["name"], message)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{metadata['name']}.", namespace=metadata["namespace"]),
            involved_object=client.V1ObjectReference(
                kind="Pod", namespace=metadata["namespace"], name=metadata["name"], uid=metadata["uid"],
                api_version="v1",
            ),
            reason=reason,
            message=message,
            type="Warning" if event_type != "Normal" else "Normal",
            source=client.V1EventSource(component="tierscale-podrunner", host=pod["spec"].get("nodeName")),
            first_timestamp=datetime.datetime.now(datetime.timezone.utc),
            last_timestamp=datetime.datetime.now(datetime.timezone.utc),
            count=1,
        )
        try:
            self.api.create_namespaced_event(metadata["namespace"], body)
        except ApiException as error:
            log.warning("event for pod %s/%s not written: %s", metadata["namespace"], metadata["name"], error.reason)

    def _write_target(self, pod: dict, ports: dict[str, int]) -> Path | None:
        annotations = pod["metadata"].get("annotations") or {}
        if not ports or annotations.get("prometheus.io/scrape") == "false":
            return None
        port = next(iter(ports.values()))
        wanted = annotations.get("prometheus.io/port")
        if wanted is not None:
            by_number = {}
            for c in pod["spec"]["containers"]:
                for p in c.get("ports") or []:
                    by_number[str(p["containerPort"])] = ports[p.get("name") or str(p["containerPort"])]
            port = by_number.get(wanted, ports.get(wanted, port))
        labels = prometheus_labels(pod)
        labels["__metrics_path__"] = annotations.get("prometheus.io/path", "/metrics")
        metadata = pod["metadata"]
        path = self.cluster.targets_dir / f"pod-{metadata['namespace']}-{metadata['name']}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps([{"targets": [f"{LOOPBACK}:{port}"], "labels": labels}]))
        temporary.rename(path)
        return path

    # --- lifecycle --------------------------------------------------------------------------

    def run(self) -> None:
        self.refresh_nodes()
        watcher = threading.Thread(target=self.watch_pods, name="pod-watch", daemon=True)
        watcher.start()
        (self.cluster.run_dir / "podrunner.ready").touch()
        while not self.stopping.is_set():
            try:
                self.tick()
            except (ApiException, OSError) as error:
                log.warning("reconcile failed (%s); trying again", error)
            self.stopping.wait(TICK_S)
        for local in list(self.pods.values()):
            self._stop_processes(local, grace_s=5)
        (self.cluster.run_dir / "podrunner.ready").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, help="the local cluster's state directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    cluster = ClusterConfig(state_dir=args.state_dir) if args.state_dir else ClusterConfig()
    kube_config.load_kube_config(config_file=str(cluster.kubeconfig))
    runner = PodRunner(cluster, client.CoreV1Api())
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: runner.stopping.set())
    runner.run()


if __name__ == "__main__":
    main()
