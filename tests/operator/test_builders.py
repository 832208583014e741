"""Child objects are deterministic, owned, and carry the tier's GPUs and the server's ports."""

from __future__ import annotations

from pathlib import Path

import yaml

from tierscale_operator import builders
from tierscale_operator.spec import parse_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "movielens-bert.yaml"


def _spec():
    return parse_spec(yaml.safe_load(EXAMPLE.read_text())["spec"])


def test_tier_deployment_requests_the_tiers_gpus_and_is_owned():
    spec = _spec()

    deployment = builders.tier_deployment(spec, "movielens-bert", "uid-1", spec.tier("large"), 3)

    assert deployment["metadata"]["name"] == "movielens-bert-large"
    assert deployment["spec"]["replicas"] == 3
    owner = deployment["metadata"]["ownerReferences"][0]
    assert owner == {
        "apiVersion": "tierscale.io/v1alpha1", "kind": "RecommenderDeployment", "name": "movielens-bert",
        "uid": "uid-1", "controller": True, "blockOwnerDeletion": True,
    }
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "500m", "nvidia.com/gpu": "1"}
    assert container["resources"]["requests"] == {"nvidia.com/gpu": "1"}
    assert container["args"][:4] == ["--tier", "large", "--model-name", "movielens-bert"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": 8080, "management": 8081, "metrics": 8082,
    }


def test_pod_template_carries_opt_in_labels_and_scrape_annotations():
    spec = _spec()

    template = builders.pod_template(spec, "movielens-bert", spec.tier("small"))

    assert template["metadata"]["labels"]["tierscale.io/local-run"] == "true"
    assert template["metadata"]["labels"]["tierscale.io/tier"] == "small"
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "8082"


def test_template_hash_is_stable_and_changes_with_the_image():
    spec = _spec()
    first = builders.tier_deployment(spec, "r", "u", spec.tier("small"), 1)
    again = builders.tier_deployment(spec, "r", "u", spec.tier("small"), 5)

    assert first["metadata"]["annotations"] == again["metadata"]["annotations"]

    changed = yaml.safe_load(EXAMPLE.read_text())["spec"]
    changed["model"]["image"] = "tierscale/model-server:0.2.0"
    other = builders.tier_deployment(parse_spec(changed), "r", "u", spec.tier("small"), 1)
    assert other["metadata"]["annotations"] != first["metadata"]["annotations"]
