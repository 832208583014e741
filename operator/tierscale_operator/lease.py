"""One decision loop per resource, even with several operator replicas: a coordination.k8s.io Lease.

Each resource has a Lease ``<name>-tierscale-loop`` in its namespace. A replica runs the control
step only while it holds that Lease; it renews it every tick and takes it over only after it has
expired (``leaseDurationSeconds`` without a renewal). Writes carry the Lease's resourceVersion, so two
replicas that race for an expired Lease cannot both win: the loser gets a 409.

kopf's own peering would pause a whole operator instead; a Lease per resource lets two replicas
share the resources and take over one resource at a time.
"""

from __future__ import annotations

import datetime
import logging

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("tierscale.lease")


def lease_name(recommender: str) -> str:
    return f"{recommender}-tierscale-loop"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class LoopLease:
    def __init__(self, coordination: client.CoordinationV1Api, identity: str, duration_s: int):
        self.coordination = coordination
        self.identity = identity
        self.duration_s = max(1, int(duration_s))

    def acquire(self, namespace: str, recommender: str, owner: dict) -> bool:
        """Takes or renews the resource's Lease; returns whether this replica holds it now."""
        name = lease_name(recommender)
        try:
            lease = self.coordination.read_namespaced_lease(name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            return self._create(namespace, name, owner)

        spec = lease.spec
        now = _now()
        held_by_other = spec.holder_identity not in (None, "", self.identity)
        if held_by_other and spec.renew_time is not None:
            expires = spec.renew_time + datetime.timedelta(seconds=spec.lease_duration_seconds or 0)
            if expires > now:
                log.debug("lease %s/%s is held by %s until %s", namespace, name, spec.holder_identity, expires)
                return False

        if spec.holder_identity != self.identity:
            log.info("taking lease %s/%s from %r", namespace, name, spec.holder_identity)
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            spec.acquire_time = now
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = self.duration_s
        spec.renew_time = now
        try:
            self.coordination.replace_namespaced_lease(name, namespace, lease)
        except ApiException as error:
            if error.status == 409:
                log.info("lease %s/%s changed while renewing; another replica won", namespace, name)
                return False
            raise
        return True

    def _create(self, namespace: str, name: str, owner: dict) -> bool:
        now = _now()
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace, owner_references=[owner]),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=self.duration_s,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self.coordination.create_namespaced_lease(namespace, body)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        log.info("created lease %s/%s for %s", namespace, name, self.identity)
        return True
