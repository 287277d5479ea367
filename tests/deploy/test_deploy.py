"""The deployment artefacts: Kubernetes manifests (deploy/), the Dockerfile and docker-compose.yml.

Pure and offline. The kustomizations are rendered by a small renderer below that implements only the
kustomize fields this repository uses (and refuses any other); where `kubectl` is installed, its built-in
kustomize renders the same directories and must agree. Every rendered manifest is validated against the
Kubernetes JSON schemas bundled in the `kubernetes-validate` package, the compose file against the compose
specification schema bundled in `check-jsonschema` (and with `docker compose config` where that works).
The manifests and the compose file are also checked against the code and the local stack they deploy:
the settings of reconciler/base/config.py, the health endpoints, the drain timeout, the realm, topics and client.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import certifi
import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as k8s_schemas
from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from reconciler.base.config import Settings
from reconciler.domain.events import ACCEPTED_USER_EVENT_TYPES
from tests.support import operator_crds

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "base"
OVERLAY = ROOT / "deploy" / "overlays" / "example"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP = "keycloak-user-reconciler"
METRICS_PORT_NAME = "http-metrics"
# Oldest Kubernetes minor version the manifests are validated against (and every bundled one after it).
OLDEST_KUBERNETES = (1, 27)

Doc = dict[str, Any]


# --- A small kustomize ----------------------------------------------------------------------------------

_KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "namespace",
    "images",
    "replicas",
    "patches",
}
# apiVersion of each kind of kustomization file: a Component is an optional piece an overlay opts into.
_KUSTOMIZATION_KINDS = {
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
    "Component": "kustomize.config.k8s.io/v1alpha1",
}
_CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
}
_WORKLOADS = {"Deployment", "StatefulSet", "ReplicaSet", "DaemonSet"}


def kustomize(directory: Path, docs: list[Doc] | None = None) -> list[Doc]:
    """Render a kustomization: resources (files and directories), components, strategic-merge patches of
    maps, namespace, images and replicas, in kustomize's order. Any other field is refused, not ignored.
    A Component is rendered onto its parent's `docs` (it adds to and patches what the parent has)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert _KUSTOMIZATION_KINDS.get(spec["kind"]) == spec["apiVersion"], directory
    assert (spec["kind"] == "Component") == (docs is not None), (
        f"{directory}: a Component only as a component"
    )
    unknown = set(spec) - _KUSTOMIZATION_FIELDS
    assert not unknown, f"{directory}: {sorted(unknown)} not implemented by the test's kustomize renderer"
    docs = [] if docs is None else docs
    for entry in spec.get("resources", []):
        path = directory / entry
        if path.is_dir():
            docs.extend(kustomize(path))
        else:
            docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for entry in spec.get("components", []):
        kustomize(directory / entry, docs)
    for patch in spec.get("patches", []):
        assert set(patch) == {"path"}, f"{directory}: only `patches: - path:` is implemented"
        body = yaml.safe_load((directory / patch["path"]).read_text())
        target = find(docs, body["kind"], body["metadata"]["name"])
        _merge(target, {k: v for k, v in body.items() if k not in ("apiVersion", "kind")})
    if namespace := spec.get("namespace"):
        for doc in docs:
            if doc["kind"] not in _CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = namespace
    for image in spec.get("images", []):
        for doc in docs:
            for container in _containers(doc):
                name, tag = _split_image(container["image"])
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    for replicas in spec.get("replicas", []):
        (workload,) = [
            d for d in docs if d["kind"] in _WORKLOADS and d["metadata"]["name"] == replicas["name"]
        ]
        workload["spec"]["replicas"] = replicas["count"]
    return docs


def _merge(target: Doc, patch: Doc) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            assert not isinstance(value, list), "strategic merge of lists is not implemented: patch maps only"
            target[key] = copy.deepcopy(value)


def _split_image(image: str) -> tuple[str, str | None]:
    name, _, tag = image.rpartition(":")
    return (name, tag) if name and "/" not in tag else (image, None)


