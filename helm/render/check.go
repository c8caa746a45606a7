package main

// The checks helm/check.sh runs on a rendered chart: what `helm lint` and a
// cluster would reject, and the wiring mistakes neither catches (a Service
// selecting no pods, a probe on a port the container does not open).

import (
	"fmt"
	"sort"
	"strings"
)

func get(v interface{}, path ...string) interface{} {
	for _, key := range path {
		m, ok := v.(map[string]interface{})
		if !ok {
			return nil
		}
		v = m[key]
	}
	return v
}

func str(v interface{}, path ...string) string {
	s, _ := get(v, path...).(string)
	return s
}

func list(v interface{}, path ...string) []interface{} {
	l, _ := get(v, path...).([]interface{})
	return l
}

func stringMap(v interface{}) map[string]string {
	out := map[string]string{}
	if m, ok := v.(map[string]interface{}); ok {
		for k, val := range m {
			out[k] = fmt.Sprint(val)
		}
	}
	return out
}

// workload is a Deployment or StatefulSet: its pod labels and open ports.
type workload struct {
	kind, name string
	labels     map[string]string
	ports      map[string]int // by name, and by number as its decimal string
	pod        interface{}
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func portOf(w workload, port interface{}) bool {
	switch p := port.(type) {
	case int:
		_, ok := w.ports[fmt.Sprint(p)]
		return ok
	case string:
		_, ok := w.ports[p]
		return ok
	}
	return false
}

// Check returns every problem found, one line each.
func Check(docs []Document) []string {
	var problems []string
	fail := func(doc Document, format string, args ...interface{}) {
		problems = append(problems, fmt.Sprintf("%s: %s/%s: %s",
			doc.Source, str(doc.Object, "kind"), str(doc.Object, "metadata", "name"),
			fmt.Sprintf(format, args...)))
	}
	names := map[string]bool{}
	var workloads []workload
	services := map[string]Document{}
	for _, doc := range docs {
		kind, name := str(doc.Object, "kind"), str(doc.Object, "metadata", "name")
		if str(doc.Object, "apiVersion") == "" || kind == "" || name == "" {
			fail(doc, "needs apiVersion, kind and metadata.name")
			continue
		}
		key := kind + "/" + name
		if names[key] {
			fail(doc, "rendered twice")
		}
		names[key] = true
		switch kind {
		case "Deployment", "StatefulSet":
			w := workload{kind: kind, name: name, ports: map[string]int{},
				labels: stringMap(get(doc.Object, "spec", "template", "metadata", "labels")),
				pod:    get(doc.Object, "spec", "template", "spec")}
			if !selects(stringMap(get(doc.Object, "spec", "selector", "matchLabels")), w.labels) {
				fail(doc, "spec.selector does not match the pod template's labels")
			}
			containers := list(w.pod, "containers")
			if len(containers) == 0 {
				fail(doc, "no containers")
			}
			for _, c := range containers {
				for _, p := range list(c, "ports") {
					number, _ := get(p, "containerPort").(int)
					w.ports[fmt.Sprint(number)] = number
					if n := str(p, "name"); n != "" {
						w.ports[n] = number
					}
				}
			}
			for _, c := range containers {
				cname := str(c, "name")
				for _, probe := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
					p := get(c, probe)
					if p == nil {
						if probe != "startupProbe" {
							fail(doc, "container %s has no %s", cname, probe)
						}
						continue
					}
					var port interface{}
					for _, handler := range []string{"grpc", "httpGet", "tcpSocket"} {
						if h := get(p, handler); h != nil {
							port = get(h, "port")
						}
					}
					if port == nil && get(p, "exec") == nil {
						fail(doc, "container %s: %s has no handler", cname, probe)
					} else if port != nil && !portOf(w, port) {
						fail(doc, "container %s: %s port %v is not a container port", cname, probe, port)
					}
				}
				if get(c, "resources", "requests") == nil || get(c, "resources", "limits") == nil {
					fail(doc, "container %s has no resource requests and limits", cname)
				}
				if get(c, "securityContext", "allowPrivilegeEscalation") != false {
					fail(doc, "container %s must set allowPrivilegeEscalation: false", cname)
				}
			}
			if get(w.pod, "securityContext", "runAsNonRoot") != true {
				fail(doc, "pod securityContext.runAsNonRoot must be true")
			}
			workloads = append(workloads, w)
		case "Service":
			services[name] = doc
		}
	}
	findWorkload := func(selector map[string]string) *workload {
		for i := range workloads {
			if selects(selector, workloads[i].labels) {
				return &workloads[i]
			}
		}
		return nil
	}
	for _, doc := range docs {
		switch str(doc.Object, "kind") {
		case "Service":
			w := findWorkload(stringMap(get(doc.Object, "spec", "selector")))
			if w == nil {
				fail(doc, "selects no Deployment or StatefulSet")
				continue
			}
			for _, p := range list(doc.Object, "spec", "ports") {
				target := get(p, "targetPort")
				if target == nil {
					target = get(p, "port")
				}
				if !portOf(*w, target) {
					fail(doc, "targetPort %v is not a port of %s/%s", target, w.kind, w.name)
				}
			}
		case "HorizontalPodAutoscaler":
			ref := str(doc.Object, "spec", "scaleTargetRef", "kind") + "/" + str(doc.Object, "spec", "scaleTargetRef", "name")
			if !names[ref] {
				fail(doc, "scales %s, which is not rendered", ref)
			}
		case "PodDisruptionBudget":
			if findWorkload(stringMap(get(doc.Object, "spec", "selector", "matchLabels"))) == nil {
				fail(doc, "selects no pods")
			}
		case "NetworkPolicy":
			w := findWorkload(stringMap(get(doc.Object, "spec", "podSelector", "matchLabels")))
			if w == nil {
				fail(doc, "podSelector selects no Deployment or StatefulSet")
				continue
			}
			for _, rule := range list(doc.Object, "spec", "ingress") {
				for _, from := range list(rule, "from") {
					selector := stringMap(get(from, "podSelector", "matchLabels"))
					if findWorkload(selector) == nil && !jobPods(docs, selector) {
						fail(doc, "admits pods %v, which no workload or Job has", selector)
					}
				}
				for _, p := range list(rule, "ports") {
					if !portOf(*w, get(p, "port")) {
						fail(doc, "port %v is not a port of %s/%s", get(p, "port"), w.kind, w.name)
					}
				}
			}
		case "Ingress":
			for _, rule := range list(doc.Object, "spec", "rules") {
				for _, path := range list(rule, "http", "paths") {
					svc := str(path, "backend", "service", "name")
					if _, ok := services[svc]; !ok {
						fail(doc, "backend service %s is not rendered", svc)
					}
				}
			}
		}
		// Every Secret, ConfigMap and claim a pod reads by name must be
		// rendered, unless the chart names it as the user's own
		// (annotation lextral.dev/external-refs).
		for _, pod := range []interface{}{get(doc.Object, "spec", "template", "spec"), get(doc.Object, "spec", "jobTemplate", "spec", "template", "spec")} {
			if pod == nil {
				continue
			}
			external := stringMap(get(doc.Object, "metadata", "annotations"))["lextral.dev/external-refs"]
			for _, c := range append(list(pod, "containers"), list(pod, "initContainers")...) {
				for _, env := range list(c, "env") {
					for kind, ref := range map[string]string{"Secret": "secretKeyRef", "ConfigMap": "configMapKeyRef"} {
						if name := str(env, "valueFrom", ref, "name"); name != "" && !names[kind+"/"+name] && !strings.Contains(external, name) {
							fail(doc, "reads %s %s, which is not rendered", kind, name)
						}
					}
				}
				for _, from := range list(c, "envFrom") {
					if name := str(from, "configMapRef", "name"); name != "" && !names["ConfigMap/"+name] {
						fail(doc, "reads ConfigMap %s, which is not rendered", name)
					}
				}
			}
			for _, volume := range list(pod, "volumes") {
				if name := str(volume, "secret", "secretName"); name != "" && !names["Secret/"+name] && !strings.Contains(external, name) {
					fail(doc, "mounts Secret %s, which is not rendered", name)
				}
				if name := str(volume, "persistentVolumeClaim", "claimName"); name != "" && !names["PersistentVolumeClaim/"+name] && !strings.Contains(external, name) {
					fail(doc, "mounts claim %s, which is not rendered", name)
				}
			}
		}
	}
	return problems
}

// jobPods reports whether some Job's pod template carries the labels.
func jobPods(docs []Document, selector map[string]string) bool {
	for _, doc := range docs {
		if str(doc.Object, "kind") == "Job" && selects(selector, stringMap(get(doc.Object, "spec", "template", "metadata", "labels"))) {
			return true
		}
	}
	return false
}

// Summary counts the rendered objects per kind.
func Summary(docs []Document) string {
	counts := map[string]int{}
	for _, doc := range docs {
		counts[str(doc.Object, "kind")]++
	}
	var kinds []string
	for kind, n := range counts {
		kinds = append(kinds, fmt.Sprintf("%s %d", kind, n))
	}
	sort.Strings(kinds)
	return fmt.Sprintf("%d objects: %s", len(docs), strings.Join(kinds, ", "))
}
