"""Checks for what a user deploys: the Helm chart, the kustomize overlays and the image definitions.

Run by hack/checks/deploy.sh inside a virtual environment that holds real Helm (the Helm 4 Go SDK
through helm-python-sdk), real kustomize (inside kubectl), the Kubernetes JSON schemas
(kubernetes-validate), actionlint and ShellCheck. The schemas of the third-party custom resources
(GKE Ingress objects, cert-manager, KEDA, prometheus-operator) are checked in beside this file
(crd-schemas/, see generate.sh there). What the operator builds is rendered by `mutr-operator render`
and checked like the chart. Nothing here contacts a cluster or the network.

Each check records a pass or a failure with a reason; the process exits non-zero on any failure.
A self-test first feeds known-bad objects to the policy checks, so none of them can pass vacuously.
"""

from __future__ import annotations

import argparse
import copy
import filecmp
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "mutr"
MANIFESTS = ROOT / "manifests"
CRDS = ROOT / "crds"
OPERATOR_README = ROOT / "operator" / "README.md"
DOCKER = ROOT / "docker"
WORKFLOWS = ROOT / ".github" / "workflows"
RELEASE = ROOT / "hack" / "release"
THIRD_PARTY_SCHEMAS = Path(__file__).resolve().parent / "crd-schemas"


def chart_min_kube_version() -> str:
    """The oldest Kubernetes the chart claims (Chart.yaml kubeVersion ">=X.Y...")."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    m = re.match(r"^>=\s*v?(\d+)\.(\d+)", str(chart.get("kubeVersion") or ""))
    if not m:
        raise SystemExit("charts/mutr/Chart.yaml: kubeVersion must start with >=X.Y")
    return f"{m.group(1)}.{m.group(2)}"


# Kubernetes versions the output is validated against: the oldest the chart supports (Chart.yaml
# kubeVersion) and the newest the bundled schemas know.
KUBE_VERSIONS = (
    chart_min_kube_version(),
    kubernetes_validate.utils.major_minor(kubernetes_validate.utils.latest_version()),
)

POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
SECRETISH_KEY = re.compile(r"(?i)(pass(word|wd)?|secret|token|api[-_]?key|credential|private[-_]?key|auth[-_]?string)")
# Keys whose values name or point at a secret rather than hold one.
REFERENCE_KEY = re.compile(
    r"(?i)(secretname|existingsecret|secretref|secretkeyref|^key$|^name$|generate\w*|"
    r"gcpserviceaccount|serviceaccount\w*|\w*(path|file|dir|mount\w*)$)"
)
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)


class Report:
    """Collects results; every check adds at least one."""

    def __init__(self) -> None:
        self.passed = 0
        self.failures: list[str] = []

    def ok(self, what: str) -> None:
        self.passed += 1
        print(f"  ok    {what}")

    def fail(self, what: str, why: str) -> None:
        self.failures.append(f"{what}: {why}")
        print(f"  FAIL  {what}: {why}")

    def check(self, what: str, problems: list[str]) -> None:
        if problems:
            self.fail(
                what, "; ".join(problems[:20]) + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else "")
            )
        else:
            self.ok(what)


def section(title: str) -> None:
    print(f"\n== {title}")


def load_all(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def obj_name(o: dict[str, Any]) -> str:
    meta = o.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{o.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


# --------------------------------------------------------------------------- rendering


def render_chart(
    values_files: list[Path], overrides: dict[str, Any] | None = None, *, release: str = "mutr", namespace: str = "mutr"
) -> list[dict[str, Any]]:
    """`helm template` through the Helm SDK: the chart's CRDs plus its rendered templates."""
    import helm_python as helm

    chart = helm.Chart.load(CHART)
    values: dict[str, Any] = {}
    for f in values_files:
        values = deep_merge(values, yaml.safe_load(f.read_text()) or {})
    if overrides:
        values = deep_merge(values, overrides)
    chart.validate_schema(values)
    rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
    docs: list[dict[str, Any]] = []
    for crd in chart.crds:
        docs.extend(load_all(crd["data"]))
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(load_all(rendered[path]))
    return docs


def render_notes(values_files: list[Path]) -> str:
    import helm_python as helm

    chart = helm.Chart.load(CHART)
    values: dict[str, Any] = {}
    for f in values_files:
        values = deep_merge(values, yaml.safe_load(f.read_text()) or {})
    rendered = chart.render(values, name="mutr", namespace="mutr", is_install=True)
    return next((v for k, v in rendered.items() if k.endswith("NOTES.txt")), "")


def kustomize_build(overlay: Path, kubectl: str) -> list[dict[str, Any]]:
    out = subprocess.run([kubectl, "kustomize", str(overlay)], check=True, capture_output=True, text=True)
    return load_all(out.stdout)


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# --------------------------------------------------------------------------- schema validation


