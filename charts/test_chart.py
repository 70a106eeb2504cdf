#!/usr/bin/env python3
"""Checks the osl Helm chart, the krew manifest and the Dockerfile's entrypoint.

Renders charts/osl with Helm's own Go SDK (helm-python-sdk, import helm_python:
no helm binary) for the default values, each level, and other switches; lints
it; asserts the agent container's security context per level, its environment
(downward API included), the annotation kubectl osl looks for, and that RBAC is
minimal; includes the named templates from a parent chart through
.Subcharts.osl; validates every rendered object against the Kubernetes schemas
of kubernetes-validate (strict: unknown fields fail) from 1.28 to the newest
version it knows. Then checks plugins/osl.yaml like krew's own validation.

    pip install helm-python-sdk kubernetes-validate
    python3 charts/test_chart.py                 # exit 1 on any failure
    python3 charts/test_chart.py --krew-release  # also require filled sha256s

Ends with "chart: N passed, M failed".
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

try:
    import helm_python as helm
    import kubernetes_validate
    import yaml
    from kubernetes_validate import utils as kv_utils
    from packaging.version import Version
except ImportError as e:  # pragma: no cover - environment problem
    print(f"chart: missing a Python package ({e}); run: pip install helm-python-sdk kubernetes-validate",
          file=sys.stderr)
    sys.exit(2)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHART = HERE / "osl"
KREW = ROOT / "plugins" / "osl.yaml"
DOCKERFILE = ROOT / "Dockerfile"

NAMESPACE = "shop"
RELEASE = "osl"
MIN_KUBE = Version("1.28")

CAPS = {
    "basic": None,
    "ptrace": ["SYS_PTRACE", "DAC_READ_SEARCH"],
    "ebpf": ["SYS_PTRACE", "DAC_READ_SEARCH", "BPF", "PERFMON"],
}
EVENTS_RULES = [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]
CLI_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["get", "create"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"],
     "verbs": ["get", "list"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
]
# `kubectl osl attach`, apart: patching ephemeral containers is as strong as exec.
CLI_ATTACH_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods/ephemeralcontainers"], "verbs": ["get", "patch"]},
]


class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: object = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
            print(f"FAIL {name}" + (f": {detail}" if detail != "" else ""))
        return ok

    def equal(self, name: str, got: object, want: object) -> bool:
        return self.check(name, got == want, f"got {got!r}, want {want!r}")


R = Results()


# ---------------------------------------------------------------- rendering


def render(chart: helm.Chart, values: dict | None = None, release: str = RELEASE) -> list[dict]:
    """Rendered objects (NOTES.txt and empty documents left out), each with its template."""
    manifests = chart.render(values, name=release, namespace=NAMESPACE)
    objects = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {})
                objects.append((template, doc))
    return [dict(obj, _template=t) for t, obj in objects]


def kinds(objects: list[dict]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def one(objects: list[dict], kind: str) -> dict | None:
    found = [o for o in objects if o["kind"] == kind]
    return found[0] if len(found) == 1 else None


def agent_of(deploy: dict) -> dict:
    containers = deploy["spec"]["template"]["spec"]["containers"]
    for c in containers:
        if c["name"] == "osl-agent":
            return c
    raise LookupError(f"no container named osl-agent (kubectl osl looks for that name) in "
                      f"{[c['name'] for c in containers]}")


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def quantity_bytes(q: str) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    if not m:
        raise ValueError(f"unsupported quantity {q!r}")
    mult = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[m.group(2)]
    return int(m.group(1)) * mult


# ---------------------------------------------------------------- chart checks


def check_metadata(chart: helm.Chart) -> None:
    md = chart.metadata
    R.equal("Chart.yaml apiVersion", md.get("apiVersion"), "v2")
    R.equal("Chart.yaml name", md.get("name"), "osl")
    R.equal("Chart.yaml version", md.get("version"), "0.1.0")
    R.equal("Chart.yaml appVersion", md.get("appVersion"), "0.1.0")
    v = chart.values
    for key in ("image", "port", "level", "runAsUser", "resources", "reports", "preOOM", "events",
                "logFormat", "serviceAccount", "rbac", "cliClusterRole", "example"):
        R.check(f"values.yaml has {key}", key in v)
    R.equal("default level", v.get("level"), "basic")
    R.equal("default image", (v["image"]["repository"], v["image"]["tag"]), ("ghcr.io/osl-dev/osl-agent", ""))
    R.equal("default resources", v.get("resources"),
            {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}})
    R.check("reports.sizeLimit well above maxReportBytes (else the pod is evicted)",
            quantity_bytes(v["reports"]["sizeLimit"]) >= 1.5 * v["reports"]["maxReportBytes"],
            v["reports"])


def check_lint() -> None:
    cases = {"default": None, **{lvl: {"level": lvl} for lvl in CAPS},
             "example off": {"example": {"enabled": False}}}
    for label, values in cases.items():
        for kube in ("v1.28.0", None):
            report = helm.lint(str(CHART), values, namespace=NAMESPACE, kube_version=kube, strict=True)
            bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
            R.check(f"helm lint --strict ({label}, kube {kube or 'default'})",
                    not report.get("errors") and not bad, report)


def check_sidecar(name: str, deploy: dict, level: str, run_as: int, listen: str = "127.0.0.1:7450") -> None:
    pod = deploy["spec"]["template"]
    spec = pod["spec"]
    agent = agent_of(deploy)
    R.equal(f"{name}: annotation osl.dev/agent-port", pod["metadata"].get("annotations", {}).get("osl.dev/agent-port"),
            "7450")
    R.equal(f"{name}: shareProcessNamespace", spec.get("shareProcessNamespace"), True)
    R.equal(f"{name}: image", agent["image"], "ghcr.io/osl-dev/osl-agent:0.1.0")
    R.equal(f"{name}: command + args", (agent.get("command"), agent.get("args")), (["/osl-agent"], ["serve"]))
    R.equal(f"{name}: port", [(p["name"], p["containerPort"]) for p in agent["ports"]], [("osl-grpc", 7450)])

    sc = agent["securityContext"]
    want_caps = {"drop": ["ALL"]}
    if CAPS[level]:
        want_caps["add"] = CAPS[level]
    R.equal(f"{name}: capabilities", sc.get("capabilities"), want_caps)
    R.equal(f"{name}: runAsUser", sc.get("runAsUser"), run_as)
    R.equal(f"{name}: runAsNonRoot", sc.get("runAsNonRoot"), level == "basic")
    R.equal(f"{name}: hardening",
            (sc.get("readOnlyRootFilesystem"), sc.get("allowPrivilegeEscalation"), sc.get("privileged"),
             sc.get("seccompProfile")),
            (True, False, False, {"type": "RuntimeDefault"}))

    env = env_of(agent)
    R.check(f"{name}: env values are strings",
            all(isinstance(e.get("value", ""), str) for e in env.values()), env)
    for var, path in (("OSL_POD_NAME", "metadata.name"), ("OSL_POD_NAMESPACE", "metadata.namespace"),
                      ("OSL_POD_UID", "metadata.uid")):
        R.equal(f"{name}: downward API {var}", env.get(var, {}).get("valueFrom"), {"fieldRef": {"fieldPath": path}})
    R.equal(f"{name}: OSL_LISTEN", env.get("OSL_LISTEN", {}).get("value"), listen)
    R.equal(f"{name}: OSL_MAX_REPORT_BYTES (an integer, not 6.7108864e+07)",
            env.get("OSL_MAX_REPORT_BYTES", {}).get("value"), "67108864")

    mounts = {m["name"]: m["mountPath"] for m in agent.get("volumeMounts", [])}
    R.equal(f"{name}: report volume mount", mounts.get("osl-reports"), env.get("OSL_REPORT_DIR", {}).get("value"))
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    R.check(f"{name}: report volume is an emptyDir with a sizeLimit",
            "sizeLimit" in vols.get("osl-reports", {}).get("emptyDir", {}), vols)


def check_default(chart: helm.Chart) -> list[dict]:
    objs = render(chart)
    R.equal("default: objects", kinds(objs),
            ["ClusterRole", "ClusterRole", "Deployment", "Role", "RoleBinding", "ServiceAccount"])
    deploy = one(objs, "Deployment")
    if not R.check("default: one example Deployment", deploy is not None):
        return objs
    check_sidecar("default", deploy, "basic", 65532)
    agent = agent_of(deploy)
    env = {k: e.get("value") for k, e in env_of(agent).items()}
    R.equal("default: agent env", {k: v for k, v in env.items() if not k.startswith("OSL_POD_")}, {
        "OSL_LISTEN": "127.0.0.1:7450", "OSL_LOG_FORMAT": "json", "OSL_REPORT_DIR": "/var/run/osl/reports",
        "OSL_MAX_REPORTS": "50", "OSL_MAX_REPORT_BYTES": "67108864", "OSL_PRE_OOM_WARN_PCT": "80",
        "OSL_PRE_OOM_CRITICAL_PCT": "90", "OSL_PRE_OOM_PREDICT": "60s", "OSL_PRE_OOM_COOLDOWN": "60s",
        "OSL_PRE_OOM_POLL": "250ms", "OSL_MAX_PROFILE_DURATION": "60s", "OSL_EVENTS": "auto"})
    R.check("default: no probes (the agent listens on loopback; kubelet probes the pod IP)",
            not any(k in agent for k in ("livenessProbe", "readinessProbe", "startupProbe")))
    R.equal("default: agent resources", agent.get("resources"),
            {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}})
    spec = deploy["spec"]["template"]["spec"]
    R.equal("default: example uses the osl ServiceAccount", spec.get("serviceAccountName"), RELEASE)
    app = next(c for c in spec["containers"] if c["name"] != "osl-agent")
    R.equal("default: the example app runs as the agent's UID", app["securityContext"].get("runAsUser"), 65532)
    R.check("default: the example app has a memory limit to watch",
            "memory" in app.get("resources", {}).get("limits", {}))
    check_rbac("default", objs)
    return objs


def check_rbac(name: str, objs: list[dict]) -> None:
    role, binding, sa = (one(objs, k) for k in ("Role", "RoleBinding", "ServiceAccount"))
    roles = {o["metadata"]["name"]: o["rules"] for o in objs if o["kind"] == "ClusterRole"}
    if not R.check(f"{name}: Role, RoleBinding, ServiceAccount", None not in (role, binding, sa)):
        return
    R.equal(f"{name}: agent Role rules (events create only)", role["rules"], EVENTS_RULES)
    R.equal(f"{name}: Role namespace", role["metadata"].get("namespace"), NAMESPACE)
    R.equal(f"{name}: RoleBinding roleRef", binding["roleRef"],
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]})
    R.equal(f"{name}: RoleBinding subjects", binding["subjects"],
            [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}])
    R.equal(f"{name}: ClusterRoles: osl-cli reads, osl-cli-attach attaches", roles,
            {"osl-cli": CLI_RULES, "osl-cli-attach": CLI_ATTACH_RULES})
    R.check(f"{name}: the reading role cannot patch anything",
            not any("patch" in r["verbs"] for r in roles.get("osl-cli", [])))
    text = yaml.safe_dump([o["rules"] for o in objs if o["kind"] in ("Role", "ClusterRole")])
    R.check(f"{name}: no wildcard, secrets, escalate, bind or impersonate in RBAC",
            not re.search(r"'\*'|secrets|escalate|\bbind\b|impersonate|nodes", text), text)
    R.check(f"{name}: nothing bound cluster-wide", not any(o["kind"] == "ClusterRoleBinding" for o in objs))


def check_levels(chart: helm.Chart) -> dict[str, list[dict]]:
    rendered = {}
    for level in CAPS:
        objs = render(chart, {"level": level})
        rendered[level] = objs
        deploy = one(objs, "Deployment")
        if R.check(f"level {level}: example Deployment", deploy is not None):
            check_sidecar(f"level {level}", deploy, level, 65532 if level == "basic" else 0)
    objs = render(chart, {"level": "basic", "runAsUser": 1000})
    R.equal("level basic runAsUser 1000", agent_of(one(objs, "Deployment"))["securityContext"]["runAsUser"], 1000)
    objs = render(chart, {"level": "ptrace", "runAsUser": 1000})
    R.equal("level ptrace ignores runAsUser", agent_of(one(objs, "Deployment"))["securityContext"]["runAsUser"], 0)
    for bad in ({"level": "root"}, {"logFormat": "xml"}, {"runAsUser": 0}):
        try:
            chart.render(bad, name=RELEASE, namespace=NAMESPACE)
            R.check(f"{bad} is refused", False, "rendered")
        except helm.HelmError:
            R.check(f"{bad} is refused", True)
    return rendered


def check_switches(chart: helm.Chart) -> dict[str, list[dict]]:
    rendered = {}
    objs = rendered["example off"] = render(chart, {"example": {"enabled": False}})
    R.equal("example off: objects", kinds(objs), ["ClusterRole", "ClusterRole", "Role", "RoleBinding", "ServiceAccount"])
    check_rbac("example off", objs)

    objs = rendered["events off"] = render(chart, {"events": {"enabled": False}, "cliClusterRole": {"create": False}})
    R.equal("events off: objects (no Role without Events)", kinds(objs), ["Deployment", "ServiceAccount"])
    deploy = one(objs, "Deployment")
    R.equal("events off: OSL_EVENTS", env_of(agent_of(deploy))["OSL_EVENTS"]["value"], "off")
    R.equal("events off: no token mounted", deploy["spec"]["template"]["spec"].get("automountServiceAccountToken"), False)

    objs = rendered["probes on"] = render(chart, {"probes": {"enabled": True},
                                                  "logFormat": "text", "image": {"tag": "dev"},
                                                  "preOOM": {"enabled": False, "warnPct": 85.5},
                                                  "extraEnv": [{"name": "OSL_CGROUP_ROOT", "value": "/sys/fs/cgroup"}]})
    agent = agent_of(one(objs, "Deployment"))
    env = {k: e.get("value") for k, e in env_of(agent).items()}
    R.equal("probes on: the API stays on loopback", env["OSL_LISTEN"], "127.0.0.1:7450")
    R.equal("probes on: health alone on all interfaces", env.get("OSL_HEALTH_LISTEN"), "0.0.0.0:7451")
    R.equal("probes on: gRPC liveness probe on the health port", agent.get("livenessProbe", {}).get("grpc"),
            {"port": 7451})
    R.check("probes on: never a readiness probe", "readinessProbe" not in agent)
    R.equal("preOOM off: OSL_NO_WATCH", env.get("OSL_NO_WATCH"), "true")
    R.equal("logFormat text", env.get("OSL_LOG_FORMAT"), "text")
    R.equal("preOOM.warnPct 85.5 (the agent takes a float)", env.get("OSL_PRE_OOM_WARN_PCT"), "85.5")
    R.equal("extraEnv", env.get("OSL_CGROUP_ROOT"), "/sys/fs/cgroup")
    R.equal("image tag override", agent["image"], "ghcr.io/osl-dev/osl-agent:dev")

    objs = rendered["own service account"] = render(chart, {
        "serviceAccount": {"create": False, "name": "checkout"},
        "rbac": {"extraServiceAccounts": ["payments"]}, "example": {"enabled": False}})
    binding = one(objs, "RoleBinding")
    R.equal("own service account: RoleBinding subjects", [s["name"] for s in binding["subjects"]],
            ["checkout", "payments"])
    R.check("own service account: no ServiceAccount created", one(objs, "ServiceAccount") is None)

    objs = rendered["rbac off"] = render(chart, {"rbac": {"create": False}, "cliClusterRole": {"create": False},
                                                 "serviceAccount": {"create": False}, "example": {"enabled": False}})
    R.equal("rbac off: nothing rendered", kinds(objs), [])
    return rendered


PARENT_TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: checkout
spec:
  selector:
    matchLabels: {app: checkout}
  template:
    metadata:
      labels: {app: checkout}
      annotations:
        {{- include "osl.podAnnotations" .Subcharts.osl | nindent 8 }}
    spec:
      shareProcessNamespace: true
      serviceAccountName: {{ include "osl.serviceAccountName" .Subcharts.osl }}
      containers:
        - name: app
          image: shop/checkout:1.4
        {{- include "osl.sidecar" .Subcharts.osl | nindent 8 }}
      volumes:
        {{- include "osl.sidecarVolumes" .Subcharts.osl | nindent 8 }}
"""


