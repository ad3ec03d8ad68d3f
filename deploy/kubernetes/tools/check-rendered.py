#!/usr/bin/env python3
"""Checks the output of `kubectl kustomize` for deploy/kubernetes/check.

usage: check-rendered.py REPO OUT_DIR RENDERED.yaml...

For each rendered file NAME.yaml: writes its core kinds to OUT_DIR/NAME.core.yaml (for
kubernetes-validate --strict) and its Prometheus Operator kinds to
OUT_DIR/NAME.operator.json (for check-operator.mjs), refuses any other kind, and checks
what no schema can: the PrometheusRule's groups equal the rules file's, the dashboards
ConfigMap holds dashboards/*.json as they are, and the Deployment, Service,
ServiceMonitor and volume fit together the way the README promises. A render named in
POSTGRES (overlays/ha-postgres, i.e. components/postgres) is checked as the high
availability variant: two replicas on PostgreSQL with a PodDisruptionBudget and no
volume; every other one as the single writer on a PersistentVolumeClaim.
"""

import json
import pathlib
import re
import sys

import yaml

CORE = {"v1", "apps/v1", "networking.k8s.io/v1", "policy/v1"}
OPERATOR = "monitoring.coreos.com/v1"
# Volume types the "restricted" Pod Security Standard allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
# Renders (file stems) of the high availability variant, components/postgres.
POSTGRES = {"ha-postgres"}
# What components/postgres mounts and passes (README "High availability (PostgreSQL)").
POSTGRES_SECRET = "cloud66-ssl-exporter-postgres-url"
POSTGRES_URL_FILE = "--storage.postgres.url-file="


def main():
    repo, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    rules_text = (repo / "alerts/cloud66-ssl-exporter.rules.yml").read_text()
    rules = yaml.safe_load(rules_text)
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    jobs = {job for e in exprs for job in re.findall(r'\bjob="([^"]*)"', e)}
    dashboards = {p.name: p.read_text() for p in sorted((repo / "dashboards").glob("*.json"))}
    version = re.search(r'^version = "([^"]+)"', (repo / "Cargo.toml").read_text(), re.M)[1]
    errors = []
    for path in map(pathlib.Path, sys.argv[3:]):
        name = path.stem
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        problems = check(name, docs, rules, jobs, dashboards, version)
        errors += [f"{path.name}: {p}" for p in problems]
        core = [d for d in docs if d.get("apiVersion") in CORE]
        operator = [d for d in docs if d.get("apiVersion") == OPERATOR]
        (out / f"{name}.core.yaml").write_text(yaml.safe_dump_all(core, sort_keys=False))
        (out / f"{name}.operator.json").write_text(json.dumps(operator))
        kinds = ", ".join(sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs))
        print(f"  {path.name}: {len(docs)} objects: {kinds}")
    for e in errors:
        print(f"  FAIL {e}")
    sys.exit(1 if errors else 0)


