"""kopf handlers: thin wrappers that parse the spec, reconcile children and run control steps.

- ``recommenderdeployment_reconcile`` (create, update, resume): children in line with the spec.
- ``recommenderdeployment_tick`` (a timer every `TICK_S`): one control step when it is due.

An invalid spec never crashes the operator: it sets ``Ready=False`` with reason ``InvalidSpec`` and
a message naming the field, posts a Warning Event, and waits for the next edit.
"""

from __future__ import annotations

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


def _parse(body, patch, logger) -> RecommenderSpec | None:
    try:
        return parse_spec(body["spec"])
    except SpecError as error:
        generation = body["metadata"].get("generation", 0)
        conditions = merge_conditions(
            (body.get("status") or {}).get("conditions") or [],
            [condition("Ready", False, "InvalidSpec", str(error), generation, controller().clock())],
        )
        patch.status["conditions"] = conditions
        patch.status["observedGeneration"] = generation
        previous = next((c for c in (body.get("status") or {}).get("conditions") or []
                         if c["type"] == "Ready"), {})
        if previous.get("message") != str(error):
            kopf.warn(body, reason="InvalidSpec", message=str(error))
        logger.warning("invalid spec: %s", error)
        return None


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
def recommenderdeployment_reconcile(body, namespace, name, uid, patch, logger, **_) -> None:
    spec = _parse(body, patch, logger)
    if spec is None:
        return
    ctl = controller()
    changes = reconcile_children(
        ctl.apps, ctl.core, namespace, name, uid, spec, _stored_tier_replicas(namespace, name, spec)
    )
    for change in changes:
        kopf.event(body, type="Normal", reason="Reconciled", message=change)


@kopf.timer(GROUP, VERSION, PLURAL, interval=TICK_S, sharp=False)
def recommenderdeployment_tick(body, namespace, name, patch, logger, **_) -> None:
    spec = _parse(body, patch, logger)
    if spec is None:
        return
    ctl = controller()
    try:
        table = pretrained.initial_table(ctl.core, namespace, spec)
    except pretrained.TableError as error:
        patch.status["conditions"] = merge_conditions(
            (body.get("status") or {}).get("conditions") or [],
            [condition("Ready", False, "InvalidInitialTable", str(error),
                       body["metadata"].get("generation", 0), ctl.clock())],
        )
        kopf.warn(body, reason="InvalidInitialTable", message=str(error))
        return
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
