"""The operators' CRD schemas, to check deploy/'s custom resources as the API server would, each from its
project's own published artefact, fetched once by a package client into the ignored .cache/:

- the Prometheus Operator's (PodMonitor, PrometheusRule): its Go module ships them in
  example/prometheus-operator-crd/ (`go mod download`);
- Strimzi's (KafkaConnect, KafkaConnector): Strimzi's build generates them into the test jar of its
  `io.strimzi:api` Maven artifact, crds/<version>/NNN-Crd-<kind>.yaml (`mvn dependency:copy`).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.support.tools import require

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"

PROMETHEUS_MODULE = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_VERSION = "v0.85.0"
PROMETHEUS_GROUP = "monitoring.coreos.com"
MOD_CACHE = CACHE / "go-mod"

STRIMZI_ARTIFACT = "io.strimzi:api"
STRIMZI_VERSION = "0.51.0"
STRIMZI_GROUP = "kafka.strimzi.io"

GROUPS = (PROMETHEUS_GROUP, STRIMZI_GROUP)


def group_of(doc: dict[str, Any]) -> str:
    return str(doc["apiVersion"]).rpartition("/")[0]


@functools.cache
def crd_directory() -> Path:
    """The Prometheus Operator's CRD folder."""
    # -modcacherw: Go makes its module cache read-only otherwise, and `rm -rf .cache` would fail.
    env = {**os.environ, "GOMODCACHE": str(MOD_CACHE), "GOFLAGS": "-modcacherw"}
    result = subprocess.run(
        [require("go"), "mod", "download", "-json", f"{PROMETHEUS_MODULE}@{PROMETHEUS_VERSION}"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
        cwd=ROOT,
    )
    info = json.loads(result.stdout or "{}")
    assert result.returncode == 0 and "Error" not in info, result.stdout + result.stderr
    return Path(info["Dir"]) / "example" / "prometheus-operator-crd"


@functools.cache
def strimzi_crd_directory() -> Path:
    """Strimzi's CRD folder (crds/, one subfolder per API version), unpacked from the api test jar."""
    target = CACHE / f"strimzi-api-{STRIMZI_VERSION}"
    marker = target / ".complete"
    if not marker.exists():
        jar = target / f"api-{STRIMZI_VERSION}-tests.jar"
        result = subprocess.run(
            [
                require("mvn"),
                "-q",
                "-B",
                "dependency:copy",
                f"-Dartifact={STRIMZI_ARTIFACT}:{STRIMZI_VERSION}:jar:tests",
                f"-DoutputDirectory={target}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            cwd=ROOT,
        )
        assert result.returncode == 0 and jar.exists(), result.stdout + result.stderr
        with zipfile.ZipFile(jar) as archive:
            archive.extractall(target, [n for n in archive.namelist() if n.startswith("crds/")])
        marker.touch()
    return target / "crds"


def _strict(schema: Any, *, in_combinator: bool = False) -> Any:
    """Refuse unknown fields as the API server's strict field validation does: every object schema with
    properties (and no x-kubernetes-preserve-unknown-fields) gets additionalProperties: false. Not inside
    oneOf/anyOf/allOf/not: their branches only add value checks to the fields the object already declares."""
    if isinstance(schema, dict):
        out = {
            k: _strict(v, in_combinator=in_combinator or k in ("oneOf", "anyOf", "allOf", "not"))
            for k, v in schema.items()
        }
        if (
            not in_combinator
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item, in_combinator=in_combinator) for item in schema]
    return schema


class _CrdLoader(yaml.SafeLoader):
    """PyYAML's YAML 1.1 reads a bare `=` (an enum value in the CRDs) as a special tag it cannot build."""


_CrdLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def crd_file(api_version: str, kind: str) -> Path:
    """The CRD file of a kind: kubebuilder names it after the plural; Strimzi after the kind, per version."""
    group, _, version = api_version.rpartition("/")
    if group == PROMETHEUS_GROUP:
        return crd_directory() / f"{group}_{kind.lower()}s.yaml"
    assert group == STRIMZI_GROUP, f"no CRDs known for {api_version}"
    (path,) = (strimzi_crd_directory() / version).glob(f"*-Crd-{kind.lower()}.yaml")
    return path


@functools.cache
def schema(api_version: str, kind: str) -> dict[str, Any]:
    """The strict openAPIV3Schema of a kind at an API version."""
    path = crd_file(api_version, kind)
    crd = yaml.load(path.read_text(), Loader=_CrdLoader)
    assert crd["spec"]["names"]["kind"] == kind, path
    group = crd["spec"]["group"]
    (version,) = [v for v in crd["spec"]["versions"] if f"{group}/{v['name']}" == api_version]
    assert version["served"], f"{api_version} {kind} is not served by {path.name}"
    strict: dict[str, Any] = _strict(version["schema"]["openAPIV3Schema"])
    return strict


def validate(doc: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when `doc` does not match its CRD."""
    jsonschema.Draft7Validator(schema(doc["apiVersion"], doc["kind"])).validate(doc)
