#!/usr/bin/env python3
"""Renders and checks helm/lextral with Helm itself (helm-python-sdk: Helm
v4's SDK, offline) for the default values and every file in ci/:

1. `helm lint --strict` (values.schema.json included);
2. every rendered object validated against the Kubernetes schemas
   (kubernetes-validate, strict) of the oldest and the newest Kubernetes
   version the chart supports;
3. the wiring neither catches: Services and policies that select no pods,
   probes and Service targets on ports no container opens, missing
   resources or security settings, Secrets, ConfigMaps and claims a pod
   reads that are not rendered (unless the chart names them as the user's
   own in the annotation lextral.dev/external-refs).

    helm/check.py [CHART]

It first proves its own checks bite: mistakes planted in the default render
(a Service target no container opens, a probe on a closed port, a pod that
may run as root, an undeclared Secret) and in the values (a value the
schema forbids, an unknown key) must each be reported.
"""

import pathlib
import sys

import helm_python as helm
import kubernetes_validate
import yaml

CHART = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent / "lextral")
# The chart's kubeVersion floor and the newest schemas kubernetes-validate has.
KUBE_VERSIONS = ["1.27.0", "1.37.0"]


def get(value, *path):
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def items(value, *path):
    found = get(value, *path)
    return found if isinstance(found, list) else []


def labels_of(value, *path):
    found = get(value, *path)
    return {k: str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class Workload:
    def __init__(self, obj):
        self.kind, self.name = obj["kind"], obj["metadata"]["name"]
        self.labels = labels_of(obj, "spec", "template", "metadata", "labels")
        self.pod = get(obj, "spec", "template", "spec") or {}
        self.ports = set()
        for container in items(self.pod, "containers"):
            for port in items(container, "ports"):
                self.ports.add(str(port.get("containerPort")))
                if port.get("name"):
                    self.ports.add(port["name"])

    def opens(self, port):
        return port is not None and str(port) in self.ports


def wiring(objects):
    """Every problem found, one line each."""
    problems = []

    def fail(obj, message):
        problems.append(f"{obj.get('kind')}/{get(obj, 'metadata', 'name')}: {message}")

    names, workloads, services = set(), [], set()
    for obj in objects:
        kind, name = obj.get("kind"), get(obj, "metadata", "name")
        if not obj.get("apiVersion") or not kind or not name:
            fail(obj, "needs apiVersion, kind and metadata.name")
            continue
        if f"{kind}/{name}" in names:
            fail(obj, "rendered twice")
        names.add(f"{kind}/{name}")
        if kind in ("Deployment", "StatefulSet"):
            workload = Workload(obj)
            if not selects(labels_of(obj, "spec", "selector", "matchLabels"), workload.labels):
                fail(obj, "spec.selector does not match the pod template's labels")
            containers = items(workload.pod, "containers")
            if not containers:
                fail(obj, "no containers")
            for container in containers:
                cname = container.get("name")
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    spec = container.get(probe)
                    if spec is None:
                        if probe != "startupProbe":
                            fail(obj, f"container {cname} has no {probe}")
                        continue
                    port = next((get(spec, h, "port") for h in ("grpc", "httpGet", "tcpSocket") if h in spec), None)
                    if port is None and "exec" not in spec:
                        fail(obj, f"container {cname}: {probe} has no handler")
                    elif port is not None and not workload.opens(port):
                        fail(obj, f"container {cname}: {probe} port {port} is not a container port")
                if get(container, "resources", "requests") is None or get(container, "resources", "limits") is None:
                    fail(obj, f"container {cname} has no resource requests and limits")
                if get(container, "securityContext", "allowPrivilegeEscalation") is not False:
                    fail(obj, f"container {cname} must set allowPrivilegeEscalation: false")
            if get(workload.pod, "securityContext", "runAsNonRoot") is not True:
                fail(obj, "pod securityContext.runAsNonRoot must be true")
            workloads.append(workload)
        elif kind == "Service":
            services.add(name)

    def workload_for(selector):
        return next((w for w in workloads if selects(selector, w.labels)), None)

    def job_pods(selector):
        return any(o.get("kind") == "Job" and selects(selector, labels_of(o, "spec", "template", "metadata", "labels"))
                   for o in objects)

    for obj in objects:
        kind = obj.get("kind")
        if kind == "Service":
            workload = workload_for(labels_of(obj, "spec", "selector"))
            if workload is None:
                fail(obj, "selects no Deployment or StatefulSet")
                continue
            for port in items(obj, "spec", "ports"):
                target = port.get("targetPort", port.get("port"))
                if not workload.opens(target):
                    fail(obj, f"targetPort {target} is not a port of {workload.kind}/{workload.name}")
        elif kind == "HorizontalPodAutoscaler":
            ref = f"{get(obj, 'spec', 'scaleTargetRef', 'kind')}/{get(obj, 'spec', 'scaleTargetRef', 'name')}"
            if ref not in names:
                fail(obj, f"scales {ref}, which is not rendered")
        elif kind == "PodDisruptionBudget":
            if workload_for(labels_of(obj, "spec", "selector", "matchLabels")) is None:
                fail(obj, "selects no pods")
        elif kind == "NetworkPolicy":
            workload = workload_for(labels_of(obj, "spec", "podSelector", "matchLabels"))
            if workload is None:
                fail(obj, "podSelector selects no Deployment or StatefulSet")
                continue
            for rule in items(obj, "spec", "ingress"):
                for source in items(rule, "from"):
                    selector = labels_of(source, "podSelector", "matchLabels")
                    if "podSelector" in source and workload_for(selector) is None and not job_pods(selector):
                        fail(obj, f"admits pods {selector}, which no workload or Job has")
                for port in items(rule, "ports"):
                    if not workload.opens(port.get("port")):
                        fail(obj, f"port {port.get('port')} is not a port of {workload.kind}/{workload.name}")
        elif kind == "Ingress":
            for rule in items(obj, "spec", "rules"):
                for path in items(rule, "http", "paths"):
                    service = get(path, "backend", "service", "name")
                    if service not in services:
                        fail(obj, f"backend service {service} is not rendered")
        external = str(labels_of(obj, "metadata", "annotations").get("lextral.dev/external-refs", ""))
        for pod in (get(obj, "spec", "template", "spec"), get(obj, "spec", "jobTemplate", "spec", "template", "spec")):
            if not pod:
                continue
            for container in items(pod, "containers") + items(pod, "initContainers"):
                for env in items(container, "env"):
                    for ref_kind, ref in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                        name = get(env, "valueFrom", ref, "name")
                        if name and f"{ref_kind}/{name}" not in names and name not in external:
                            fail(obj, f"reads {ref_kind} {name}, which is not rendered")
                for source in items(container, "envFrom"):
                    name = get(source, "configMapRef", "name")
                    if name and f"ConfigMap/{name}" not in names:
                        fail(obj, f"reads ConfigMap {name}, which is not rendered")
            for volume in items(pod, "volumes"):
                name = get(volume, "secret", "secretName")
                if name and f"Secret/{name}" not in names and name not in external:
                    fail(obj, f"mounts Secret {name}, which is not rendered")
                name = get(volume, "persistentVolumeClaim", "claimName")
                if name and f"PersistentVolumeClaim/{name}" not in names and name not in external:
                    fail(obj, f"mounts claim {name}, which is not rendered")
    return problems


def render(chart, values):
    manifests = chart.render(values, name="lextral", namespace="lextral", is_install=True)
    objects = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        objects += [obj for obj in yaml.safe_load_all(text) if obj]
    return objects


def check(values_file):
    values = yaml.safe_load(values_file.read_text()) if values_file else None
    label = values_file.name if values_file else "default values"
    problems = []
    report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSIONS[0]}")
    problems += [f"helm lint: {m['path']}: {m['error']}" for m in report["messages"]]
    problems += [f"helm lint: {e}" for e in report["errors"]]
    objects = render(helm.Chart.load(str(CHART)), values)
    for obj in objects:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = "/".join(str(p) for p in error.path)
                problems.append(f"{obj.get('kind')}/{get(obj, 'metadata', 'name')}: Kubernetes {version}: "
                                f"{where}: {error.message}")
    problems += wiring(objects)
    kinds = {}
    for obj in objects:
        kinds[obj.get("kind")] = kinds.get(obj.get("kind"), 0) + 1
    summary = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    return label, problems, f"{len(objects)} objects ({summary})"