def check(name, docs, rules, jobs, dashboards, version):
    errs = []
    by_kind = {}
    for d in docs:
        if d.get("apiVersion") not in CORE | {OPERATOR}:
            errs.append(f"{d.get('kind')} {d.get('apiVersion')}: no schema here validates this kind")
        by_kind.setdefault(d.get("kind"), []).append(d)
    ha = name in POSTGRES
    # The single writer keeps its store on a PersistentVolumeClaim; the replicas keep it in
    # PostgreSQL and have a PodDisruptionBudget instead (on one replica, a budget of
    # minAvailable 1 would block every node drain).
    need = ["ConfigMap", "Deployment", "PrometheusRule", "Service", "ServiceMonitor",
            "PodDisruptionBudget" if ha else "PersistentVolumeClaim"]
    absent = "PersistentVolumeClaim" if ha else "PodDisruptionBudget"
    for kind in need:
        if len(by_kind.get(kind, [])) != 1:
            errs.append(f"expected one {kind}, found {len(by_kind.get(kind, []))}")
    if by_kind.get(absent):
        errs.append(f"expected no {absent}, found {len(by_kind[absent])}")
    if errs:
        return errs
    one = {kind: by_kind[kind][0] for kind in need}
    rule, monitor, svc, dep, cm = (one[k] for k in ("PrometheusRule", "ServiceMonitor", "Service",
                                                    "Deployment", "ConfigMap"))

    # One source of truth: the rules file and the dashboards, unchanged.
    if set(rules) != {"groups"}:
        errs.append(f"the rules file has top-level keys {sorted(rules)}, only `groups` is embedded")
    if rule["spec"] != {"groups": rules["groups"]}:
        errs.append("PrometheusRule spec.groups differ from alerts/cloud66-ssl-exporter.rules.yml: "
                    "run deploy/kubernetes/generate")
    if cm["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
        errs.append("the dashboards ConfigMap lacks the label grafana_dashboard: \"1\"")
    if cm.get("data") != dashboards:
        errs.append("the dashboards ConfigMap differs from dashboards/*.json: run deploy/kubernetes/generate")
    if name != "base":
        for d in (rule, monitor):
            if not d["metadata"].get("labels", {}).get("release"):
                errs.append(f"{d['kind']} has no `release` label for kube-prometheus-stack")

    # The Deployment: one writer (or replicas on PostgreSQL), locked down, probed, sized.
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    if ha:
        errs += check_replicas(spec, pod, one["PodDisruptionBudget"])
    elif spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate":
        errs.append("the Deployment must have replicas: 1 and strategy Recreate (single writer)")
    if pod.get("automountServiceAccountToken") is not False:
        errs.append("automountServiceAccountToken must be false")
    psc = pod.get("securityContext", {})
    for c in pod["containers"]:
        csc = c.get("securityContext", {})
        merged = {**psc, **csc}
        want = {"runAsNonRoot": True, "runAsUser": 65534, "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False}
        for key, value in want.items():
            if merged.get(key) != value:
                errs.append(f"container {c['name']}: securityContext.{key} must be {value}")
        if csc.get("capabilities", {}).get("drop") != ["ALL"]:
            errs.append(f"container {c['name']}: capabilities must drop ALL")
        if merged.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            errs.append(f"container {c['name']}: seccompProfile must be RuntimeDefault")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            if c.get(probe, {}).get("httpGet", {}).get("path") != path:
                errs.append(f"container {c['name']}: {probe} must GET {path}")
        res = c.get("resources", {})
        if not all(res.get(k, {}).get(r) for k in ("requests", "limits") for r in ("cpu", "memory")):
            errs.append(f"container {c['name']}: needs cpu and memory requests and limits")
        if name == "base" and c["image"] != f"cloud66-ssl-exporter:{version}":
            errs.append(f"image {c['image']} is not cloud66-ssl-exporter:{version} (Cargo.toml)")
        if ha:
            errs += check_postgres_container(c, pod)
            continue
        pvc = one["PersistentVolumeClaim"]
        if "--storage.path=/data" not in c.get("args", []):
            errs.append("the container must be started with --storage.path=/data")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        data = next((v for v in pod.get("volumes", []) if v["name"] == mounts.get("/data")), {})
        if data.get("persistentVolumeClaim", {}).get("claimName") != pvc["metadata"]["name"]:
            errs.append("/data must be the PersistentVolumeClaim")
        if pvc["spec"].get("accessModes") not in (["ReadWriteOnce"], ["ReadWriteOncePod"]):
            errs.append("the PersistentVolumeClaim must be ReadWriteOnce (single writer)")
    for v in pod.get("volumes", []):
        if not set(v) - {"name"} <= RESTRICTED_VOLUMES:
            errs.append(f"volume {v['name']}: type not allowed by the restricted Pod Security Standard")

    # Service and ServiceMonitor reach the pod, and the job is the one the rules select.
    # `instance` names the Service while there is one pod (stable across restarts), and
    # each pod when there are replicas (the same labels on two targets would collide).
    instance = next((r.get("sourceLabels") for e in monitor["spec"]["endpoints"]
                     for r in e.get("relabelings", []) if r.get("targetLabel") == "instance"), None)
    per = "__meta_kubernetes_pod_name" if ha else "__meta_kubernetes_service_name"
    if instance != ["__meta_kubernetes_namespace", per]:
        errs.append(f"the ServiceMonitor must set instance from [__meta_kubernetes_namespace, {per}], "
                    f"not {instance}")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    if not svc["spec"]["selector"].items() <= pod_labels.items():
        errs.append("the Service's selector does not select the Deployment's pods")
    ports = {p.get("name"): p for p in svc["spec"]["ports"]}
    if ports.get("http", {}).get("port") != 10066:
        errs.append("the Service needs port 10066 named http")
    svc_labels = svc["metadata"].get("labels", {})
    if not monitor["spec"]["selector"].get("matchLabels", {}).items() <= svc_labels.items():
        errs.append("the ServiceMonitor's selector does not select the Service")
    if [e.get("port") for e in monitor["spec"]["endpoints"]] != ["http"]:
        errs.append("the ServiceMonitor must scrape the Service's http port")
    job = svc_labels.get(monitor["spec"].get("jobLabel"), svc["metadata"]["name"])
    if jobs != {job}:
        errs.append(f"the scrape job would be {job!r}, the rules select job {sorted(jobs)}")
    return errs


def check_replicas(spec, pod, pdb):
    """Two replicas that stay available: rollouts, drains and node failures leave one."""
    errs = []
    labels = spec["template"]["metadata"]["labels"]
    if spec.get("replicas") != 2:
        errs.append(f"the Deployment must have replicas: 2 on PostgreSQL, not {spec.get('replicas')}")
    strategy = spec.get("strategy", {})
    rolling = strategy.get("rollingUpdate", {})
    if strategy.get("type") != "RollingUpdate" or rolling.get("maxUnavailable") != 0 \
            or rolling.get("maxSurge") in (None, 0, "0%"):
        errs.append("the Deployment must roll out with RollingUpdate, maxUnavailable: 0 and a "
                    "maxSurge (a new replica is ready before an old one stops)")
    budget = pdb["spec"]
    selector = budget.get("selector", {})
    if budget.get("minAvailable") != 1 or "maxUnavailable" in budget:
        errs.append("the PodDisruptionBudget must have minAvailable: 1 (and no maxUnavailable)")
    if set(selector) != {"matchLabels"} or not selector["matchLabels"] \
            or not selector["matchLabels"].items() <= labels.items():
        errs.append("the PodDisruptionBudget's selector (matchLabels only) does not select the pods")
    terms = pod.get("affinity", {}).get("podAntiAffinity", {}) \
        .get("preferredDuringSchedulingIgnoredDuringExecution", [])
    if not any(t["podAffinityTerm"].get("topologyKey") == "kubernetes.io/hostname"
               and set(t["podAffinityTerm"].get("labelSelector", {})) == {"matchLabels"}
               and t["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
               for t in terms):
        errs.append("the pods need a preferred podAntiAffinity over kubernetes.io/hostname "
                    "selecting their own labels (replicas on different nodes)")
    if pod.get("affinity", {}).get("podAntiAffinity", {}) \
            .get("requiredDuringSchedulingIgnoredDuringExecution"):
        errs.append("the podAntiAffinity must be preferred, not required (a one-node cluster "
                    "could not run the second replica, nor surge during a rollout)")
    return errs


def check_postgres_container(c, pod):
    """The URL from the Secret, as a file; nothing of the embedded store left."""
    errs = []
    args = c.get("args", [])
    env = {e["name"] for e in c.get("env", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = c.get("volumeMounts", [])
    if any(a == "--storage.path" or a.startswith("--storage.path=") for a in args) \
            or "CLOUD66_SSL_EXPORTER_STORAGE_PATH" in env:
        errs.append("--storage.path (or its variable) is refused together with a PostgreSQL URL")
    if any(m["mountPath"] == "/data" for m in mounts) or "data" in volumes \
            or any("persistentVolumeClaim" in v or "ephemeral" in v for v in volumes.values()):
        errs.append("no data volume on PostgreSQL: no volume named data, no claim, nothing at /data")
    if any(a.startswith("--storage.postgres.url") and not a.startswith(POSTGRES_URL_FILE) for a in args) \
            or "CLOUD66_SSL_EXPORTER_STORAGE_POSTGRES_URL" in env:
        errs.append("the URL holds a password: pass it as a file, not as an argument or variable")
    files = [a[len(POSTGRES_URL_FILE):] for a in args if a.startswith(POSTGRES_URL_FILE)]
    if len(files) != 1:
        return errs + [f"expected one {POSTGRES_URL_FILE}FILE argument, found {len(files)}"]
    path = pathlib.PurePosixPath(files[0])
    mount = next((m for m in mounts if path.parent == pathlib.PurePosixPath(m["mountPath"])), None)
    secret = volumes.get(mount["name"], {}).get("secret", {}) if mount else {}
    if secret.get("secretName") != POSTGRES_SECRET:
        errs.append(f"{path} must be in a mount of Secret {POSTGRES_SECRET}")
    else:
        items = {i["path"]: i["key"] for i in secret.get("items", [])}
        if (items.get(path.name) if items else path.name) != "url" or mount.get("subPath"):
            errs.append(f"{path} must be the key `url` of Secret {POSTGRES_SECRET}")
        if not mount.get("readOnly"):
            errs.append(f"the mount of Secret {POSTGRES_SECRET} must be readOnly")
        if secret.get("optional"):
            errs.append(f"Secret {POSTGRES_SECRET} must not be optional (no URL, no storage)")
    return errs


if __name__ == "__main__":
    main()