def crd_schemas(docs: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema for every CRD among docs."""
    out = {}
    for d in docs:
        if d.get("kind") != "CustomResourceDefinition":
            continue
        spec = d["spec"]
        for v in spec["versions"]:
            out[(f"{spec['group']}/{v['name']}", spec["names"]["kind"])] = v["schema"]["openAPIV3Schema"]
    return out


def strict_crd_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's structural schema, closed: `kubectl apply` validates fields strictly (the API server
    rejects unknown fields), so every object schema that lists its properties and does not preserve
    unknown fields gets additionalProperties: false."""

    def close(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: close(v) for k, v in node.items()}
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            return node
        if isinstance(node, list):
            return [close(v) for v in node]
        return node

    root = copy.deepcopy(schema)
    props = root.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props.setdefault("metadata", {"type": "object"})
    return close(root)


def load_cel() -> Any:
    """The compiled CEL evaluator of the common-expression-language wheel. Its package __init__ also
    imports a command-line front end whose dependencies are not installed, so the extension module
    is loaded on its own."""
    import importlib.util

    spec = importlib.util.find_spec("cel")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the common-expression-language package is not installed")
    so = next(Path(spec.submodule_search_locations[0]).glob("cel.*.so"))
    ext_spec = importlib.util.spec_from_file_location("cel.cel", so)
    module = importlib.util.module_from_spec(ext_spec)
    ext_spec.loader.exec_module(module)
    return module


_CEL: Any = None


def cel_problems(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Evaluates the x-kubernetes-validations rules of a CRD schema against an object, as the API
    server does on create (transition rules, which need oldSelf, do not apply to a create)."""
    global _CEL
    if _CEL is None:
        _CEL = load_cel()
    problems = []
    for rule in schema.get("x-kubernetes-validations") or []:
        if "oldSelf" in rule["rule"]:
            continue
        try:
            ok = _CEL.evaluate(rule["rule"], {"self": value})
        except Exception as e:  # noqa: BLE001 - an unevaluable rule is a finding too
            problems.append(f"{path or '<root>'}: rule {rule['rule']!r} could not be evaluated: {e}")
            continue
        if ok is not True:
            problems.append(f"{path or '<root>'}: {rule.get('message') or rule['rule']}")
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                problems += cel_problems(sub, value[key], f"{path}.{key}" if path else key)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, v in value.items():
                if key not in (schema.get("properties") or {}):
                    problems += cel_problems(extra, v, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problems += cel_problems(schema["items"], item, f"{path}[{i}]")
    return problems


_THIRD_PARTY: dict[tuple[str, str], Any] | None = None


def third_party_validators() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) -> a validator for each checked-in third-party schema (every object closed)."""
    global _THIRD_PARTY
    if _THIRD_PARTY is None:
        _THIRD_PARTY = {}
        for path in sorted(THIRD_PARTY_SCHEMAS.glob("*_*_*.json")):  # group_version_Kind.json
            schema = yaml.safe_load(path.read_text())
            root = schema["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
            key = (root["properties"]["apiVersion"]["const"], root["properties"]["kind"]["const"])
            _THIRD_PARTY[key] = jsonschema.Draft7Validator(schema)
    return _THIRD_PARTY


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """The object as the API server stores it: every absent property that has a `default` filled in,
    at every level (structural schema defaulting)."""
    value = copy.deepcopy(value)
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = with_defaults(sub, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [with_defaults(schema["items"], v) for v in value]
    return value


def validate_objects(docs: list[dict[str, Any]], crds: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Strict schema validation of every object: built-in kinds against the Kubernetes schemas of
    each version in KUBE_VERSIONS, our custom resources against their CRD's structural schema, and
    third-party custom resources against the checked-in schemas (crd-schemas/)."""
    problems = []
    third_party = third_party_validators()
    for d in docs:
        key = (d.get("apiVersion"), d.get("kind"))
        if key in third_party:
            for e in sorted(third_party[key].iter_errors(d), key=lambda e: list(e.absolute_path)):
                problems.append(f"{obj_name(d)}: {'.'.join(map(str, e.absolute_path))}: {e.message}")
            continue
        if key in crds:
            schema = strict_crd_schema(crds[key])
            try:
                jsonschema.Draft7Validator(schema).validate(d)
            except jsonschema.ValidationError as e:
                problems.append(f"{obj_name(d)}: {'.'.join(map(str, e.absolute_path))}: {e.message}")
            # The API server applies the schema's defaults before it evaluates the rules.
            problems += [f"{obj_name(d)}: {p}" for p in cel_problems(crds[key], with_defaults(crds[key], d))]
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{obj_name(d)} (k8s {e.version}): {'.'.join(map(str, e.path))}: {e.message}")
            except kubernetes_validate.utils.SchemaNotFoundError:
                problems.append(
                    f"{obj_name(d)}: no schema for {d.get('apiVersion')} {d.get('kind')} in Kubernetes {version}"
                )
                break
    return problems


# --------------------------------------------------------------------------- policies


def pod_specs(docs: Iterable[dict[str, Any]]) -> Iterable[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, pod template metadata, pod spec) of every workload."""
    for d in docs:
        kind = d.get("kind")
        if kind in POD_TEMPLATE_KINDS:
            tpl = d["spec"]["template"]
            yield obj_name(d), tpl.get("metadata") or {}, tpl["spec"]
        elif kind == "CronJob":
            tpl = d["spec"]["jobTemplate"]["spec"]["template"]
            yield obj_name(d), tpl.get("metadata") or {}, tpl["spec"]
        elif kind == "Pod":
            yield obj_name(d), d.get("metadata") or {}, d["spec"]


def security_problems(docs: Iterable[dict[str, Any]]) -> list[str]:
    """Every container: non-root, read-only root filesystem, no privilege escalation, no
    capabilities, RuntimeDefault seccomp, resources, a writable /tmp volume, a pinned image."""
    problems = []
    for name, _meta, spec in pod_specs(docs):
        psc = spec.get("securityContext") or {}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                problems.append(f"{name}: {flag} is set")
        for vol in spec.get("volumes") or []:
            if "hostPath" in vol:
                problems.append(f"{name}: hostPath volume {vol.get('name')}")
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        containers = [("init", c) for c in spec.get("initContainers") or []] + [
            ("", c) for c in spec.get("containers") or []
        ]
        if not containers:
            problems.append(f"{name}: no containers")
        for kind, c in containers:
            cname = f"{name} {kind + ' ' if kind else ''}container {c.get('name')}"
            csc = c.get("securityContext") or {}
            if not (csc.get("runAsNonRoot") is True or (psc.get("runAsNonRoot") is True and "runAsNonRoot" not in csc)):
                problems.append(f"{cname}: runAsNonRoot is not true")
            uid = csc.get("runAsUser", psc.get("runAsUser"))
            if uid == 0:
                problems.append(f"{cname}: runAsUser is 0")
            if csc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cname}: readOnlyRootFilesystem is not true")
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cname}: allowPrivilegeEscalation is not false")
            if csc.get("privileged"):
                problems.append(f"{cname}: privileged")
            drop = [str(x).upper() for x in ((csc.get("capabilities") or {}).get("drop") or [])]
            if "ALL" not in drop:
                problems.append(f"{cname}: capabilities.drop lacks ALL")
            if (csc.get("capabilities") or {}).get("add"):
                problems.append(f"{cname}: adds capabilities")
            seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                problems.append(f"{cname}: seccompProfile is {seccomp!r}, not RuntimeDefault")
            res = c.get("resources") or {}
            for part, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
                for k in keys:
                    if not (res.get(part) or {}).get(k):
                        problems.append(f"{cname}: resources.{part}.{k} is not set")
            image = str(c.get("image") or "")
            if not image:
                problems.append(f"{cname}: no image")
            elif "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
                problems.append(f"{cname}: image {image!r} is not pinned to a tag or digest")
            tmp = [m for m in c.get("volumeMounts") or [] if m.get("mountPath") == "/tmp"]
            if not tmp:
                problems.append(f"{cname}: no writable /tmp volume (the root filesystem is read-only)")
            elif tmp[0]["name"] in volumes and "emptyDir" not in volumes[tmp[0]["name"]]:
                problems.append(f"{cname}: /tmp is not an emptyDir")
    return problems


def secretish(key: str) -> bool:
    return bool(SECRETISH_KEY.search(key)) and not REFERENCE_KEY.search(key)


def literal_secret_problems(where: str, data: Any, path: str = "") -> list[str]:
    """Committed YAML: no Secret with data, no password-like key with a literal value, no URL with
    an embedded password, no env var with a secret-like name and a literal value."""
    problems = []
    if isinstance(data, dict):
        if data.get("kind") == "Secret" and (data.get("data") or data.get("stringData")):
            problems.append(f"{where}: Secret {((data.get('metadata') or {}).get('name'))} carries literal data")
        if "name" in data and "value" in data and isinstance(data.get("name"), str):
            value = data["value"]
            if SECRETISH_KEY.search(data["name"]) and value not in (None, ""):
                problems.append(f"{where}: env {data['name']} has a literal value")
        for k, v in data.items():
            p = f"{path}.{k}" if path else str(k)
            if isinstance(v, (str, int, float)) and not isinstance(v, bool) and secretish(str(k)) and str(v) != "":
                problems.append(f"{where}: {p} holds a literal value")
            problems.extend(literal_secret_problems(where, v, p))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            problems.extend(literal_secret_problems(where, v, f"{path}[{i}]"))
    elif isinstance(data, str) and URL_WITH_PASSWORD.search(data):
        problems.append(f"{where}: {path} is a URL with an embedded password")
    return problems


def rbac_rules(docs: list[dict[str, Any]], service_account: str) -> set[tuple[str, str, str, str]]:
    """(scope, apiGroup, resource, verb) granted to the given ServiceAccount name through bindings."""
    roles = {
        (d["kind"], (d["metadata"].get("namespace") or ""), d["metadata"]["name"]): d
        for d in docs
        if d.get("kind") in ("ClusterRole", "Role")
    }
    out = set()
    for b in docs:
        if b.get("kind") not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if not any(
            s.get("kind") == "ServiceAccount" and s.get("name") == service_account for s in b.get("subjects") or []
        ):
            continue
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace") or "" if ref["kind"] == "Role" else ""
        role = roles.get((ref["kind"], ns, ref["name"]))
        if role is None:
            out.add(("missing", ref["kind"], ref["name"], ""))
            continue
        if b["kind"] == "ClusterRoleBinding":
            scope = "cluster"
        else:
            own = any(
                s.get("kind") == "ServiceAccount"
                and s.get("name") == service_account
                and s.get("namespace") == b["metadata"].get("namespace")
                for s in b.get("subjects") or []
            )
            scope = "namespace" if own else "watched"
        for rule in role.get("rules") or []:
            for g in rule.get("apiGroups") or [""]:
                for r in rule.get("resources") or []:
                    for v in rule.get("verbs") or []:
                        out.add((scope, g, r, v))
    return out


def readme_rbac(path: Path) -> set[tuple[str, str, str, str]] | None:
    """The RBAC list of operator/README.md: the table (or YAML rules) under a heading that says RBAC.
    Columns are found by name: API group, resource(s), verb(s), and optionally scope."""
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"^#+\s.*\bRBAC\b", line)), None)
    if start is None:
        return None
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    body = []
    for line in lines[start + 1 :]:
        m = re.match(r"^(#+)\s", line)
        if m and len(m.group(1)) <= level:
            break
        body.append(line)
    out: set[tuple[str, str, str, str]] = set()

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    def words(cell: str) -> list[str]:
        cell = cell.replace("`", "").replace('"', "")
        if re.fullmatch(r"\s*(\(?core\)?|\"\"|''|-|—)?\s*", cell):
            return [""]
        return [
            w.strip() for w in re.split(r"[,\s]+", cell) if w.strip() and w.strip() not in ('""', "(core)", "core")
        ] or [""]

    header = None
    for line in body:
        if not line.strip().startswith("|"):
            header = None if not line.strip() else header
            continue
        row = cells(line)
        if header is None:
            header = [h.lower() for h in row]
            continue
        if all(re.fullmatch(r":?-+:?", c) for c in row):
            continue
        col = {
            name: next((i for i, h in enumerate(header) if name in h), None)
            for name in ("group", "resource", "verb", "scope")
        }
        if col["group"] is None or col["resource"] is None or col["verb"] is None:
            continue
        scope_cell = row[col["scope"]].lower() if col["scope"] is not None and col["scope"] < len(row) else "cluster"
        scope = (
            "namespace"
            if ("namespace" in scope_cell or "own" in scope_cell or scope_cell.startswith("role"))
            else "cluster"
        )
        group_cell = row[col["group"]].replace("`", "").strip()
        groups = (
            [""]
            if group_cell.lower() in ("", '""', "core", "(core)", "-", "—", 'core ("")', '"" (core)')
            else words(group_cell)
        )
        for g in groups:
            for r in words(row[col["resource"]]):
                for v in words(row[col["verb"]]):
                    out.add((scope, g, r, v))
    return out or None


