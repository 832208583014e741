"""The main job: the operator running the MovieLens BERT recommender on the local cluster.

    python -m tierscale_demo [--minutes 10] [--peak-rps 30] [--out reports/demo-<time>]

Steps: start the local cluster (control plane, simulated GPU nodes, kubelet stand-in, Prometheus);
install the CRD and the operator's RBAC from manifests/; run the operator as a local process with
its ServiceAccount's token; apply manifests/examples/; replay MovieLens users with locust at a
compressed diurnal rate; show each decision live; write a report to the output folder:
summary.json, timeline.csv, timeline.json, timeline.png, events.json and the logs.

At the end the resource is deleted (its pods stop) and the operator stops; the cluster keeps
running for inspection until ``make cluster-down``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml
from kubernetes import client, config as kube_config
from kubernetes.client.rest import ApiException
from rich.console import Console
from rich.live import Live
from rich.table import Table

from tierscale_demo import report
from tierscale_demo.workload import DiurnalRate, hour_of_day_shape
from tierscale_localcluster import cluster as local
from tierscale_localcluster.config import LOCAL_ADDRESS_ANNOTATION, REPO_ROOT, ClusterConfig
from tierscale_operator.sim.movielens import rating_timestamps
from tierscale_operator.spec import GROUP, PLURAL, VERSION, parse_duration_s

NAMESPACE = "recsys"
NAME = "movielens-bert"
MANIFESTS = REPO_ROOT / "manifests"
READY_TIMEOUT_S = 900
console = Console()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _install(config: ClusterConfig, tools: local.Tools, out: Path) -> Path:
    """CRD, namespace and RBAC from manifests/; returns a kubeconfig with the operator's identity."""
    for path in ("crd/recommenderdeployments.tierscale.io.yaml", "namespace.yaml", "rbac.yaml"):
        local.kubectl(config, tools, "apply", "--server-side", "--force-conflicts", "-f", str(MANIFESTS / path))
    local.kubectl(config, tools, "wait", "--for=condition=Established",
                  "crd/recommenderdeployments.tierscale.io", "--timeout=60s")
    return local.service_account_kubeconfig(
        config, tools, "tierscale-system", "tierscale-operator", out / "operator.kubeconfig"
    )


def _apply_example(config: ClusterConfig, tools: local.Tools) -> None:
    """Applies manifests/examples/, pointing the resource at this cluster's Prometheus."""
    documents = []
    for path in sorted((MANIFESTS / "examples").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "RecommenderDeployment":
                document["spec"]["prometheus"]["url"] = config.prometheus_url
            if document:
                documents.append(document)
    local.kubectl(config, tools, "apply", "-f", "-",
                  input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}))


def _start_operator(config: ClusterConfig, kubeconfig: Path, out: Path) -> tuple[subprocess.Popen, int]:
    metrics_port = _free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAME": "tierscale-operator-demo"}
    with open(out / "operator.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tierscale_operator", "--namespace", NAMESPACE,
             "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port),
             "--health-host", "127.0.0.1", "--health-port", str(_free_port())],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    target = config.targets_dir / "extra-operator.json"
    target.write_text(json.dumps([{"targets": [f"127.0.0.1:{metrics_port}"], "labels": {"component": "operator"}}]))
    return process, metrics_port


def _ready_endpoints(core: client.CoreV1Api) -> list[str]:
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"tierscale.io/recommender={NAME}").items
    found = []
    for pod in pods:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        address = (pod.metadata.annotations or {}).get(LOCAL_ADDRESS_ANNOTATION)
        if ready and address and pod.metadata.deletion_timestamp is None:
            found.append(address)
    return sorted(found)


def _write_endpoints(path: Path, endpoints: list[str]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(endpoints))
    temporary.rename(path)


def _status(custom: client.CustomObjectsApi) -> dict:
    try:
        return custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME).get("status") or {}
    except ApiException:
        return {}


