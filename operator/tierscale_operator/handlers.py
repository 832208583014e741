"""kopf handlers: thin wrappers that parse the spec, reconcile children and run control steps.

- ``recommenderdeployment_reconcile`` (create, update, resume): children in line with the spec.
- ``recommenderdeployment_tick`` (a timer every `TICK_S`): one control step when it is due.

An invalid spec never crashes the operator: it sets ``Ready=False`` with reason ``InvalidSpec`` and
a message naming the field, posts a Warning Event and logs one line (once per distinct message),
and waits for the next edit. The same goes for a missing initial table (``InvalidInitialTable``)
and a model name that another resource in the namespace already uses (``ModelNameInUse``: the
Prometheus queries select series by namespace and model, so two such resources would read each
other's traffic). A child the API server rejects (for example an invalid ``spec.model.resources``)
gets a ``ReconcileFailed`` Warning Event with the API server's message, and kopf retries.
"""

from __future__ import annotations

import json
import logging
import os
import socket

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tierscale_operator import builders, metrics, pretrained
from tierscale_operator.controller import Controller, condition, merge_conditions
from tierscale_operator.persistence import CONTROLLER_KEY, ControllerState
from tierscale_operator.reconcile import reconcile_children
from tierscale_operator.spec import GROUP, PLURAL, VERSION, RecommenderSpec, SpecError, parse_spec

log = logging.getLogger("tierscale.handlers")

# How often the timer checks whether a resource's interval has passed; the interval itself is
# spec.policy.interval (at least 1 s).
TICK_S = 1.0

_controller: Controller | None = None
# The last rejection reported per resource uid, so a timer running every second reports it once.
_reported: dict[str, tuple[str, str]] = {}


def controller() -> Controller:
    global _controller
    if _controller is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        _controller = Controller(client.ApiClient(), identity)
    return _controller


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    # One loop per resource comes from a Lease per resource (see lease.py), not from kopf peering.
    settings.peering.standalone = True
    # kopf would post an Event for every timer run at info; our own Events go through kopf.event.
    settings.posting.level = logging.WARNING
    settings.persistence.finalizer = "tierscale.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tierscale.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="tierscale.io")
    settings.watching.server_timeout = 60


def _reject(body, patch, reason: str, message: str) -> None:
    """Set Ready=False with `reason`; post the Warning Event and log only when the message is new."""
    metadata = body["metadata"]
    generation = metadata.get("generation", 0)
    patch.status["conditions"] = merge_conditions(
        (body.get("status") or {}).get("conditions") or [],
        [condition("Ready", False, reason, message, generation, controller().clock())],
    )
    patch.status["observedGeneration"] = generation
    if _reported.get(metadata["uid"]) != (reason, message):
        _reported[metadata["uid"]] = (reason, message)
        kopf.warn(body, reason=reason, message=message)
        log.warning("%s/%s: %s: %s", metadata.get("namespace"), metadata.get("name"), reason, message)


@kopf.index(GROUP, VERSION, PLURAL)
def model_names(namespace, name, uid, spec, meta, **_) -> dict:
    """Index the resources by (namespace, model name), from kopf's watch instead of list calls."""
    model = (spec.get("model") or {}).get("name")
    if model is None or meta.get("deletionTimestamp"):
        return {}  # an empty mapping removes the resource's entry (None would keep the old one)
    return {(namespace, model): (meta.get("creationTimestamp") or "", name, uid)}


def _parse(body, patch, model_names: kopf.Index) -> RecommenderSpec | None:
    try:
        spec = parse_spec(body["spec"])
    except SpecError as error:
        _reject(body, patch, "InvalidSpec", str(error))
        return None
    other = _model_name_owner(model_names, body, spec)
    if other is not None:
        _reject(body, patch, "ModelNameInUse",
                f"spec.model.name={spec.model.name!r} is already used by RecommenderDeployment {other} in this "
                "namespace; the operator selects Prometheus series by namespace and model name, so give "
                "each resource its own")
        return None
    return spec


def _model_name_owner(model_names: kopf.Index, body, spec: RecommenderSpec) -> str | None:
    """Return the name of an older resource in the namespace with the same model name, if any."""
    metadata = body["metadata"]
    # Sorted by creation time, then name: the oldest resource keeps the model name.
    holders = sorted(model_names.get((metadata["namespace"], spec.model.name), []))
    if not holders or holders[0][2] == metadata["uid"]:
        return None
    return holders[0][1]


def _stored_tier_replicas(namespace: str, name: str, spec: RecommenderSpec) -> dict[str, int]:
    try:
        configmap = controller().core.read_namespaced_config_map(builders.state_configmap_name(name), namespace)
        return ControllerState.from_json((configmap.data or {})[CONTROLLER_KEY]).tier_replicas
    except (ApiException, KeyError, ValueError):
        replicas = {t.name: 0 for t in spec.tiers}
        replicas[spec.initial_tier] = spec.min_replicas
        return replicas


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def recommenderdeployment_reconcile(body, namespace, name, uid, patch, model_names: kopf.Index, **_) -> None:
    spec = _parse(body, patch, model_names)
    if spec is None:
        return
    ctl = controller()
    try:
        changes = reconcile_children(
            ctl.apps, ctl.core, namespace, name, uid, spec, _stored_tier_replicas(namespace, name, spec)
        )
    except ApiException as error:
        if error.status not in (400, 422):
            raise
        message = f"the API server rejected a tier Deployment or the Service: {_api_message(error)}"
        kopf.warn(body, reason="ReconcileFailed", message=message)
        log.warning("%s/%s: ReconcileFailed: %s", namespace, name, message)
        raise kopf.TemporaryError(message, delay=60) from error
    for change in changes:
        kopf.event(body, type="Normal", reason="Reconciled", message=change)


@kopf.timer(GROUP, VERSION, PLURAL, interval=TICK_S, sharp=False)
def recommenderdeployment_tick(body, namespace, name, patch, logger, model_names: kopf.Index, **_) -> None:
    spec = _parse(body, patch, model_names)
    if spec is None:
        return
    ctl = controller()
    try:
        table = pretrained.initial_table(ctl.core, namespace, spec)
    except pretrained.TableError as error:
        _reject(body, patch, "InvalidInitialTable", str(error))
        return
    _reported.pop(body["metadata"]["uid"], None)  # nothing is wrong any more: report the next problem
    try:
        report = ctl.tick(body, spec, initial_table=table)
    except ApiException as error:
        if error.status == 409:
            logger.info("state changed by another writer during the step; the step is dropped")
            return
        raise kopf.TemporaryError(f"Kubernetes API call failed: HTTP {error.status} {error.reason}", delay=5)
    if report is None:
        return
    patch.status.update(report.status)
    for event in report.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    metrics.export(namespace, name, spec.slo_latency_p95_ms, report)


def _api_message(error: ApiException) -> str:
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"HTTP {error.status} {error.reason}"


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def recommenderdeployment_forget(uid, **_) -> None:
    _reported.pop(uid, None)