# --------------------------------------------------------------------------- self-test


def self_test(report: Report) -> None:
    """The policy checks must catch what they are for: feed each a known-bad object."""
    section("self-test: the checks catch known-bad objects")
    good_pod = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "c",
                "image": "x:1",
                "securityContext": {
                    "readOnlyRootFilesystem": True,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
                "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}, "limits": {"memory": "1Mi"}},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }

    def deployment(spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "t"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": spec},
            },
        }

    report.check("self-test: a compliant pod passes the security policy", security_problems([deployment(good_pod)]))
    breakages: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
        ("runAsNonRoot missing", lambda s: s["securityContext"].pop("runAsNonRoot")),
        (
            "writable root filesystem",
            lambda s: s["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False),
        ),
        ("privilege escalation", lambda s: s["containers"][0]["securityContext"].pop("allowPrivilegeEscalation")),
        ("capabilities kept", lambda s: s["containers"][0]["securityContext"].pop("capabilities")),
        ("no seccomp profile", lambda s: s["securityContext"].pop("seccompProfile")),
        ("no resources", lambda s: s["containers"][0].pop("resources")),
        ("no /tmp volume", lambda s: s["containers"][0].pop("volumeMounts")),
        ("unpinned image", lambda s: s["containers"][0].update(image="x:latest")),
        (
            "root init container",
            lambda s: s.update(initContainers=[dict(copy.deepcopy(s["containers"][0]), securityContext={})]),
        ),
    ]
    for what, breaker in breakages:
        spec = copy.deepcopy(good_pod)
        breaker(spec)
        if security_problems([deployment(spec)]):
            report.ok(f"self-test: security policy rejects {what}")
        else:
            report.fail(f"self-test: security policy rejects {what}", "it passed")

    bad_yaml = [
        (
            "a Secret with data",
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"x": "y"}},
        ),
        ("a literal password value", {"postgresql": {"auth": {"password": "hunter2"}}}),
        ("a URL with a password", {"env": [{"name": "DATABASE_URL", "value": "postgres://u:p@h/db"}]}),
        ("a literal secret env var", {"env": [{"name": "MUTR_JWT_SECRET", "value": "abc"}]}),
    ]
    for what, data in bad_yaml:
        if literal_secret_problems("self-test", data):
            report.ok(f"self-test: secret scan rejects {what}")
        else:
            report.fail(f"self-test: secret scan rejects {what}", "it passed")
    allowed = {
        "database": {"secretName": "mutr-database", "key": "url"},
        "existingSecret": "",
        "env": [{"name": "MUTR_JWT_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
    }
    report.check("self-test: secret scan allows references to Secrets", literal_secret_problems("self-test", allowed))


# --------------------------------------------------------------------------- the checks


def check_crds(report: Report) -> dict[tuple[str, str], dict[str, Any]]:
    section("CRDs: crds/ is the source; the chart and the kustomize base carry byte-identical copies")
    sources = sorted(p.name for p in CRDS.glob("*.yaml"))
    if "mutrdeployments.mutr.io.yaml" not in sources:
        report.fail("crds/mutrdeployments.mutr.io.yaml exists", "missing: run `make crds`")
        return {}
    report.ok("crds/mutrdeployments.mutr.io.yaml exists")
    for copy_dir in (CHART / "crds", MANIFESTS / "base" / "crds"):
        rel = copy_dir.relative_to(ROOT)
        copies = sorted(p.name for p in copy_dir.glob("*.yaml"))
        problems = []
        if copies != sources:
            problems.append(f"files differ: crds/ has {sources}, {rel}/ has {copies}")
        for name in set(sources) & set(copies):
            if not filecmp.cmp(CRDS / name, copy_dir / name, shallow=False):
                problems.append(f"{rel}/{name} differs from crds/{name}")
        if problems:
            problems.append("fix: hack/checks/deploy.sh --sync-crds")
        report.check(f"{rel}/ == crds/", problems)
    docs = [d for p in CRDS.glob("*.yaml") for d in load_all(p.read_text())]
    report.check("crds/ validate as apiextensions.k8s.io/v1", validate_objects(docs, {}))
    schemas = crd_schemas(docs)
    md = schemas.get(("mutr.io/v1alpha1", "MutrDeployment"))
    problems = []
    if md is None:
        problems.append("no mutr.io/v1alpha1 MutrDeployment in crds/")
    else:
        crd = next(d for d in docs if d["spec"]["names"]["kind"] == "MutrDeployment")
        if crd["spec"].get("scope") != "Namespaced":
            problems.append("scope is not Namespaced")
        if "mutr" not in (crd["spec"]["names"].get("shortNames") or []):
            problems.append("short name mutr missing")
        v = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
        if "status" not in (v.get("subresources") or {}):
            problems.append("no status subresource")
    report.check("the MutrDeployment CRD: mutr.io/v1alpha1, namespaced, short name mutr, status subresource", problems)
    return schemas


def check_workloads(
    report: Report,
    label: str,
    docs: list[dict[str, Any]],
    crds: dict[tuple[str, str], dict[str, Any]],
    *,
    operator_replicas_min: int,
    self_contained: bool,
) -> None:
    report.check(
        f"{label}: every object validates (strict) against Kubernetes {' and '.join(KUBE_VERSIONS)} or its CRD",
        validate_objects(docs, crds),
    )
    report.check(
        f"{label}: every container is non-root, read-only, unprivileged, seccomp'd, with resources and /tmp",
        security_problems(docs),
    )
    names = [obj_name(d) for d in docs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    report.check(f"{label}: object names are unique", [f"duplicate {n}" for n in dupes])

    problems = []
    pods = list(pod_specs(docs))
    for d in docs:
        if d.get("kind") in POD_TEMPLATE_KINDS and "selector" in d["spec"]:
            sel = d["spec"]["selector"].get("matchLabels") or {}
            labels = d["spec"]["template"]["metadata"].get("labels") or {}
            if not sel or any(labels.get(k) != v for k, v in sel.items()):
                problems.append(f"{obj_name(d)}: selector {sel} does not match its pod labels")
        if d.get("kind") == "NetworkPolicy":
            sel = (d["spec"].get("podSelector") or {}).get("matchLabels") or {}
            if not any(all((m.get("labels") or {}).get(k) == v for k, v in sel.items()) for _, m, _ in pods):
                problems.append(f"{obj_name(d)}: podSelector {sel} matches no pod template")
        if d.get("kind") == "Service" and d["spec"].get("selector"):
            sel = d["spec"]["selector"]
            matching = [
                (n, m, s) for n, m, s in pods if all((m.get("labels") or {}).get(k) == v for k, v in sel.items())
            ]
            if not matching:
                problems.append(f"{obj_name(d)}: selector {sel} matches no pod template")
            for port in d["spec"].get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                if (
                    isinstance(target, str)
                    and matching
                    and not any(
                        p.get("name") == target
                        for _, _, s in matching
                        for c in s.get("containers") or []
                        for p in c.get("ports") or []
                    )
                ):
                    problems.append(f"{obj_name(d)}: targetPort {target} is no container port name")
    report.check(f"{label}: selectors match pod labels; Services reach named container ports", problems)

    secret_names = {d["metadata"]["name"] for d in docs if d.get("kind") == "Secret"}
    problems = []
    for name, _m, spec in pods:
        refs = []
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef") or {}
                if ref:
                    refs.append(ref.get("name"))
        for v in spec.get("volumes") or []:
            if "secret" in v:
                refs.append(v["secret"].get("secretName"))
        problems += [
            f"{name}: references Secret {r} that this rendering does not create" for r in refs if r not in secret_names
        ]
    report.check(f"{label}: every Secret a pod reads is created alongside it", problems)

    if self_contained:
        secrets = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret"}
        problems = []
        for md in (d for d in docs if d.get("kind") == "MutrDeployment"):
            refs = [
                (f"spec.{k}", md["spec"][k]["name"], md["spec"][k].get("key", "url")) for k in ("database", "redis")
            ]
            for part in ("api", "aiServer"):
                for e in md["spec"][part].get("env") or []:
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        refs.append((f"spec.{part}.env {e['name']}", ref["name"], ref["key"]))
            for where, name, key in refs:
                if name not in secrets:
                    problems.append(f"{obj_name(md)} {where}: Secret {name} is not created")
                elif key not in (secrets[name].get("data") or {}):
                    problems.append(f"{obj_name(md)} {where}: Secret {name} has no key {key}")
        report.check(
            f"{label}: the MutrDeployment's Secret references (URLs, JWT key) resolve to created keys", problems
        )

    ops = [
        d
        for d in docs
        if d.get("kind") == "Deployment"
        and (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "operator"
    ]
    problems = []
    if len(ops) != 1:
        problems.append(f"expected one operator Deployment, found {len(ops)}")
    else:
        op = ops[0]
        if op["spec"].get("replicas", 1) < operator_replicas_min:
            problems.append(f"replicas {op['spec'].get('replicas', 1)} < {operator_replicas_min}")
        c = op["spec"]["template"]["spec"]["containers"][0]
        ports = {p.get("containerPort") for p in c.get("ports") or []}
        if 8080 not in ports:
            problems.append("container port 8080 (/metrics, /healthz) missing")
        for probe in ("livenessProbe", "readinessProbe"):
            if ((c.get(probe) or {}).get("httpGet") or {}).get("path") != "/healthz":
                problems.append(f"{probe} is not GET /healthz")
        env = {e["name"] for e in c.get("env") or []}
        for needed in ("MUTR_OPERATOR_ADDR", "POD_NAME", "POD_NAMESPACE"):
            if needed not in env:
                problems.append(f"env {needed} missing")
        sa = op["spec"]["template"]["spec"].get("serviceAccountName")
        if not any(d.get("kind") == "ServiceAccount" and d["metadata"]["name"] == sa for d in docs):
            problems.append(f"ServiceAccount {sa} is not created")
    report.check(
        f"{label}: the operator Deployment (replicas >= {operator_replicas_min}, port 8080, /healthz probes, identity env)",
        problems,
    )


def operator_rbac(docs: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    op = next(
        d
        for d in docs
        if d.get("kind") == "Deployment"
        and (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "operator"
    )
    return rbac_rules(docs, op["spec"]["template"]["spec"]["serviceAccountName"])


def fmt_rules(rules: Iterable[tuple[str, str, str, str]]) -> list[str]:
    return [f"{s} {g or 'core'}/{r} {v}" for s, g, r, v in sorted(rules)]


def check_rbac(report: Report, renderings: dict[str, list[dict[str, Any]]]) -> None:
    section("RBAC: the operator gets exactly what operator/README.md lists")
    expected = readme_rbac(OPERATOR_README)
    if expected is None:
        report.fail(
            "operator/README.md has an RBAC section with a table (API group | resources | verbs [| scope])",
            f"none found in {OPERATOR_README.relative_to(ROOT)}",
        )
        return
    report.ok(f"operator/README.md lists {len(expected)} (scope, group, resource, verb) grants")
    for label, docs in renderings.items():
        got = operator_rbac(docs)
        if any(s == "watched" for s, *_ in got):
            # Watching one namespace: the cluster-wide rules become a Role there.
            got = {("cluster" if s == "watched" else s, g, r, v) for s, g, r, v in got}
        problems = [f"granted but not in the README: {r}" for r in fmt_rules(got - expected)]
        problems += [f"in the README but not granted: {r}" for r in fmt_rules(expected - got)]
        report.check(f"{label}: operator RBAC == operator/README.md", problems)
        wild = [r for r in got if "*" in r]
        report.check(f"{label}: no wildcard grants", [f"wildcard: {r}" for r in fmt_rules(wild)])


def check_committed_yaml(report: Report) -> None:
    section("committed YAML: no Secret with data, no literal credentials")
    files = sorted(
        p
        for p in list(CHART.rglob("*.yaml")) + list(MANIFESTS.rglob("*.yaml"))
        if "templates" not in p.relative_to(CHART if CHART in p.parents else MANIFESTS).parts
    )
    problems = []
    for f in files:
        try:
            for doc in yaml.safe_load_all(f.read_text()):
                problems += literal_secret_problems(str(f.relative_to(ROOT)), doc)
        except yaml.YAMLError as e:
            problems.append(f"{f.relative_to(ROOT)}: not YAML: {e}")
    report.check(f"{len(files)} committed YAML files are free of literal secrets", problems)

    # Templates are not YAML until rendered: every Secret template must take its values from a
    # generator or a lookup, never a literal.
    problems = []
    for f in sorted((CHART / "templates").rglob("*.yaml")):
        text = f.read_text()
        if not re.search(r"(?m)^kind:\s*Secret\s*$", text):
            continue
        block = re.split(r"(?m)^(data|stringData):\s*$", text, maxsplit=1)
        if len(block) < 3:
            problems.append(f"{f.relative_to(ROOT)}: a Secret without a data block")
            continue
        for line in block[2].splitlines():
            m = re.match(r"^\s+([\w.-]+):\s*(.*)$", line)
            if m and "{{" not in m.group(2):
                problems.append(f"{f.relative_to(ROOT)}: key {m.group(1)} has a literal value")
        if "randAlphaNum" not in text and "mutr.generatedValue" not in text:
            problems.append(f"{f.relative_to(ROOT)}: the Secret's value is not generated")
    report.check("chart Secret templates only hold generated values", problems)


def check_generated_secrets(report: Report, values: list[Path]) -> None:
    a = {obj_name(d): d for d in render_chart(values) if d.get("kind") == "Secret"}
    b = {obj_name(d): d for d in render_chart(values) if d.get("kind") == "Secret"}
    problems = []
    if not a:
        problems.append("no Secret rendered")
    for name, sa in a.items():
        for key in ("password", "jwt-secret"):
            if key in sa.get("data", {}) and sa["data"][key] == b[name]["data"].get(key):
                problems.append(f"{name}.{key} is the same in two renderings: not generated")
    report.check("kind: the credentials of PostgreSQL, Redis and the API are generated per install", problems)


def check_values_schema(report: Report) -> None:
    section("values.schema.json rejects what it should")
    import helm_python as helm

    chart = helm.Chart.load(CHART)
    report.check("the chart ships values.schema.json", [] if chart.schema else ["missing"])
    bad = [
        ("an inline database password", {"postgresql": {"auth": {"password": "x"}}}),
        ("an unknown top-level key", {"postgress": {"enabled": True}}),
        ("operator replicas 0", {"operator": {"replicas": 0}}),
        ("a MutrDeployment name over 40 characters", {"mutrDeployment": {"name": "x" * 41}}),
        ("an unknown colour", {"mutrDeployment": {"activeColor": "red"}}),
        ("the image tag latest", {"operator": {"image": {"tag": "latest"}}}),
        ("a malformed image digest", {"operator": {"image": {"digest": "sha256:xyz"}}}),
        ("an unknown ingress key", {"ingress": {"hots": "x"}}),
        ("an unknown ingress provider", {"ingress": {"provider": "traefik"}}),
        ("an unpinned model file", {"mutrDeployment": {"aiServer": {"model": {"files": [{"role": "embed", "file": "e.gguf", "url": "https://x/e.gguf", "sha256": ""}]}}}}),
    ]
    for what, values in bad:
        try:
            chart.validate_schema(values)
        except helm.HelmError:
            report.ok(f"schema rejects {what}")
        else:
            report.fail(f"schema rejects {what}", "accepted")
    what = "a MutrDeployment without a database Secret fails to render, naming the value"
    try:
        render_chart([], {"mutrDeployment": {"enabled": True}})
    except helm.HelmError as e:
        if "database.secretName is required" in str(e):
            report.ok(what)
        else:
            report.fail(what, f"failed for another reason: {e}")
    else:
        report.fail(what, "it rendered")


def check_lint(report: Report, values_sets: dict[str, list[Path]]) -> None:
    import helm_python as helm

    for label, files in values_sets.items():
        values: dict[str, Any] = {}
        for f in files:
            values = deep_merge(values, yaml.safe_load(f.read_text()) or {})
        result = helm.lint(CHART, values, strict=True, namespace="mutr", kube_version=f"v{KUBE_VERSIONS[0]}.0")
        msgs = [
            f"{m.get('path')}: {m.get('error')}" for m in result.get("messages") or [] if (m.get("severity") or 0) >= 2
        ]
        msgs += [str(e) for e in result.get("errors") or []]
        report.check(f"helm lint --strict ({label})", msgs)


def check_dockerfiles(report: Report, hadolint: str) -> None:
    section("container images: multi-stage, non-root numeric user, no secrets, no models")
    files = sorted(DOCKER.glob("*.Dockerfile"))
    expected = {"api.Dockerfile", "ai-server.Dockerfile", "ai-server.cuda.Dockerfile", "operator.Dockerfile"}
    report.check(
        "docker/ has the api, ai-server (+cuda) and operator images",
        [f"missing docker/{n}" for n in sorted(expected - {f.name for f in files})],
    )
    for f in files:
        text = f.read_text()
        lines = [
            ln.strip()
            for ln in re.sub(r"\\\n", " ", text).splitlines()
            if ln.strip() and not ln.strip().startswith("#")
        ]
        problems = []
        froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
        if len(froms) < 2:
            problems.append("not a multi-stage build")
        last = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
        final = lines[last:]
        users = [ln.split(None, 1)[1] for ln in final if ln.upper().startswith("USER ")]
        if not users:
            problems.append("the final stage sets no USER")
        elif not re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1]):
            problems.append(f"final USER {users[-1]!r} is not a numeric non-root uid")
        for ln in lines:
            word = ln.split(None, 1)[0].upper()
            if word in ("ARG", "ENV"):
                for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)=", ln.split(None, 1)[1] if " " in ln else ""):
                    if SECRETISH_KEY.search(m.group(1)):
                        problems.append(f"{word} {m.group(1)} looks like a secret")
            if word in ("COPY", "ADD") and re.search(r"(?i)\.gguf|models?/|\.env\b|id_rsa|\.pem\b|\.key\b", ln):
                problems.append(f"copies model or credential files: {ln}")
            if word == "ADD" and re.search(r"https?://", ln):
                problems.append(f"ADD from a URL: {ln}")
        if not any(re.match(r"(?i)^(ENTRYPOINT|CMD)\s", ln) for ln in final):
            problems.append("the final stage has no ENTRYPOINT/CMD")
        if "--locked" not in text:
            problems.append("cargo build without --locked")
        if "cargo chef cook" not in text or "cargo chef prepare" not in text:
            problems.append("no cargo-chef dependency layer (cargo chef prepare / cook)")
        if "--mount=type=cache,target=/src/target" in text:
            problems.append("the target folder is a BuildKit cache mount: a fresh runner starts cold")
        for label in ("source", "revision", "version", "licenses"):
            if not any(f"org.opencontainers.image.{label}=" in ln for ln in final):
                problems.append(f"the final stage has no org.opencontainers.image.{label} label")
        report.check(f"docker/{f.name}", problems)
        lint = subprocess.run(
            [hadolint, "--no-color", "--config", str(DOCKER / ".hadolint.yaml"), str(f)], capture_output=True, text=True
        )
        report.check(
            f"hadolint docker/{f.name}",
            [ln for ln in (lint.stdout + lint.stderr).splitlines() if ln.strip()] if lint.returncode else [],
        )
    ignore = (ROOT / ".dockerignore").read_text().splitlines() if (ROOT / ".dockerignore").exists() else []
    needed = ["**/target/", ".git/", ".local/", "**/*.gguf", "hack/.cache/"]
    report.check(
        ".dockerignore keeps build output, git, local data and models out of the context",
        [f"missing {n}" for n in needed if n not in ignore],
    )



# --------------------------------------------------------------------------- what the operator builds


def operator_render(operator: str, docs: list[dict[str, Any]], *, all_objects: bool) -> list[dict[str, Any]]:
    """`mutr-operator render` of the given MutrDeployments (steady state, or --all)."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(docs, f)
        path = f.name
    try:
        args = [operator, "render", "-f", path, "-n", "mutr"] + (["--all"] if all_objects else [])
        out = subprocess.run(args, check=True, capture_output=True, text=True)
    finally:
        os.unlink(path)
    return load_all(out.stdout)


def check_operator_objects(
    report: Report,
    operator: str,
    crds: dict[tuple[str, str], dict[str, Any]],
    sources: dict[str, list[dict[str, Any]]],
) -> None:
    """Renders what the operator applies for each MutrDeployment (the examples and the chart's) and
    validates it like the chart: strict schemas of the oldest and newest Kubernetes, third-party
    schemas, the container security policy, no literal credentials, unique names."""
    section(f"what the operator builds: mutr-operator render, validated against Kubernetes {' and '.join(KUBE_VERSIONS)}")
    for label, mds in sources.items():
        if not mds:
            report.fail(f"{label}: a MutrDeployment to render", "none found")
            continue
        for mode in ("steady", "all"):
            what = f"operator render ({label}, {'every object it can apply' if mode == 'all' else 'serving colour'})"
            try:
                docs = operator_render(operator, mds, all_objects=(mode == "all"))
            except subprocess.CalledProcessError as e:
                report.fail(what, (e.stderr or e.stdout).strip())
                continue
            kinds = sorted({d.get("kind") for d in docs})
            report.ok(f"{what}: {len(docs)} objects ({', '.join(kinds)})")
            report.check(f"{what}: every object validates (strict)", validate_objects(docs, crds))
            report.check(f"{what}: every container is non-root, read-only, unprivileged, seccomp'd, with resources and /tmp", security_problems(docs))
            report.check(
                f"{what}: no literal credentials",
                [p for d in docs for p in literal_secret_problems(label, d)],
            )
            names = [obj_name(d) for d in docs]
            report.check(
                f"{what}: object names are unique",
                [f"duplicate {n}" for n in sorted({n for n in names if names.count(n) > 1})],
            )
            problems = []
            for d in docs:
                if d.get("kind") != "Deployment":
                    continue
                spec = d["spec"]["template"]["spec"]
                for v in spec.get("volumes") or []:
                    if "emptyDir" in v and not (v["emptyDir"] or {}).get("sizeLimit"):
                        problems.append(f"{obj_name(d)}: emptyDir {v['name']} has no sizeLimit")
                for c in spec.get("initContainers") or []:
                    if c.get("name") == "fetch-model":
                        args = c.get("args") or []
                        if "--dest" not in args or args[args.index("--dest") + 1] != "/models":
                            problems.append(f"{obj_name(d)}: fetch-model does not write into /models")
                if not spec.get("topologySpreadConstraints"):
                    problems.append(f"{obj_name(d)}: no topologySpreadConstraints")
            report.check(f"{what}: bounded emptyDirs, models fetched into the volume, pods spread", problems)


def check_ingress(report: Report, label: str, docs: list[dict[str, Any]], md: dict[str, Any] | None = None) -> None:
    """The Ingress routes every public path to the stable API Service (or / to the root Service),
    and on GKE its companions exist and the API Service is told to use the BackendConfig."""
    ingresses = [d for d in docs if d.get("kind") == "Ingress"]
    if not ingresses:
        report.fail(f"{label}: an Ingress", "none rendered")
        return
    problems = []
    md = md or next((d for d in docs if d.get("kind") == "MutrDeployment"), None)
    stable = ((md or {}).get("spec", {}).get("service") or {}).get("name", "mutr-api")
    for ing in ingresses:
        paths = {
            p["path"]: p["backend"]["service"]
            for rule in ing["spec"].get("rules") or []
            for p in (rule.get("http") or {}).get("paths") or []
        }
        for path in ("/api/", "/ws-mutr", "/oauth2/", "/login/oauth2/code/"):
            backend = paths.get(path)
            if backend is None:
                problems.append(f"{obj_name(ing)}: no route for {path}")
            elif backend["name"] != stable or backend["port"].get("number") != 80:
                problems.append(f"{obj_name(ing)}: {path} goes to {backend}, not {stable}:80")
        if "/" not in paths:
            problems.append(f"{obj_name(ing)}: no route for /")
        annotations = ing["metadata"].get("annotations") or {}
        if annotations.get("kubernetes.io/ingress.class") == "gce":
            names = {(d["kind"], d["metadata"]["name"]) for d in docs}
            cert = annotations.get("networking.gke.io/managed-certificates")
            if cert and ("ManagedCertificate", cert) not in names:
                problems.append(f"{obj_name(ing)}: ManagedCertificate {cert} is not rendered")
            frontend = annotations.get("networking.gke.io/v1beta1.FrontendConfig")
            if frontend and ("FrontendConfig", frontend) not in names:
                problems.append(f"{obj_name(ing)}: FrontendConfig {frontend} is not rendered")
            if not annotations.get("kubernetes.io/ingress.global-static-ip-name"):
                problems.append(f"{obj_name(ing)}: no static IP")
            backend_configs = [d for d in docs if d.get("kind") == "BackendConfig"]
            wanted = ((md or {}).get("spec", {}).get("service") or {}).get("annotations", {}).get("cloud.google.com/backend-config", "")
            if not any(f'"{b["metadata"]["name"]}"' in wanted for b in backend_configs):
                problems.append(f"the MutrDeployment's Services do not name a rendered BackendConfig ({wanted!r})")
            for b in backend_configs:
                hc = b["spec"].get("healthCheck") or {}
                if hc.get("requestPath") != "/readyz":
                    problems.append(f"{obj_name(b)}: health check is not /readyz")
                if (b["spec"].get("timeoutSec") or 0) < 600:
                    problems.append(f"{obj_name(b)}: timeoutSec below 600 s cuts WebSockets")
                if (b["spec"].get("sessionAffinity") or {}).get("affinityType") != "GENERATED_COOKIE":
                    problems.append(f"{obj_name(b)}: no cookie affinity")
        else:
            if "nginx.ingress.kubernetes.io/affinity" not in annotations:
                problems.append(f"{obj_name(ing)}: no cookie affinity for SockJS")
            if int(annotations.get("nginx.ingress.kubernetes.io/proxy-read-timeout", "60")) < 600:
                problems.append(f"{obj_name(ing)}: proxy-read-timeout below 600 s cuts WebSockets")
    report.check(f"{label}: the Ingress routes /api/, /ws-mutr, /oauth2/, /login/oauth2/code/ and / to the API", problems)


def check_workflows(report: Report, actionlint: str, shellcheck: str | None) -> None:
    section("release pipeline: workflows, scripts, plugin archives and krew manifest")
    workflows = sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))
    names = {w.name for w in workflows}
    report.check(
        ".github/workflows has a CI and a release workflow",
        [f"missing .github/workflows/{n}" for n in ("ci.yml", "release.yml") if n not in names],
    )
    env = dict(os.environ)
    if shellcheck:
        env["PATH"] = f"{Path(shellcheck).parent}{os.pathsep}{env.get('PATH', '')}"
    lint = subprocess.run(
        [actionlint, "-no-color", *map(str, workflows)], capture_output=True, text=True, env=env, cwd=ROOT
    )
    report.check(
        f"actionlint .github/workflows ({'with' if shellcheck else 'without'} ShellCheck on run: steps)",
        [ln for ln in (lint.stdout + lint.stderr).splitlines() if ln.strip() and not ln.startswith(" ")]
        if lint.returncode
        else [],
    )
    release = (WORKFLOWS / "release.yml").read_text() if (WORKFLOWS / "release.yml").exists() else ""
    needed = {
        "images pushed with a registry cache": "hack/release/images.sh --push",
        "the promotion script (wait, promote, abort on failure)": "hack/release/promote.sh",
        "kubectl-mutr archives": "hack/release/plugin-archive.sh",
        "the krew manifest": "hack/release/krew-manifest.py",
    }
    report.check(
        "release.yml builds and pushes the images, archives the plugin, writes the krew manifest and promotes",
        [f"no {what} ({needle})" for what, needle in needed.items() if needle not in release],
    )
    promote = (RELEASE / "promote.sh").read_text()
    report.check(
        "promote.sh waits for preview-ready, promotes, waits for promoted and aborts on failure",
        [
            f"missing {needle!r}"
            for needle in ("--for=preview-ready", "mutr -n \"$ns\" promote", "--for=promoted", "trap abort ERR", "abort \"$name\"")
            if needle not in promote
        ],
    )
    scripts = sorted(RELEASE.glob("*.sh")) + [ROOT / "operator" / "e2e" / "kind.sh"]
    if shellcheck:
        sc = subprocess.run([shellcheck, "-x", *map(str, scripts)], capture_output=True, text=True, cwd=ROOT)
        report.check(
            f"shellcheck {' '.join(str(p.relative_to(ROOT)) for p in scripts)}",
            [ln for ln in sc.stdout.splitlines() if ln.startswith("In ")] if sc.returncode else [],
        )
    else:
        report.ok("shellcheck skipped: no ShellCheck wheel for this platform")

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "kubectl-mutr"
        binary.write_text("#!/bin/sh\necho kubectl-mutr\n")
        out = Path(tmp) / "dist"
        problems = []
        for os_name, arch in (("linux", "amd64"), ("darwin", "arm64")):
            subprocess.run(
                ["bash", str(RELEASE / "plugin-archive.sh"), "9.9.9", os_name, arch, str(binary), str(out)],
                check=True,
                capture_output=True,
            )
        manifest = subprocess.run(
            [sys.executable, str(RELEASE / "krew-manifest.py"), "9.9.9", str(out)], check=True, capture_output=True, text=True
        ).stdout
        plugin = yaml.safe_load(manifest)
        if plugin.get("apiVersion") != "krew.googlecontainertools.github.com/v1alpha2" or plugin.get("kind") != "Plugin":
            problems.append("not a krew Plugin")
        if (plugin.get("metadata") or {}).get("name") != "mutr":
            problems.append("the plugin is not named mutr (kubectl mutr)")
        platforms = (plugin.get("spec") or {}).get("platforms") or []
        if len(platforms) != 2:
            problems.append(f"{len(platforms)} platforms for 2 archives")
        import hashlib
        import tarfile

        for p in platforms:
            name = p["uri"].rsplit("/", 1)[-1]
            archive = out / name
            if hashlib.sha256(archive.read_bytes()).hexdigest() != p["sha256"]:
                problems.append(f"{name}: sha256 does not match")
            with tarfile.open(archive) as tar:
                if f"./{p['bin']}" not in tar.getnames():
                    problems.append(f"{name}: no {p['bin']} inside")
            if not p["uri"].startswith("https://github.com/mutr/mutr-k8s/releases/download/v9.9.9/"):
                problems.append(f"{name}: unexpected download URL {p['uri']}")
        report.check("plugin-archive.sh + krew-manifest.py: archives and a krew manifest whose sha256s match", problems)

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubectl", required=True, help="kubectl binary (for its built-in kustomize)")
    parser.add_argument("--hadolint", required=True, help="hadolint binary")
    parser.add_argument("--operator", required=True, help="mutr-operator binary (for `render`)")
    parser.add_argument("--actionlint", required=True, help="actionlint binary")
    parser.add_argument("--shellcheck", help="shellcheck binary (optional: no wheel on every platform)")
    args = parser.parse_args()
    report = Report()
    os.chdir(ROOT)

    self_test(report)
    crds = check_crds(report)
    check_committed_yaml(report)
    check_dockerfiles(report, args.hadolint)
    check_workflows(report, args.actionlint, args.shellcheck)

    section("Helm chart: lint and render for each values set")
    values_sets = {
        "defaults": [],
        "kind": [CHART / "values-kind.yaml"],
        "gke": [CHART / "values-gke.yaml"],
    }
    extra_sets = {
        "watch one namespace": {"operator": {"watchNamespace": "apps"}},
        # ingress-nginx with cert-manager (a Certificate and its own ACME Issuer), a web client on /.
        "nginx + cert-manager": {
            "postgresql": {"enabled": True},
            "redis": {"enabled": True},
            "mutrDeployment": {"enabled": True},
            "ingress": {
                "enabled": True,
                "provider": "nginx",
                "host": "mutr.example.org",
                "rootService": {"name": "mutr-web", "port": 80},
                "sessionCookieTtlSeconds": 3600,
                "tls": {
                    "enabled": True,
                    "certManager": {"enabled": True, "createIssuer": {"enabled": True, "email": "ops@example.org"}},
                },
            },
        },
    }
    check_lint(report, values_sets)
    renderings: dict[str, list[dict[str, Any]]] = {}
    for label, files in values_sets.items():
        try:
            renderings[f"helm {label}"] = render_chart(files)
            report.ok(f"helm template ({label}): {len(renderings[f'helm {label}'])} objects")
        except Exception as e:  # noqa: BLE001 - report any render failure as a check failure
            report.fail(f"helm template ({label})", str(e))
    for label, overrides in extra_sets.items():
        try:
            renderings[f"helm {label}"] = render_chart([], overrides)
            report.ok(f"helm template ({label}): {len(renderings[f'helm {label}'])} objects")
        except Exception as e:  # noqa: BLE001
            report.fail(f"helm template ({label})", str(e))
    for label, files, needle in (
        ("kind", [CHART / "values-kind.yaml"], "http://mutr.localhost/"),
        ("gke", [CHART / "values-gke.yaml"], "https://mutr.example.com/"),
        ("defaults", [], "kubectl krew install"),
    ):
        try:
            notes = render_notes(files)
            problems = [] if needle in notes else [f"no {needle!r}"]
            if "kubectl krew install" not in notes:
                problems.append("does not say how to get kubectl mutr")
            report.check(f"NOTES.txt ({label}) renders, says where MUTR answers and how to get kubectl mutr", problems)
        except Exception as e:  # noqa: BLE001
            report.fail(f"NOTES.txt renders ({label})", str(e))
    check_values_schema(report)

    section("kustomize: build each overlay")
    for overlay in ("kind", "gke"):
        try:
            renderings[f"kustomize {overlay}"] = kustomize_build(MANIFESTS / "overlays" / overlay, args.kubectl)
            report.ok(
                f"kubectl kustomize manifests/overlays/{overlay}: {len(renderings[f'kustomize {overlay}'])} objects"
            )
        except subprocess.CalledProcessError as e:
            report.fail(f"kubectl kustomize manifests/overlays/{overlay}", e.stderr.strip())

    for label, docs in renderings.items():
        section(f"{label}: schemas and policies")
        check_workloads(report, label, docs, crds, operator_replicas_min=2, self_contained=(label == "helm kind"))
        report.check(
            f"{label}: rendered objects hold no literal credentials outside generated Secrets",
            [p for d in docs if d.get("kind") != "Secret" for p in literal_secret_problems(label, d)],
        )
    if "helm kind" in renderings:
        check_generated_secrets(report, [CHART / "values-kind.yaml"])

    if renderings:
        check_rbac(report, renderings)

    section("Ingress: the way in")
    example = {
        overlay: next(
            d
            for d in load_all((MANIFESTS / "examples" / f"mutrdeployment-{overlay}.yaml").read_text())
            if d.get("kind") == "MutrDeployment"
        )
        for overlay in ("kind", "gke")
    }
    for label in ("helm kind", "helm gke", "helm nginx + cert-manager", "kustomize kind", "kustomize gke"):
        if label in renderings:
            # An overlay's Ingress goes with the example MutrDeployment of the same name.
            md = example[label.split()[-1]] if label.startswith("kustomize") else None
            check_ingress(report, label, renderings[label], md)

    section("examples: every example MutrDeployment validates against the CRD")
    examples = sorted((MANIFESTS / "examples").glob("*.yaml"))
    docs = [d for f in examples for d in load_all(f.read_text())]
    report.check(
        f"{len(examples)} example files validate",
        validate_objects(docs, crds) if crds else ["no CRD to validate against"],
    )
    md = next((d for d in docs if d.get("kind") == "MutrDeployment"), None)
    if md and crds:
        for what, breaker in (
            ("an unknown field", lambda d: d["spec"]["api"].update(imagee="x")),
            ("a name over 40 characters (CEL rule)", lambda d: d["metadata"].update(name="m" * 41)),
            (
                "an operator-owned env var (CEL rule)",
                lambda d: d["spec"]["api"].setdefault("env", []).append({"name": "DATABASE_URL", "value": "x"}),
            ),
            (
                "a model claim with a cache size limit (CEL rule)",
                lambda d: d["spec"]["aiServer"]["model"].update(persistentVolumeClaim="models", cacheSizeLimit="1Gi"),
            ),
            ("a missing database reference", lambda d: d["spec"].pop("database")),
            ("an unknown colour", lambda d: d["spec"].update(activeColor="red")),
        ):
            bad = copy.deepcopy(md)
            breaker(bad)
            if validate_objects([bad], crds):
                report.ok(f"self-test: CRD validation rejects {what}")
            else:
                report.fail(f"self-test: CRD validation rejects {what}", "it passed")

    sources = {
        f"manifests/examples/{f.name}": [d for d in load_all(f.read_text()) if d.get("kind") == "MutrDeployment"]
        for f in examples
    }
    for label in ("helm kind", "helm gke", "helm nginx + cert-manager"):
        if label in renderings:
            sources[f"{label} MutrDeployment"] = [d for d in renderings[label] if d.get("kind") == "MutrDeployment"]
    if crds:
        check_operator_objects(report, args.operator, crds, sources)

    print(f"\ndeploy: {report.passed} passed, {len(report.failures)} failed")
    for f in report.failures:
        print(f"  - {f}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
