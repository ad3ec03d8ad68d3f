#!/usr/bin/env python3
"""Checks the output of `kubectl kustomize` for deploy/kubernetes/check.

usage: check-rendered.py REPO OUT_DIR RENDERED.yaml...

For each rendered file NAME.yaml: writes its core kinds to OUT_DIR/NAME.core.yaml (for
kubernetes-validate --strict) and its Prometheus Operator kinds to
OUT_DIR/NAME.operator.json (for check-operator.mjs), refuses any other kind, and checks
what no schema can: the PrometheusRule's groups equal the rules file's, the dashboards
ConfigMap holds dashboards/*.json as they are, and the Deployment, Service,
ServiceMonitor and volume fit together the way the README promises.
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
    need = ["ConfigMap", "Deployment", "PersistentVolumeClaim", "PrometheusRule", "Service", "ServiceMonitor"]
    for kind in need:
        if len(by_kind.get(kind, [])) != 1:
            errs.append(f"expected one {kind}, found {len(by_kind.get(kind, []))}")
    if errs:
        return errs
    one = {kind: by_kind[kind][0] for kind in need}
    rule, monitor, svc, dep, pvc, cm = (one[k] for k in ("PrometheusRule", "ServiceMonitor", "Service",
                                                         "Deployment", "PersistentVolumeClaim", "ConfigMap"))

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

    # The Deployment: one writer, locked down, probed, sized.
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    if spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate":
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
        if "--storage.path=/data" not in c.get("args", []):
            errs.append("the container must be started with --storage.path=/data")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        data = next((v for v in pod.get("volumes", []) if v["name"] == mounts.get("/data")), {})
        if data.get("persistentVolumeClaim", {}).get("claimName") != pvc["metadata"]["name"]:
            errs.append("/data must be the PersistentVolumeClaim")
    for v in pod.get("volumes", []):
        if not set(v) - {"name"} <= RESTRICTED_VOLUMES:
            errs.append(f"volume {v['name']}: type not allowed by the restricted Pod Security Standard")
    if pvc["spec"].get("accessModes") not in (["ReadWriteOnce"], ["ReadWriteOncePod"]):
        errs.append("the PersistentVolumeClaim must be ReadWriteOnce (single writer)")

    # Service and ServiceMonitor reach the pod, and the job is the one the rules select.
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


if __name__ == "__main__":
    main()