def _events(core: client.CoreV1Api, custom: client.CustomObjectsApi, namespace: str = NAMESPACE,
            name: str = NAME) -> list[dict]:
    """Return this run's Events of the resource, oldest first.

    Events of an earlier run's resource of the same name stay for an hour, so the resource's uid
    selects this run's.
    """
    selector = f"involvedObject.name={name}"
    try:
        uid = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)["metadata"]["uid"]
        selector += f",involvedObject.uid={uid}"
    except ApiException:
        pass
    events = core.list_namespaced_event(namespace, field_selector=selector).items
    rows = [{"type": e.type, "reason": e.reason, "message": e.message, "count": e.count,
             "time": str(e.last_timestamp or e.event_time)} for e in events]
    return sorted(rows, key=lambda row: row["time"])


def _row(t_s: float, rate: DiurnalRate, status: dict, slo_ms: float) -> dict:
    observed = status.get("observed") or {}
    decision = status.get("lastDecision") or {}
    return {
        "t_s": round(t_s, 1),
        "hour": round(rate.hour_at(t_s), 2),
        "offered_rps": round(rate.rps_at(t_s), 2),
        "observed_rps": observed.get("requestsPerSecond"),
        "tier": status.get("tier"),
        "replicas": status.get("replicas"),
        "ready": status.get("readyReplicas"),
        "pending": status.get("pendingReplicas"),
        "gpus": status.get("gpus"),
        "p95_ms": observed.get("p95Ms"),
        "slo_ms": slo_ms,
        "ctr": observed.get("ctr"),
        "ctr_adjusted": observed.get("ctrAdjusted"),
        "action": decision.get("action"),
        "source": decision.get("source"),
        "applied": decision.get("applied"),
        "reward": decision.get("reward"),
        "reason": decision.get("reason"),
        "at": decision.get("at"),
    }


def _fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _table(rows: list[dict], header: str) -> Table:
    table = Table(title=header, title_justify="left", expand=True)
    for column in ("time", "hour", "load rps", "tier", "replicas", "p95 / SLO ms", "CTR raw / adj", "action", "reason"):
        table.add_column(column, overflow="fold")
    for row in rows[-14:]:
        table.add_row(
            f"{row['t_s']:.0f}s", f"{row['hour']:04.1f}", f"{_fmt(row['observed_rps'])} / {row['offered_rps']:g}",
            str(row["tier"]), f"{row['ready']}/{row['replicas']}" + (f" +{row['pending']}p" if row["pending"] else ""),
            f"{_fmt(row['p95_ms'])} / {row['slo_ms']:g}", f"{_fmt(row['ctr'])} / {_fmt(row['ctr_adjusted'])}",
            f"{row['action']}" + ("" if row["applied"] or row["action"] == "hold" else " (not applied)"),
            (row["reason"] or "")[:90],
        )
    return table


def _print_row(row: dict) -> None:
    print(
        f"{row['t_s']:6.0f}s hour {row['hour']:04.1f} load {_fmt(row['observed_rps'])}/{row['offered_rps']:g} rps "
        f"tier {row['tier']} replicas {row['ready']}/{row['replicas']} p95 {_fmt(row['p95_ms'])}/{row['slo_ms']:g} ms "
        f"ctr {_fmt(row['ctr'])}/{_fmt(row['ctr_adjusted'])} -> {row['reason']}",
        flush=True,
    )


def _wait_first_ready(core: client.CoreV1Api) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with console.status("waiting for the first model-server pod to load its tier ..."):
        while time.monotonic() < deadline:
            if _ready_endpoints(core):
                return
            time.sleep(2)
    raise SystemExit(f"no model-server pod became ready within {READY_TIMEOUT_S} s; see the pod logs under "
                     f"{ClusterConfig().pods_dir / NAMESPACE}")


