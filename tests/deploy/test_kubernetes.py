"""deploy/kubernetes/: every manifest validated against its schema, and the pieces agree.

Core objects: PyPI ``kubernetes-validate`` (the Kubernetes OpenAPI schemas, strict: an
unknown field is an error). The PodMonitor is a Prometheus-operator resource, for which
it has no schema: PyPI ``cloudcoil-models-prometheus-operator`` holds models generated
from the operator's CRD, and a field they do not know is reported by a round trip.
Both are in the ``dev`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from governor.config import load_config
from tests.deploy.tools import DEPLOY, module

K8S = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
CORE = {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
HOW = "in the dev extra"


def manifests() -> dict[str, dict[str, Any]]:
    """Kind → the object, from every file the kustomization lists."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            assert doc["kind"] not in found, f"two {doc['kind']} objects"
            found[doc["kind"]] = doc
    return found


def validate_core(doc: dict[str, Any]) -> None:
    kubernetes_validate = module("kubernetes_validate", HOW)
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def validate_monitoring(doc: dict[str, Any]) -> None:
    """Validate with the operator CRD's models; fail on any field they dropped."""
    models = module("cloudcoil.models.prometheus_operator.v1", HOW)
    model = getattr(models, doc["kind"]).model_validate(doc)
    assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == doc, (
        "a field the CRD does not know"
    )


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = manifests()["Deployment"]["spec"]["template"]["spec"]
    return spec


def test_every_file_is_in_the_kustomization() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    assert set(manifests()) == CORE | {"PodMonitor"}


@pytest.mark.parametrize("kind", sorted(CORE))
def test_core_objects_validate_strictly(kind: str) -> None:
    validate_core(manifests()[kind])


def test_the_pod_monitor_validates() -> None:
    validate_monitoring(manifests()["PodMonitor"])


def test_validators_refuse_unknown_fields() -> None:
    kubernetes_validate = module("kubernetes_validate", HOW)
    deployment = manifests()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_core(deployment)
    monitor = manifests()["PodMonitor"]
    monitor["spec"]["podMetricsEndpoints"][0]["paths"] = "/metrics"
    with pytest.raises(AssertionError, match="CRD does not know"):
        validate_monitoring(monitor)


def governor_config(tmp_path: Path) -> Any:
    """The ConfigMap's governor.yaml, loaded as governor would (token file stood in)."""
    text = manifests()["ConfigMap"]["data"]["governor.yaml"]
    token_path = yaml.safe_load(text)["admin_token_file"]
    token = tmp_path / "admin.token"
    token.write_text("a-token-of-sixteen-or-more\n")
    path = tmp_path / "governor.yaml"
    path.write_text(text.replace(token_path, str(token)))
    return load_config(path)


def test_probes_ports_and_drain_agree_with_the_config(tmp_path: Path) -> None:
    config = governor_config(tmp_path)
    assert config.store.startswith("redis://"), "replicas must share a store"
    spec = pod_spec()
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == config.listen_port
    assert config.admin_listen is not None
    assert ports["admin"] == config.admin_listen[1]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    pause = float(pre_stop.split("sleep(")[1].split(")")[0])
    needed = pause + config.timeouts.shutdown + config.store_timeout
    assert spec["terminationGracePeriodSeconds"] > needed
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/governor/governor.yaml", "/var/lib/governor", "/tmp"} <= mounts
    assert str(config.spool).startswith("/var/lib/governor/")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_selectors_match_the_pods() -> None:
    found = manifests()
    labels = found["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selectors = [
        found["Deployment"]["spec"]["selector"]["matchLabels"],
        found["Service"]["spec"]["selector"],
        found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        found["PodMonitor"]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items()
    assert (
        found["PodDisruptionBudget"]["spec"]["minAvailable"]
        < found["Deployment"]["spec"]["replicas"]
    )
    assert found["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["port"] == "admin"
    assert found["Service"]["spec"]["ports"][0]["targetPort"] == "http"
