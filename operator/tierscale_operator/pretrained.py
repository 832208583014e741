"""The Q-table a resource starts from: the one its spec names, else the pretrained one shipped here.

``spec.policy.initialTable`` names a ConfigMap in the resource's namespace whose key ``q-table.json``
holds a table in the policy's JSON format. Without it, the table pretrained in the simulator
(``policy/data/pretrained-qtable.json``) is used when its layout (tiers, bins) matches the resource;
otherwise the policy starts from zeros and the log says why.
"""

from __future__ import annotations

import functools
import logging
from importlib import resources

from kubernetes import client
from kubernetes.client.rest import ApiException

from tierscale_operator.policy import PolicyStateError, QTable
from tierscale_operator.spec import RecommenderSpec

log = logging.getLogger("tierscale.pretrained")

TABLE_KEY = "q-table.json"
SHIPPED_TABLE = "pretrained-qtable.json"


class TableError(ValueError):
    """The table named by spec.policy.initialTable cannot be used; the message says why."""


def shipped_table_text() -> str | None:
    path = resources.files("tierscale_operator.policy") / "data" / SHIPPED_TABLE
    return path.read_text() if path.is_file() else None


def initial_table(core: client.CoreV1Api, namespace: str, spec: RecommenderSpec) -> QTable | None:
    if spec.initial_table:
        try:
            configmap = core.read_namespaced_config_map(spec.initial_table, namespace)
        except ApiException as error:
            raise TableError(
                f"spec.policy.initialTable={spec.initial_table!r}: ConfigMap {namespace}/{spec.initial_table} "
                f"could not be read (HTTP {error.status} {error.reason})"
            ) from error
        text = (configmap.data or {}).get(TABLE_KEY)
        if text is None:
            raise TableError(
                f"spec.policy.initialTable={spec.initial_table!r}: ConfigMap has no key {TABLE_KEY!r}"
            )
        try:
            return QTable.from_json(text, spec.policy)
        except (PolicyStateError, ValueError) as error:
            raise TableError(f"spec.policy.initialTable={spec.initial_table!r}: {error}") from error

    return _shipped_table(spec.policy.table_fingerprint(), spec.policy)


@functools.lru_cache(maxsize=16)
def _shipped_table(fingerprint: str, config) -> QTable | None:
    """Parses the shipped table once per table layout (the timer asks every second)."""
    text = shipped_table_text()
    if text is None:
        return None
    try:
        return QTable.from_json(text, config)
    except (PolicyStateError, ValueError) as error:
        log.info("the shipped pretrained table does not fit layout %s (%s); such resources start from zeros",
                 fingerprint, error)
        return None