def _stop(process: subprocess.Popen | None, grace_s: float = 15) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _delete_resource(custom: client.CustomObjectsApi, core: client.CoreV1Api) -> None:
    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)
    except ApiException as error:
        if error.status != 404:
            raise
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and core.list_namespaced_pod(
            NAMESPACE, label_selector=f"tierscale.io/recommender={NAME}").items:
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tierscale_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("DEMO_MINUTES", "10")),
                        help="length of the load, in minutes (one compressed day; default 10)")
    parser.add_argument("--peak-rps", type=float, default=float(os.environ.get("DEMO_PEAK_RPS", "35")),
                        help="offered requests per second at the busiest hour (default 35)")
    parser.add_argument("--floor-rps", type=float, default=float(os.environ.get("DEMO_FLOOR_RPS", "2")),
                        help="offered requests per second at the quietest hour (default 2)")
    parser.add_argument("--out", type=Path, help="report folder (default reports/demo-<UTC time>)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.peak_rps <= 0 or args.floor_rps < 0 or args.floor_rps > args.peak_rps:
        parser.error(f"invalid load: --minutes {args.minutes}, --peak-rps {args.peak_rps}, --floor-rps {args.floor_rps}")

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = (args.out or REPO_ROOT / "reports" / f"demo-{stamp}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    seconds = args.minutes * 60
    rate = DiurnalRate(tuple(hour_of_day_shape(rating_timestamps())), seconds, args.peak_rps, args.floor_rps)

    config = ClusterConfig()
    tools = local.Tools.build()
    console.print("[bold]starting the local cluster[/bold]")
    kubeconfig = local.up(config, tools)
    operator_kubeconfig = _install(config, tools, out)
    api = kube_config.new_client_from_config(config_file=str(kubeconfig))
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)

    operator, locust = None, None
    rows: list[dict] = []
    interval_s = 15.0
    try:
        operator, metrics_port = _start_operator(config, operator_kubeconfig, out)
        console.print(f"operator started (metrics on 127.0.0.1:{metrics_port}, log {out / 'operator.log'})",
                      soft_wrap=True)
        _apply_example(config, tools)
        _wait_first_ready(core)
        spec = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)["spec"]
        slo_ms = float(spec["slo"]["latencyP95Ms"])
        interval_s = parse_duration_s("spec.policy.interval", spec["policy"]["interval"])

        endpoints_file = out / "endpoints.json"
        _write_endpoints(endpoints_file, _ready_endpoints(core))
        env = {**os.environ, "DEMO_ENDPOINTS_FILE": str(endpoints_file), "DEMO_MODEL": NAME,
               "DEMO_SECONDS": str(seconds), "DEMO_PEAK_RPS": str(args.peak_rps),
               "DEMO_FLOOR_RPS": str(args.floor_rps)}
        with open(out / "locust.log", "ab") as log:
            locust = subprocess.Popen(
                [sys.executable, "-m", "locust", "-f", str(Path(__file__).with_name("locustfile.py")),
                 "--headless", "--csv", str(out / "locust"), "--loglevel", "WARNING", "--only-summary"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        started = time.monotonic()
        header = f"tierscale demo: {args.minutes:g} min, peak {args.peak_rps:g} rps, SLO p95 {slo_ms:g} ms"
        live = Live(_table(rows, header), console=console, refresh_per_second=1) if console.is_terminal else None
        if live:
            live.start()
        else:
            print(header, flush=True)
        last_at = (_status(custom).get("lastDecision") or {}).get("at")
        while locust.poll() is None and time.monotonic() - started < seconds + 30:
            _write_endpoints(endpoints_file, _ready_endpoints(core))
            status = _status(custom)
            at = (status.get("lastDecision") or {}).get("at")
            if at and at != last_at:
                last_at = at
                rows.append(_row(time.monotonic() - started, rate, status, slo_ms))
                if live:
                    live.update(_table(rows, header))
                else:
                    _print_row(rows[-1])
            time.sleep(1)
        if live:
            live.stop()
    finally:
        _stop(locust)
        (out / "events.json").write_text(json.dumps(_events(core, custom), indent=1))
        if operator is not None and operator.poll() is None:
            _delete_resource(custom, core)
        _stop(operator)

    summary = report.write(out, rows, interval_s=interval_s)
    console.print_json(json.dumps(summary))
    console.print(f"report: {out}", soft_wrap=True)
    console.print(f"cluster still running: KUBECONFIG={kubeconfig}; stop it with make cluster-down", soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
