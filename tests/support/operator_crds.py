"""The Prometheus Operator's CRD schemas, from the operator's Go module (it ships them in
example/prometheus-operator-crd/), downloaded once with `go mod download` into the ignored .cache/."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.support.tools import require

MODULE = "github.com/prometheus-operator/prometheus-operator"
VERSION = "v0.85.0"
GROUP = "monitoring.coreos.com"
ROOT = Path(__file__).resolve().parents[2]
MOD_CACHE = ROOT / ".cache" / "go-mod"


@functools.cache
def crd_directory() -> Path:
    # -modcacherw: Go makes its module cache read-only otherwise, and `rm -rf .cache` would fail.
    env = {**os.environ, "GOMODCACHE": str(MOD_CACHE), "GOFLAGS": "-modcacherw"}
    result = subprocess.run(
        [require("go"), "mod", "download", "-json", f"{MODULE}@{VERSION}"],
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


def _strict(schema: Any) -> Any:
    """Refuse unknown fields as the API server's strict field validation does: every object schema with
    properties (and no x-kubernetes-preserve-unknown-fields) gets additionalProperties: false."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


class _CrdLoader(yaml.SafeLoader):
    """PyYAML's YAML 1.1 reads a bare `=` (an enum value in the CRDs) as a special tag it cannot build."""


_CrdLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@functools.cache
def schema(api_version: str, kind: str) -> dict[str, Any]:
    """The strict openAPIV3Schema of a kind (its CRD file is named after the plural, as kubebuilder does)."""
    path = crd_directory() / f"{GROUP}_{kind.lower()}s.yaml"
    crd = yaml.load(path.read_text(), Loader=_CrdLoader)
    assert crd["spec"]["names"]["kind"] == kind, path
    (version,) = [v for v in crd["spec"]["versions"] if f"{GROUP}/{v['name']}" == api_version]
    strict: dict[str, Any] = _strict(version["schema"]["openAPIV3Schema"])
    return strict


def validate(doc: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when `doc` does not match its CRD."""
    jsonschema.Draft7Validator(schema(doc["apiVersion"], doc["kind"])).validate(doc)