def check_parent_chart() -> list[dict]:
    """The README's way to use the named templates: osl as a dependency, .Subcharts.osl as scope."""
    with tempfile.TemporaryDirectory() as tmp:
        parent = Path(tmp) / "shop"
        (parent / "templates").mkdir(parents=True)
        shutil.copytree(CHART, parent / "charts" / "osl")
        (parent / "Chart.yaml").write_text(
            "apiVersion: v2\nname: shop\nversion: 2.0.0\nappVersion: \"9.9.9\"\n"
            "dependencies:\n  - name: osl\n    version: 0.1.0\n")
        (parent / "values.yaml").write_text(
            "osl:\n  level: ebpf\n  example:\n    enabled: false\n  cliClusterRole:\n    create: false\n")
        (parent / "templates" / "deployment.yaml").write_text(PARENT_TEMPLATE)
        with helm.Chart.load(parent) as chart:
            objs = render(chart, release="shop")
        report = helm.lint(str(parent), namespace=NAMESPACE, strict=True)
    R.check("parent chart: helm lint --strict",
            not report.get("errors") and not [m for m in report["messages"] if m["severity"] >= 2], report)
    R.equal("parent chart: objects", kinds(objs), ["Deployment", "Role", "RoleBinding", "ServiceAccount"])
    deploy = one(objs, "Deployment")
    if R.check("parent chart: the app's Deployment", deploy is not None and deploy["metadata"]["name"] == "checkout"):
        # The subchart's scope: its appVersion (not the parent's 9.9.9) and the parent's osl: values.
        check_sidecar("parent chart", deploy, "ebpf", 0)
        R.equal("parent chart: serviceAccountName", deploy["spec"]["template"]["spec"]["serviceAccountName"],
                "shop-osl")
    return objs