def _containers(doc: Doc) -> list[Doc]:
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def _key(doc: Doc) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


# --- Fixtures and helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base() -> list[Doc]:
    return kustomize(BASE)


@pytest.fixture(scope="module")
def overlay() -> list[Doc]:
    return kustomize(OVERLAY)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """This process's environment without any setting (the test run may have the stack's settings loaded)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def env_name(field: str) -> str:
    return field.upper()


def is_secret(field: str) -> bool:
    annotation = Settings.model_fields[field].annotation
    return SecretStr in (annotation, *typing.get_args(annotation))


ALL_SETTINGS = {env_name(f) for f in Settings.model_fields}
SECRET_SETTINGS = {env_name(f) for f in Settings.model_fields if is_secret(f)}
PER_POD_SETTINGS = {"KAFKA_GROUP_INSTANCE_ID"}  # from the downward API, not the ConfigMap


def pod_spec(docs: list[Doc]) -> Doc:
    return find(docs, "StatefulSet", APP)["spec"]["template"]["spec"]


def container(docs: list[Doc]) -> Doc:
    (only,) = pod_spec(docs)["containers"]
    return only


def config_data(docs: list[Doc]) -> dict[str, str]:
    (config_ref,) = [e["configMapRef"]["name"] for e in container(docs)["envFrom"] if "configMapRef" in e]
    return find(docs, "ConfigMap", config_ref)["data"]


def secret_data(docs: list[Doc]) -> dict[str, str]:
    (secret_ref,) = [e["secretRef"]["name"] for e in container(docs)["envFrom"] if "secretRef" in e]
    return find(docs, "Secret", secret_ref)["stringData"]


def settings_of_pod(docs: list[Doc], env: pytest.MonkeyPatch, pod_name: str) -> Settings:
    """The Settings a pod of these manifests starts with (envFrom, then env, as the kubelet builds it)."""
    values = {**config_data(docs), **secret_data(docs)}
    for var in container(docs).get("env", []):
        if var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            values[var["name"]] = pod_name
        else:
            values[var["name"]] = var["value"]
    for name, value in values.items():
        if name.endswith("_CA_FILE") and value:
            mounted_ca_file(docs, value)
            value = certifi.where()  # a real PEM bundle stands in for the mounted file's content
        env.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def mounted_ca_file(docs: list[Doc], path: str) -> None:
    """`path` is a key of a Secret the pod mounts, when that Secret is among `docs`."""
    volumes = {v["name"]: v for v in pod_spec(docs).get("volumes", [])}
    mounts = [m for m in container(docs).get("volumeMounts", []) if path.startswith(m["mountPath"] + "/")]
    assert len(mounts) == 1, f"{path} is not in a mounted volume"
    secret_name = volumes[mounts[0]["name"]]["secret"]["secretName"]
    key = path.removeprefix(mounts[0]["mountPath"] + "/")
    secrets = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == secret_name]
    for secret in secrets:
        assert key in secret.get("stringData", secret.get("data", {})), f"{secret_name} has no {key}"


def kubernetes_versions() -> list[str]:
    versions = {
        v for v in k8s_schemas.all_versions() if tuple(map(int, v.split(".")[:2])) >= OLDEST_KUBERNETES
    }
    return sorted(versions, key=lambda v: tuple(map(int, v.split("."))))


# --- Kubernetes manifests -------------------------------------------------------------------------------


def test_base_has_the_expected_objects(base: list[Doc]) -> None:
    kinds = sorted(d["kind"] for d in base)
    assert kinds == sorted(
        ["ServiceAccount", "ConfigMap", "Secret", "Service", "Service", "StatefulSet", "PodDisruptionBudget"]
    )
    assert len({_key(d) for d in base}) == len(base), "duplicate objects"


@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay"])
def test_manifests_validate_against_kubernetes_schemas(directory: Path) -> None:
    versions = kubernetes_versions()
    assert versions, "kubernetes-validate bundles no schema for the supported versions"
    for doc in kustomize(directory):
        if operator_crds.group_of(doc) in operator_crds.GROUPS:
            continue  # the operators' kinds: test_operator_resources_match_the_operator_crds
        for version in versions:
            try:
                k8s_schemas.validate(doc, version, strict=True)
            except k8s_schemas.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                pytest.fail(
                    f"{'/'.join(_key(doc))} invalid for Kubernetes {version} at {path}: {error.message}"
                )


def test_operator_resources_match_the_operator_crds(overlay: list[Doc]) -> None:
    custom = [d for d in overlay if operator_crds.group_of(d) in operator_crds.GROUPS]
    kinds = ["KafkaConnect", "KafkaConnector", "PodMonitor", "PrometheusRule"]
    assert sorted(d["kind"] for d in custom) == kinds
    for doc in custom:
        try:
            operator_crds.validate(doc)
        except jsonschema.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{'/'.join(_key(doc))} invalid at {path}: {error.message}")


def test_pod_monitor_scrapes_the_metrics_port_as_the_alerts_expect(overlay: list[Doc]) -> None:
    monitor = find(overlay, "PodMonitor", APP)
    labels = find(overlay, "StatefulSet", APP)["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == METRICS_PORT_NAME and endpoint["path"] == "/metrics"
    # ReconcilerTargetDown selects up{job=~"keycloak-user-reconciler.*"}: the job is this pod label's value.
    assert labels[monitor["spec"]["jobLabel"]] == APP


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with built-in kustomize) not installed")
@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay"])
def test_renderer_agrees_with_real_kustomize(directory: Path) -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    real = {_key(d): d for d in yaml.safe_load_all(result.stdout) if d}
    ours = {_key(d): d for d in kustomize(directory)}
    assert ours == real


def test_configmap_and_secret_hold_exactly_the_settings(base: list[Doc]) -> None:
    config, secret = set(config_data(base)), set(secret_data(base))
    explicit_env = {var["name"] for var in container(base).get("env", [])}
    assert SECRET_SETTINGS == {"KEYCLOAK_CLIENT_SECRET", "MONGODB_URI", "KAFKA_SASL_PASSWORD"}
    assert secret == SECRET_SETTINGS
    assert config == ALL_SETTINGS - SECRET_SETTINGS - PER_POD_SETTINGS, (
        f"missing from the ConfigMap: {sorted(ALL_SETTINGS - SECRET_SETTINGS - PER_POD_SETTINGS - config)}; "
        f"unknown: {sorted(config - ALL_SETTINGS)}"
    )
    assert explicit_env == PER_POD_SETTINGS
    assert not (config & secret), "a setting must have one source"


def test_configmap_values_are_the_settings_defaults(base: list[Doc], clean_env: pytest.MonkeyPatch) -> None:
    settings = settings_of_pod(base, clean_env, f"{APP}-0")
    for field, info in Settings.model_fields.items():
        if info.default is PydanticUndefined or is_secret(field) or env_name(field) in PER_POD_SETTINGS:
            continue
        assert getattr(settings, field) == info.default, (
            f"{env_name(field)} differs from the Settings default"
        )


def test_static_membership_id_is_the_pod_name(base: list[Doc], clean_env: pytest.MonkeyPatch) -> None:
    (var,) = [v for v in container(base)["env"] if v["name"] == "KAFKA_GROUP_INSTANCE_ID"]
    assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    settings = settings_of_pod(base, clean_env, f"{APP}-1")
    assert settings.kafka_group_instance_id == f"{APP}-1"


def test_statefulset_shape(base: list[Doc]) -> None:
    statefulset = find(base, "StatefulSet", APP)
    spec = statefulset["spec"]
    assert spec["replicas"] == 2
    headless = find(base, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = pod_spec(base)
    service_account = find(base, "ServiceAccount", pod["serviceAccountName"])
    assert service_account["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is False


def test_grace_period_outlasts_the_drain(base: list[Doc], clean_env: pytest.MonkeyPatch) -> None:
    grace = pod_spec(base)["terminationGracePeriodSeconds"]
    assert grace == 60
    assert grace > Settings.model_fields["consumer_drain_timeout_s"].default
    assert grace > settings_of_pod(base, clean_env, f"{APP}-0").consumer_drain_timeout_s


def test_probes_and_port_match_the_health_server(base: list[Doc], clean_env: pytest.MonkeyPatch) -> None:
    settings = settings_of_pod(base, clean_env, f"{APP}-0")
    main = container(base)
    (port,) = main["ports"]
    assert port == {"name": METRICS_PORT_NAME, "containerPort": settings.http_port, "protocol": "TCP"}
    assert settings.http_host == "0.0.0.0" and settings.http_enabled
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": METRICS_PORT_NAME}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": METRICS_PORT_NAME}
    assert main["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert main["args"] == ["run"]


def test_metrics_service_is_scraped(base: list[Doc]) -> None:
    labels = find(base, "StatefulSet", APP)["spec"]["template"]["metadata"]["labels"]
    services = [d for d in base if d["kind"] == "Service"]
    assert len(services) == 2
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        (port,) = service["spec"]["ports"]
        assert port["name"] == METRICS_PORT_NAME and port["targetPort"] == METRICS_PORT_NAME
    metrics = find(base, "Service", f"{APP}-metrics")
    annotations = metrics["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(metrics["spec"]["ports"][0]["port"])


def test_disruption_budget(base: list[Doc]) -> None:
    pdb = find(base, "PodDisruptionBudget", APP)
    labels = find(base, "StatefulSet", APP)["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_hardened_security_context_and_resources(base: list[Doc]) -> None:
    pod = pod_spec(base)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    main = container(base)
    security = main["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert main["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }


def test_secret_is_a_template(base: list[Doc]) -> None:
    assert all("change-me" in value for value in secret_data(base).values())
    assert "secret manager" in (BASE / "secret.yaml").read_text().lower()


def test_overlay_changes_only_what_it_says(
    base: list[Doc], overlay: list[Doc], clean_env: pytest.MonkeyPatch
) -> None:
    (namespace,) = [d for d in overlay if d["kind"] == "Namespace"]
    name = namespace["metadata"]["name"]
    assert all(d["metadata"].get("namespace") == name for d in overlay if d["kind"] != "Namespace")
    assert find(overlay, "StatefulSet", APP)["spec"]["replicas"] == 3
    image = container(overlay)["image"]
    assert image == "registry.example.com/platform/keycloak-user-reconciler:0.1.0"
    patched, original = config_data(overlay), config_data(base)
    assert set(patched) == set(original), "the patch must only change values, never add or drop settings"
    changed = {k for k in patched if patched[k] != original[k]}
    assert {"KEYCLOAK_URL", "KEYCLOAK_REALM", "KAFKA_BOOTSTRAP_SERVERS"} <= changed
    settings = settings_of_pod(overlay, clean_env, f"{APP}-2")
    assert settings.keycloak_base_url == "https://sso.example.com"
    assert settings.keycloak_realm == "customers"


def test_overlay_shows_sasl_ssl_and_ca_files_from_a_mounted_secret(
    base: list[Doc], overlay: list[Doc], clean_env: pytest.MonkeyPatch
) -> None:
    config = config_data(overlay)
    assert (config["KAFKA_SECURITY_PROTOCOL"], config["KAFKA_SASL_MECHANISM"]) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
    )
    assert config["KAFKA_SASL_USERNAME"] and "KAFKA_SASL_PASSWORD" in secret_data(overlay)
    for setting in ("KAFKA_SSL_CA_FILE", "KEYCLOAK_CA_FILE"):
        mounted_ca_file(overlay, config[setting])  # a file of the CA Secret, which the pod mounts
    (volume,) = [v for v in pod_spec(base)["volumes"] if "secret" in v]
    assert volume["secret"] == {
        "secretName": "keycloak-user-reconciler-ca", "optional": True, "defaultMode": 0o444,
    }  # fmt: skip
    ca_secret = find(overlay, "Secret", "keycloak-user-reconciler-ca")
    assert all("change-me" in value for value in ca_secret["stringData"].values()), "a template only"
    settings = settings_of_pod(overlay, clean_env, f"{APP}-0")
    assert settings.kafka_ssl_ca_file is not None and settings.keycloak_ca_file is not None


# --- Database changes (CDC) with Strimzi -----------------------------------------------------------------

CDC_COMPONENT = ROOT / "deploy" / "components" / "cdc"
CDC_DIR = ROOT / "keycloak-spi-config" / "cdc"
SHIPPED_CONNECTOR = CDC_DIR / "keycloak-users-connector.json"
GRANTS = CDC_DIR / "grants.sql"
DEBEZIUM_POM = ROOT / "scripts" / "stack" / "debezium-pom.xml"
# Strimzi sets these from the resource's own fields; its config may not hold them.
STRIMZI_CONNECTOR_FIELDS = {"name": None, "connector.class": "class", "tasks.max": "tasksMax"}
SECRETS_PLACEHOLDER = re.compile(r"\$\{secrets:(?P<namespace>[^/:]+)/(?P<secret>[^:]+):(?P<key>[^}]+)\}")


def cdc_on_base() -> list[Doc]:
    """The base with the CDC component (without the example overlay's values)."""
    return kustomize(CDC_COMPONENT, kustomize(BASE))


def connect_of(docs: list[Doc]) -> Doc:
    (connect,) = [d for d in docs if d["kind"] == "KafkaConnect"]
    return connect


def connector_of(docs: list[Doc]) -> Doc:
    (connector,) = [d for d in docs if d["kind"] == "KafkaConnector"]
    return connector


def connector_value(value: Any) -> str:
    """A KafkaConnector config value as Connect receives it (Strimzi sends YAML numbers and booleans as text)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def secret_keys(docs: list[Doc], name: str) -> set[str]:
    secret = find(docs, "Secret", name)
    return set(secret.get("stringData", {})) | set(secret.get("data", {}))


def test_cdc_component_renders_the_connect_cluster_and_its_connector(
    base: list[Doc], overlay: list[Doc]
) -> None:
    added = cdc_on_base()[len(base) :]
    assert sorted(d["kind"] for d in added) == sorted(
        ["KafkaConnect", "KafkaConnector", "Role", "RoleBinding", "Secret", "Secret"]
    )
    connect, connector = connect_of(overlay), connector_of(overlay)
    assert connect["metadata"]["annotations"]["strimzi.io/use-connector-resources"] == "true"
    assert connector["metadata"]["labels"]["strimzi.io/cluster"] == connect["metadata"]["name"]
    assert connector["metadata"]["namespace"] == connect["metadata"]["namespace"]
    assert connector["spec"]["state"] == "running"


def test_cdc_connector_mirrors_the_shipped_connector() -> None:
    """Everything but the credentials' source equals keycloak-users-connector.json, which the local stack
    registers and the CDC tests run against."""
    shipped = json.loads(SHIPPED_CONNECTOR.read_text())
    connector = connector_of(cdc_on_base())
    spec, config = connector["spec"], connector["spec"]["config"]
    assert connector["metadata"]["name"] == shipped["name"]
    assert spec["class"] == shipped["config"]["connector.class"]
    assert str(spec["tasksMax"]) == shipped["config"]["tasks.max"]
    assert not set(config) & set(STRIMZI_CONNECTOR_FIELDS), "Strimzi refuses these in config"
    expected = {
        k: v
        for k, v in shipped["config"].items()
        if k not in STRIMZI_CONNECTOR_FIELDS and not k.startswith("database.")
    }
    ours = {k: connector_value(v) for k, v in config.items() if not k.startswith("database.")}
    assert ours == expected
    database = {k for k in shipped["config"] if k.startswith("database.")}
    assert set(k for k in config if k.startswith("database.")) == database


def test_cdc_database_credentials_come_from_a_secret_through_the_provider(overlay: list[Doc]) -> None:
    """The password is never in a manifest nor in the connector's stored config: Strimzi's Kubernetes
    secrets provider reads it at start, with a service account that may read that one Secret only."""
    connect, connector = connect_of(overlay), connector_of(overlay)
    namespace = connector["metadata"]["namespace"]
    worker = connect["spec"]["config"]
    assert worker["config.providers"] == "secrets"
    assert worker["config.providers.secrets.class"] == "io.strimzi.kafka.KubernetesSecretConfigProvider"
    config = connector["spec"]["config"]
    references = {}
    for key in ("database.user", "database.password"):
        match = SECRETS_PLACEHOLDER.fullmatch(config[key])
        assert match is not None, f"{key} must be a ${{secrets:...}} placeholder"
        assert match["namespace"] == namespace, f"{key} names another namespace than the Secret's"
        assert match["key"] in secret_keys(overlay, match["secret"])
        references[match["secret"]] = find(overlay, "Secret", match["secret"])
    (secret_name,) = references
    assert references[secret_name]["stringData"]["password"] == "change-me", "a template only"
    for key, value in config.items():
        if "password" in key:
            assert SECRETS_PLACEHOLDER.fullmatch(str(value)), f"{key} holds a literal"
    (role,) = [d for d in overlay if d["kind"] == "Role"]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret_name], "verbs": ["get"]}
    ]
    (binding,) = [d for d in overlay if d["kind"] == "RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"],
    }  # fmt: skip
    # Strimzi runs the Connect pods as <KafkaConnect name>-connect.
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{connect['metadata']['name']}-connect", "namespace": namespace}
    ]


def test_cdc_connect_uses_secrets_the_overlay_has(overlay: list[Doc]) -> None:
    spec = connect_of(overlay)["spec"]
    (trusted,) = spec["tls"]["trustedCertificates"]
    assert trusted["certificate"] in secret_keys(overlay, trusted["secretName"])
    password = spec["authentication"]["passwordSecret"]
    assert password["password"] in secret_keys(overlay, password["secretName"])
    assert find(overlay, "Secret", password["secretName"])["stringData"]["password"] == "change-me"
    # The same brokers as the reconciler's.
    assert spec["bootstrapServers"] == config_data(overlay)["KAFKA_BOOTSTRAP_SERVERS"]


def test_cdc_connect_builds_the_debezium_version_the_stack_runs() -> None:
    connect = connect_of(cdc_on_base())
    (plugin,) = connect["spec"]["build"]["plugins"]
    (artifact,) = plugin["artifacts"]
    stack_version = re.search(r"<debezium\.version>([^<]+)</debezium\.version>", DEBEZIUM_POM.read_text())
    assert stack_version is not None
    assert (artifact["type"], artifact["group"], artifact["artifact"]) == (
        "maven",
        "io.debezium",
        "debezium-connector-postgres",
    )
    assert artifact["version"] == stack_version[1]
    assert artifact["version"] in connect["spec"]["build"]["output"]["image"]


def test_cdc_reconciler_settings_match_the_connector(
    overlay: list[Doc], clean_env: pytest.MonkeyPatch
) -> None:
    settings = settings_of_pod(overlay, clean_env, f"{APP}-0")
    config = connector_of(overlay)["spec"]["config"]
    assert settings.cdc_enabled
    assert settings.cdc_topic_prefix == config["topic.prefix"]
    tables = {rf"{settings.cdc_schema}\.{table}" for table in settings.cdc_tables}
    assert set(config["table.include.list"].split(",")) == tables
    # Heartbeats alone must never look like a gap in the stream.
    assert int(config["heartbeat.interval.ms"]) / 1000 < settings.cdc_gap_s
    assert settings.cdc_topics[-1] == f"__debezium-heartbeat.{config['topic.prefix']}"


def test_cdc_connector_uses_what_grants_sql_creates() -> None:
    config = connector_of(cdc_on_base())["spec"]["config"]
    grants = GRANTS.read_text()
    assert f"CREATE PUBLICATION {config['publication.name']} FOR TABLE" in grants
    published = re.search(r"CREATE PUBLICATION \w+ FOR TABLE([^;]+);", grants)
    assert published is not None
    tables = {t.strip() for t in published[1].split(",")}
    heartbeat_table = re.fullmatch(r"UPDATE (\S+) SET .*", config["heartbeat.action.query"])
    assert heartbeat_table is not None and heartbeat_table[1] in tables
    assert {t.replace("\\.", ".") for t in config["table.include.list"].split(",")} < tables
    user = find(cdc_on_base(), "Secret", "keycloak-cdc-database")["stringData"]["username"]
    assert f"CREATE ROLE {user} LOGIN REPLICATION" in grants


# --- Dockerfile -----------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_builds_a_wheel_and_runs_it_unprivileged() -> None:
    instructions = dockerfile_instructions()
    stages = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    assert len(stages) == 2, "a builder stage and a runtime stage"
    builder, runtime = instructions[stages[0] : stages[1]], instructions[stages[1] :]
    assert builder[0][1].endswith("AS builder")
    assert any(op == "RUN" and "pip wheel" in arg for op, arg in builder)
    args = {
        arg.split("=", 1)[0]: arg.split("=", 1)[1] for op, arg in instructions if op == "ARG" and "=" in arg
    }
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", args["PYTHON_IMAGE"])
    assert all("[dev]" not in arg for _, arg in instructions), "no dev dependencies in the image"
    assert any(op == "RUN" and "--no-index" in arg for op, arg in runtime)
    users = [arg for op, arg in runtime if op == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = [json.loads(arg) for op, arg in runtime if op == "ENTRYPOINT"]
    assert entrypoint == ["reconciler"] and "reconciler" in scripts
    assert [json.loads(arg) for op, arg in runtime if op == "CMD"] == [["run"]]
    http_port = Settings.model_fields["http_port"].default
    assert [arg for op, arg in runtime if op == "EXPOSE"] == [str(http_port)]


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "deny everything, then allow what the build needs"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for op, arg in dockerfile_instructions():
        if op == "COPY" and not arg.startswith("--from"):
            copied.update(arg.split()[:-1])
    assert copied == allowed
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert readme in copied, "hatchling needs the readme named in pyproject.toml to build the wheel"


# --- docker-compose.yml ---------------------------------------------------------------------------------


def load_stack_module() -> ModuleType:
    """scripts/stack/stack.py: the local stack's constants (realm, topics, versions)."""
    spec = importlib.util.spec_from_file_location(
        "_stack_for_deploy_test", ROOT / "scripts" / "stack" / "stack.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stack() -> ModuleType:
    return load_stack_module()


@pytest.fixture(scope="module")
def compose() -> Doc:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _docker_compose_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def test_compose_file_matches_the_compose_spec_schema() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not _docker_compose_works(), reason="`docker compose` is not installed")
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def _bind_mounts(service: Doc) -> Iterator[tuple[Path, str]]:
    for volume in service.get("volumes", []):
        if isinstance(volume, dict) and volume.get("type") == "bind":
            yield (ROOT / volume["source"]).resolve(), volume["target"]


def test_compose_keycloak_uses_the_stack_realm_and_listener(compose: Doc, stack: ModuleType) -> None:
    keycloak = compose["services"]["keycloak"]
    assert keycloak["image"] == f"quay.io/keycloak/keycloak:{stack.KEYCLOAK_VERSION}"
    mounts = dict(_bind_mounts(keycloak))
    assert mounts[stack.REALM_FILE.resolve()] == f"/opt/keycloak/data/import/{stack.REALM_FILE.name}"
    assert mounts[stack.LISTENER_JAR.resolve()] == f"/opt/keycloak/providers/{stack.LISTENER_JAR.name}"
    command = keycloak["command"]
    assert command[0] == "start-dev"
    assert {"--import-realm", "--health-enabled=true"} <= set(command)
    options = dict(arg.split("=", 1) for arg in command if arg.startswith("--spi-events-listener--kafka--"))
    assert options["--spi-events-listener--kafka--bootstrap-servers"] == "kafka:29092"
    reconciler = compose["services"]["reconciler"]["environment"]
    assert options["--spi-events-listener--kafka--events-topic"] == reconciler["KAFKA_USER_EVENTS_TOPIC"]
    assert (
        options["--spi-events-listener--kafka--admin-events-topic"] == reconciler["KAFKA_ADMIN_EVENTS_TOPIC"]
    )


def test_compose_kafka_and_topics_match_the_stack(compose: Doc, stack: ModuleType) -> None:
    services = compose["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{stack.KAFKA_VERSION}"
    kafka_env = services["kafka"]["environment"]
    assert "kafka:29092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    script = "\n".join(services["kafka-topics"]["command"])
    created = {m[0]: int(m[1]) for m in re.findall(r"--topic (\S+) --partitions (\d+)", script)}
    assert created == stack.TOPICS
    reconciler = services["reconciler"]["environment"]
    assert {
        reconciler["KAFKA_USER_EVENTS_TOPIC"],
        reconciler["KAFKA_ADMIN_EVENTS_TOPIC"],
        reconciler["KAFKA_DEAD_LETTER_TOPIC"],
    } == set(stack.TOPICS)
    for dependant in ("keycloak", "reconciler"):
        condition = services[dependant]["depends_on"]["kafka-topics"]["condition"]
        assert condition == "service_completed_successfully"


def test_compose_reconciler_settings_match_the_stack(
    compose: Doc, stack: ModuleType, clean_env: pytest.MonkeyPatch
) -> None:
    service = compose["services"]["reconciler"]
    env = {k: str(v) for k, v in service["environment"].items()}
    assert set(env) <= ALL_SETTINGS, f"unknown settings: {sorted(set(env) - ALL_SETTINGS)}"
    realm = json.loads(stack.REALM_FILE.read_text())
    (client,) = [c for c in realm["clients"] if c["clientId"] == env["KEYCLOAK_CLIENT_ID"]]
    assert env["KEYCLOAK_REALM"] == realm["realm"] == stack.REALM
    assert env["KEYCLOAK_CLIENT_ID"] == Settings.model_fields["keycloak_client_id"].default
    assert env["KEYCLOAK_CLIENT_SECRET"] == client["secret"]
    assert client["serviceAccountsEnabled"] is True and client["publicClient"] is False
    assert env["KEYCLOAK_URL"] == "http://keycloak:8080"
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:29092"
    assert env["MONGODB_URI"].startswith("mongodb://mongodb:27017/")
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.http_host == "0.0.0.0", "the published port needs the server on every interface"
    assert service["build"]["dockerfile"] == "Dockerfile"
    assert service["stop_grace_period"] == "60s"


# --- keycloak-spi-config/README.md ------------------------------------------------------------------------


def test_spi_readme_lists_the_event_types_the_reconciler_accepts() -> None:
    readme = ROOT / "keycloak-spi-config" / "README.md"
    text = readme.read_text()
    (events,) = re.findall(r"^KAFKA_EVENTS=(\S+)$", text, flags=re.MULTILINE)
    assert events.split(",") == sorted(ACCEPTED_USER_EVENT_TYPES)
    for link in re.findall(r"\]\(((?:realm|kafka-listener)/[^)#]*)\)", text):
        assert (readme.parent / link).exists(), link
