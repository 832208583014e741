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
- ``resources.limits.cpu`` is enforced as the kubelet enforces it, with a CFS quota of the limit
  × 100 ms in each 100 ms period (``CFS_PERIOD_US``). The container's process gets its own cgroup,
  ``tierscale-podrunner/<namespace>_<pod>_<container>`` under the cpu controller (cgroup v2
  ``cpu.max``, or v1's ``cpu.cfs_quota_us``), and is held before it execs its command until it is
  in that cgroup. Its children inherit the cgroup. The cgroup is removed when the process exits
  or the pod is deleted (killing any process still in it), and made again on a restart. Where
  cgroups are missing or not writable the process runs without a limit, and a Warning Event
  ``CPULimitNotEnforced`` on the pod says why.

Not supported, and reported as an Event on the pod when used: volumes other than ``emptyDir``,
``projected``/``configMap`` mounts (ignored), init containers, ``envFrom``, and liveness probes
(ignored). Resource requests and limits other than ``limits.cpu`` are not enforced.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import json
import logging
import math
import os
import re
import shlex
import shutil
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
from kubernetes.utils.quantity import parse_quantity

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

# The CFS period of every CPU quota: 100 ms, the kubelet's default (its --cpu-cfs-quota-period).
# A limit of L cores gets a quota of L × CFS_PERIOD_US of CPU time in each period.
CFS_PERIOD_US = 100_000
# The kubelet's smallest quota (1 ms per period), so that a tiny limit still lets a process run.
MIN_CFS_QUOTA_US = 1_000
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The folder under the cpu hierarchy that contains one cgroup per limited container.
CGROUP_PARENT = "tierscale-podrunner"
CGROUP_REMOVE_TIMEOUT_S = 2.0
# Shell script that keeps a started process waiting until the runner has written its pid to the
# cgroup. The shell blocks reading stdin, a pipe that the runner closes afterwards, then execs the
# container's command with stdin at /dev/null and the same pid. A preexec_fn could do the same,
# but Python documents it as unsafe in a program with threads, as this one has. Writing the pid
# after a plain start would let the process run briefly without its limit.
_CGROUP_GATE_SCRIPT = 'read -r _; exec "$@" </dev/null'


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


def cfs_quota_us(cpu_limit: str) -> int | None:
    """Convert a CPU limit ("250m", "0.5", "2") to a CFS quota per ``CFS_PERIOD_US``, as the kubelet does.

    The limit is rounded up to whole millicores. A zero limit returns None (no quota).
    Raises ValueError for a value that is not a Kubernetes quantity.
    """
    millicores = math.ceil(parse_quantity(cpu_limit) * 1000)
    if millicores <= 0:
        return None
    return max(MIN_CFS_QUOTA_US, millicores * CFS_PERIOD_US // 1000)


class CgroupError(Exception):
    """Failure to find, create or join a CPU cgroup. The message names the path and the OS error."""


@dataclass(frozen=True)
class CpuCgroups:
    """Per-container cgroups of the cpu controller, under ``CGROUP_PARENT``.

    ``root`` is where the cgroup file systems are mounted. cgroup v2 is used when
    ``root/cgroup.controllers`` lists ``cpu``, otherwise cgroup v1's cpu controller at ``root/cpu``.
    """

    root: Path = CGROUP_ROOT

    def hierarchy(self) -> tuple[Path, int]:
        """Return the cpu controller's hierarchy and cgroup version, or raise CgroupError if there is none."""
        controllers = self.root / "cgroup.controllers"
        try:
            if "cpu" in controllers.read_text().split():
                return self.root, 2
        except OSError:
            pass
        v1_quota = self.root / "cpu" / "cpu.cfs_quota_us"
        if v1_quota.is_file():
            return v1_quota.parent, 1
        raise CgroupError(f"no cpu controller: {controllers} does not list cpu and {v1_quota} does not exist")

    def create(self, name: str, quota_us: int) -> Path:
        """Create (or reuse) the cgroup ``name`` with a CPU quota of ``quota_us`` per ``CFS_PERIOD_US``."""
        hierarchy, version = self.hierarchy()
        parent = hierarchy / CGROUP_PARENT
        cgroup = parent / name
        try:
            parent.mkdir(exist_ok=True)
            if version == 2:
                # In cgroup v2 a controller acts in a cgroup only if every ancestor enables it for
                # its children.
                _enable_cpu_controller(hierarchy)
                _enable_cpu_controller(parent)
            cgroup.mkdir(exist_ok=True)
            if version == 2:
                (cgroup / "cpu.max").write_text(f"{quota_us} {CFS_PERIOD_US}")
            else:
                (cgroup / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
                (cgroup / "cpu.cfs_quota_us").write_text(str(quota_us))
        except OSError as error:
            try:
                cgroup.rmdir()
            except OSError:
                pass
            raise CgroupError(f"failed to create the cgroup {cgroup}: {error}") from error
        return cgroup

    @staticmethod
    def add_process(cgroup: Path, pid: int) -> None:
        try:
            (cgroup / "cgroup.procs").write_text(str(pid))
        except OSError as error:
            raise CgroupError(f"failed to move process {pid} into the cgroup {cgroup}: {error}") from error

    @staticmethod
    def remove(cgroup: Path, timeout_s: float = CGROUP_REMOVE_TIMEOUT_S) -> bool:
        """Remove ``cgroup`` and return True, or log why and return False if it remains after ``timeout_s``.

        While the cgroup is busy, the processes still in it (descendants of an exited or stopped
        container) get SIGKILL, as a container runtime kills what a container leaves behind.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                cgroup.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError as error:
                if error.errno != errno.EBUSY or time.monotonic() >= deadline:
                    log.warning(
                        "failed to remove cgroup %s: %s. Remove it with rmdir once its processes exit",
                        cgroup, error,
                    )
                    return False
            try:
                leftovers = [int(pid) for pid in (cgroup / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                leftovers = []
            for pid in leftovers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def remove_parent(self) -> None:
        """Remove the ``CGROUP_PARENT`` folder if it is empty; leave it otherwise."""
        try:
            hierarchy, _ = self.hierarchy()
            (hierarchy / CGROUP_PARENT).rmdir()
        except (CgroupError, OSError) as error:
            log.debug("cgroup folder %s kept: %s", CGROUP_PARENT, error)


def _enable_cpu_controller(cgroup: Path) -> None:
    subtree_control = cgroup / "cgroup.subtree_control"
    if "cpu" not in subtree_control.read_text().split():
        subtree_control.write_text("+cpu")


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
    cpu_limit: str | None = None  # resources.limits.cpu as written in the pod
    cpu_quota_us: int | None = None  # CPU time per CFS_PERIOD_US, or None for no quota
    cgroup_name: str = ""
    cgroups: CpuCgroups = field(default_factory=CpuCgroups)
    cgroup: Path | None = None  # the cgroup of the running process, if it has one
    cpu_limit_error: str | None = None  # why the last start runs without its CPU limit

    def start(self) -> None:
        """Start the process, in its own CPU cgroup when it has a quota and cgroups are writable.

        When the cgroup cannot be set up the process runs without a limit, and
        ``cpu_limit_error`` stores the reason for the caller to report.
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.cgroup, self.cpu_limit_error = None, None
        if self.cpu_quota_us is not None:
            try:
                self.cgroup = self.cgroups.create(self.cgroup_name, self.cpu_quota_us)
            except CgroupError as error:
                self.cpu_limit_error = str(error)

        if self.cgroup is None:
            self.process = self._spawn(self.argv, stdin=subprocess.DEVNULL)
        else:
            try:
                self.process = self._spawn_in_cgroup()
            except OSError:
                self.release_cgroup()
                raise
        self.pid_path.write_text(str(self.process.pid))
        self.started_at = _now()
        self.terminated = None
        if self.readiness is not None:
            self.readiness.started_at = time.monotonic()
            self.readiness.last_run = 0.0
            self.readiness.successes = self.readiness.failures = 0
            self.readiness.ready = False
        log.info("started %s (pid %d%s): %s", self.log_path.parent.name, self.process.pid,
                 f", cgroup {self.cgroup}" if self.cgroup is not None else "", shlex.join(self.argv))

    def _spawn(self, argv: list[str], stdin) -> subprocess.Popen:
        with open(self.log_path, "ab") as log_file:
            return subprocess.Popen(
                argv,
                env=self.env,
                stdin=stdin,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _spawn_in_cgroup(self) -> subprocess.Popen:
        """Start the process held by ``_CGROUP_GATE_SCRIPT``, move it into ``self.cgroup``, release it."""
        # Resolved here so that a missing command raises FileNotFoundError as a plain Popen does.
        executable = shutil.which(self.argv[0], path=self.env.get("PATH", os.defpath))
        if executable is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.argv[0])

        gate_read, gate_write = os.pipe()
        try:
            try:
                process = self._spawn(
                    ["/bin/sh", "-c", _CGROUP_GATE_SCRIPT, "sh", executable, *self.argv[1:]],
                    stdin=gate_read,
                )
            finally:
                os.close(gate_read)
            try:
                self.cgroups.add_process(self.cgroup, process.pid)
            except CgroupError as error:
                self.cpu_limit_error = str(error)
                self.release_cgroup()
        finally:
            os.close(gate_write)  # end of file on the shell's stdin: it execs the command
        return process

    def release_cgroup(self) -> None:
        if self.cgroup is not None:
            self.cgroups.remove(self.cgroup)
            self.cgroup = None

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
        self.release_cgroup()
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
    cpu_limit_warned: set[str] = field(default_factory=set)  # containers with a CPULimitNotEnforced Event

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def object_reference(self) -> dict:
        """Return the pod fields that ``PodRunner._event`` reads, for a pod known only by this record."""
        return {
            "metadata": {"namespace": self.namespace, "name": self.name, "uid": self.uid},
            "spec": {"nodeName": self.node},
        }


class PodRunner:
    """Watches opted-in pods and keeps their processes in line with them."""

    def __init__(self, cluster: ClusterConfig, api: client.CoreV1Api, cgroups: CpuCgroups | None = None):
        self.cluster = cluster
        self.api = api
        self.cgroups = cgroups or CpuCgroups()
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
            self._start_container(local, container)
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
            cpu_limit = ((c.get("resources") or {}).get("limits") or {}).get("cpu")
            quota_us = None
            if cpu_limit is not None:
                cpu_limit = str(cpu_limit)
                try:
                    quota_us = cfs_quota_us(cpu_limit)
                except ValueError as error:
                    raise ValueError(
                        f"container {c['name']!r}: invalid resources.limits.cpu {cpu_limit!r}: {error}"
                    ) from error
            containers.append(
                Container(
                    name=c["name"],
                    image=c.get("image", ""),
                    argv=argv,
                    env=env,
                    log_path=pod_dir / f"{c['name']}.log",
                    pid_path=pod_dir / f"{c['name']}.pid",
                    readiness=probe,
                    cpu_limit=cpu_limit,
                    cpu_quota_us=quota_us,
                    # "_" cannot occur in namespace, pod or container names, so the name is unique.
                    cgroup_name=f"{metadata['namespace']}_{metadata['name']}_{c['name']}",
                    cgroups=self.cgroups,
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
                container.release_cgroup()
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
                self._start_container(local, container)

        if all(c.terminated is not None and not c.next_start and not c.alive() for c in local.containers):
            failed = any(c.terminated["exitCode"] != 0 for c in local.containers)
            local.phase = "Failed" if failed else "Succeeded"

    def _start_container(self, local: LocalPod, container: Container) -> None:
        """Start one container; the first start without its CPU limit gets a Warning Event."""
        container.start()
        if container.cpu_limit_error is None or container.name in local.cpu_limit_warned:
            return
        local.cpu_limit_warned.add(container.name)
        self._event(
            local.object_reference(), "Warning", "CPULimitNotEnforced",
            f"container {container.name!r} runs without its CPU limit {container.cpu_limit}: "
            f"{container.cpu_limit_error}",
        )

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
        self.cgroups.remove_parent()
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