def self_test():
    """Each planted mistake must be found; returns what was not."""
    import copy
    base = render(helm.Chart.load(str(CHART)), None)
    missed = []

    def planted(what, change, expect):
        objects = copy.deepcopy(base)
        change(objects)
        if not any(expect in problem for problem in wiring(objects)):
            missed.append(what)

    def first(objects, kind):
        return next(o for o in objects if o["kind"] == kind)

    def service_target(objects):
        first(objects, "Service")["spec"]["ports"][0]["targetPort"] = 1

    def probe_port(objects):
        container = first(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        probe = container["readinessProbe"]
        probe[next(h for h in ("grpc", "httpGet", "tcpSocket") if h in probe)]["port"] = 1

    def root(objects):
        first(objects, "Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False

    def secret(objects):
        pod = first(objects, "Deployment")["spec"]["template"]["spec"]
        pod.setdefault("volumes", []).append({"name": "x", "secret": {"secretName": "not-rendered"}})

    planted("a wrong Service targetPort", service_target, "is not a port of")
    planted("a probe on a closed port", probe_port, "is not a container port")
    planted("runAsNonRoot: false", root, "runAsNonRoot must be true")
    planted("an undeclared Secret", secret, "mounts Secret not-rendered")
    for what, values in (("retriever.pgSearch: bogus", {"retriever": {"pgSearch": "bogus"}}),
                         ("an unknown top-level key", {"no_such_value": 1})):
        report = helm.lint(str(CHART), values, strict=True)
        if not report["errors"] and not any(m["severity"] >= 3 for m in report["messages"]):
            missed.append(what)
    return missed


def main():
    missed = self_test()
    if missed:
        print(f"helm-check: the checks missed planted mistakes: {', '.join(missed)}")
        sys.exit(1)
    print("helm-check: planted mistakes all caught (Service target, probe port, root pod, Secret, schema x2)")
    failed = False
    for values_file in [None, *sorted((CHART / "ci").glob("*.yaml"))]:
        label, problems, summary = check(values_file)
        if problems:
            failed = True
            print(f"helm-check: {label} FAILED:")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"helm-check: {label}: lint --strict clean, Kubernetes {' and '.join(KUBE_VERSIONS)} "
                  f"schemas valid, wiring ok: {summary}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