# ---------------------------------------------------------------- schemas


def kube_versions() -> list[str]:
    known = sorted({Version(v) for v in kv_utils.all_versions()})
    return [f"{v.major}.{v.minor}" for v in known if v >= MIN_KUBE]


def check_schemas(rendered: dict[str, list[dict]], versions: list[str]) -> None:
    # kubernetes-validate parses the same large schema files on every call; they are only read.
    kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)
    seen = set()
    for label, objs in rendered.items():
        for obj in objs:
            doc = {k: v for k, v in obj.items() if k != "_template"}
            key = json.dumps(doc, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            for version in versions:
                name = f"kubernetes {version} schema: {label} {doc['kind']}/{doc['metadata'].get('name')}"
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                    R.check(name, True)
                except kubernetes_validate.ValidationError as e:
                    R.check(name, False, f"{'.'.join(map(str, e.path))}: {e.message}")
                except Exception as e:  # SchemaNotFoundError and friends: not validated is a failure
                    R.check(name, False, f"{type(e).__name__}: {getattr(e, 'message', e)}")


# ---------------------------------------------------------------- krew, Dockerfile


def check_krew(release: bool) -> None:
    """krew's ValidatePlugin (internal/index/validation), except that sha256 may be
    empty until the release job fills it (--krew-release requires it)."""
    try:
        m = yaml.safe_load(KREW.read_text())
    except (OSError, yaml.YAMLError) as e:
        R.check("krew manifest parses", False, e)
        return
    R.check("krew manifest parses", isinstance(m, dict))
    R.equal("krew apiVersion", m.get("apiVersion"), "krew.googlecontainertools.github.com/v1alpha2")
    R.equal("krew kind", m.get("kind"), "Plugin")
    R.equal("krew metadata.name (the file's name)", m.get("metadata", {}).get("name"), KREW.stem)
    spec = m.get("spec", {})
    short = spec.get("shortDescription", "")
    R.check("krew shortDescription: one line, set", bool(short) and "\n" not in short and "\r" not in short, short)
    R.check("krew description", bool(spec.get("description", "").strip()))
    R.check("krew homepage", str(spec.get("homepage", "")).startswith("https://"), spec.get("homepage"))
    R.check("krew version is v-semver", re.fullmatch(r"v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", str(spec.get("version"))),
            spec.get("version"))
    platforms = spec.get("platforms") or []
    seen = set()
    for p in platforms:
        labels = (p.get("selector") or {}).get("matchLabels") or {}
        pl = f"{labels.get('os')}/{labels.get('arch')}"
        seen.add(pl)
        R.check(f"krew {pl}: selector keys os/arch only", labels and set(labels) <= {"os", "arch"}, labels)
        R.check(f"krew {pl}: uri is this version's release asset",
                str(p.get("uri", "")).startswith(
                    f"https://github.com/osl-dev/osl/releases/download/{spec.get('version')}/"), p.get("uri"))
        R.check(f"krew {pl}: uri names the platform", f"{labels.get('os')}_{labels.get('arch')}" in p.get("uri", ""))
        R.check(f"krew {pl}: bin", p.get("bin") == "kubectl-osl", p.get("bin"))
        if "files" in p:  # optional, but not empty
            R.check(f"krew {pl}: files from/to", bool(p["files"]) and all(f.get("from") and f.get("to") for f in p["files"]))
        sha = p.get("sha256")
        R.check(f"krew {pl}: sha256 field present", "sha256" in p)
        if release:
            R.check(f"krew {pl}: sha256 filled", re.fullmatch(r"[a-f0-9]{64}", str(sha)) is not None
                    and sha != "0" * 64, sha)
        else:
            R.check(f"krew {pl}: sha256 empty until the release job fills it, or a real digest",
                    sha == "" or (re.fullmatch(r"[a-f0-9]{64}", str(sha)) is not None and sha != "0" * 64), sha)
    R.check("krew platforms: linux/amd64 and darwin", "linux/amd64" in seen and any(s.startswith("darwin/") for s in seen),
            seen)


def check_dockerfile() -> None:
    if not R.check("Dockerfile exists", DOCKERFILE.is_file()):
        return
    text = DOCKERFILE.read_text()
    R.check("Dockerfile: ENTRYPOINT /osl-agent serve (the chart's command + args)",
            'ENTRYPOINT ["/osl-agent", "serve"]' in text)
    R.check("Dockerfile: final stage FROM scratch", re.findall(r"(?m)^FROM\s+(\S+)", text)[-1:] == ["scratch"])
    R.check("Dockerfile: static glibc build", "+crt-static" in text and "--locked" in text)
    R.check("Dockerfile: EXPOSE 7450", re.search(r"(?m)^EXPOSE\s+7450\b", text) is not None)


def check_seccomp_profile(chart: helm.Chart) -> list[dict]:
    """seccomp/osl-ebpf.json: bpf and perf_event_open allowed unconditionally,
    open_by_handle_at never, and (where this machine has the engine default it is
    derived from) nothing else changed. The chart's value renders into the agent only."""
    profile = json.loads((CHART / "seccomp" / "osl-ebpf.json").read_text())
    rules = profile["syscalls"]
    def rules_for(name: str) -> list[dict]:
        return [r for r in rules if name in r["names"]]
    for name in ("bpf", "perf_event_open"):
        R.check(f"seccomp profile: {name} allowed, whatever the capabilities",
                [(r["action"], bool(r.get("includes")), bool(r.get("excludes"))) for r in rules_for(name)]
                == [("SCMP_ACT_ALLOW", False, False)], rules_for(name))
    R.check("seccomp profile: open_by_handle_at denied, whatever the capabilities",
            [(r["action"], bool(r.get("includes")), bool(r.get("excludes"))) for r in rules_for("open_by_handle_at")]
            == [("SCMP_ACT_ERRNO", False, False)], rules_for("open_by_handle_at"))
    R.equal("seccomp profile: denies by default", profile["defaultAction"], "SCMP_ACT_ERRNO")
    base = Path("/usr/share/containers/seccomp.json")
    if base.is_file():
        import subprocess
        p = subprocess.run([sys.executable, str(CHART / "seccomp" / "generate.py"), "--check", str(base)],
                           capture_output=True, text=True)
        R.check("seccomp profile: derived from this engine's default", p.returncode == 0, p.stderr.strip())
    values = {"level": "ebpf", "seccompProfile": {"type": "Localhost", "localhostProfile": "osl/osl-ebpf.json"}}
    objs = render(chart, values)
    deploy = one(objs, "Deployment")
    R.equal("seccompProfile Localhost: the agent's", agent_of(deploy)["securityContext"]["seccompProfile"],
            values["seccompProfile"])
    app = deploy["spec"]["template"]["spec"]["containers"][0]
    R.check("seccompProfile Localhost: not the app's", "seccompProfile" not in app.get("securityContext", {}), app)
    return objs


# ---------------------------------------------------------------- main


def guarded(section: str, fn, *args, default=None):
    """Runs one section; an exception (a template that does not render, a missing
    key in the output) is one failure of that section, and the rest still run."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - reported as a failure
        R.check(section, False, f"{type(e).__name__}: {e}")
        return default


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--krew-release", action="store_true", help="require filled sha256 in plugins/osl.yaml")
    args = ap.parse_args()
    start = time.monotonic()
    print(f"helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
          f"kubernetes-validate {kubernetes_validate.version.__version__}")

    rendered: dict[str, list[dict]] = {}
    with helm.Chart.load(CHART) as chart:
        guarded("chart metadata and values", check_metadata, chart)
        guarded("helm lint", check_lint)
        rendered["default"] = guarded("default values", check_default, chart, default=[])
        for k, v in guarded("levels", check_levels, chart, default={}).items():
            rendered[f"level {k}"] = v
        rendered.update(guarded("switches", check_switches, chart, default={}))
        rendered["seccomp Localhost"] = guarded("seccomp profile", check_seccomp_profile, chart, default=[])
    rendered["parent chart"] = guarded("parent chart", check_parent_chart, default=[])

    versions = kube_versions()
    guarded("schemas", check_schemas, rendered, versions)
    guarded("krew manifest", check_krew, args.krew_release)
    guarded("Dockerfile", check_dockerfile)

    objects = sum(len(v) for v in rendered.values())
    print(f"rendered {len(rendered)} value sets ({objects} objects); validated against Kubernetes "
          f"{', '.join(versions)} (strict); {time.monotonic() - start:.1f}s")
    if R.failed:
        print(f"failed: {', '.join(R.failed[:10])}{' …' if len(R.failed) > 10 else ''}")
    print(f"chart: {R.passed} passed, {len(R.failed)} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
