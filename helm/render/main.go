// Command render renders a Helm chart the way `helm template` does, for
// machines without helm: Go text/template with the sprig functions and
// Helm's own (include, tpl, toYaml, fromYaml, required), the chart's
// values.yaml deep-merged with -f files. With -check it also checks the
// rendered objects (see check.go). Built by helm/check.sh from Debian's
// golang packages; no network.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig/v3"
	"gopkg.in/yaml.v3"
)

type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

// Document is one rendered object with the template it came from.
type Document struct {
	Source string
	Text   string
	Object map[string]interface{}
}

func readYAML(path string) (map[string]interface{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// merge deep-merges src into dst: maps merge key by key, anything else replaces.
func merge(dst, src map[string]interface{}) map[string]interface{} {
	for key, value := range src {
		if srcMap, ok := value.(map[string]interface{}); ok {
			if dstMap, ok := dst[key].(map[string]interface{}); ok {
				dst[key] = merge(dstMap, srcMap)
				continue
			}
		}
		dst[key] = value
	}
	return dst
}

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func fromYAML(s string) map[string]interface{} {
	out := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(s), &out); err != nil {
		out["Error"] = err.Error()
	}
	return out
}

func render(chartDir string, files []string, release, namespace string) ([]Document, error) {
	chart, err := readYAML(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return nil, err
	}
	values, err := readYAML(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		override, err := readYAML(f)
		if err != nil {
			return nil, err
		}
		values = merge(values, override)
	}
	data := map[string]interface{}{
		"Values": values,
		"Chart": map[string]interface{}{
			"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"],
		},
		"Template": map[string]interface{}{
			"BasePath": filepath.Join(filepath.Base(chartDir), "templates"),
		},
		"Release": map[string]interface{}{
			"Name": release, "Namespace": namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
	}

	root := template.New("chart")
	funcs := sprig.TxtFuncMap()
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = fromYAML
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := root.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		err = t.Execute(&buf, data)
		return buf.String(), err
	}
	// As `helm template`: no cluster to ask, so nothing exists yet.
	funcs["lookup"] = func(apiVersion, kind, namespace, name string) map[string]interface{} {
		return map[string]interface{}{}
	}
	funcs["required"] = func(message string, value interface{}) (interface{}, error) {
		if value == nil || value == "" {
			return nil, fmt.Errorf("%s", message)
		}
		return value, nil
	}
	root.Funcs(funcs).Option("missingkey=zero")

	paths, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var manifests []string
	for _, path := range paths {
		notes := filepath.Base(path) == "NOTES.txt"
		if !strings.HasSuffix(path, ".yaml") && !strings.HasSuffix(path, ".tpl") && !notes {
			continue
		}
		text, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		name := filepath.Join(filepath.Base(chartDir), "templates", filepath.Base(path))
		if _, err := root.New(name).Parse(string(text)); err != nil {
			return nil, err
		}
		if strings.HasSuffix(path, ".yaml") && !strings.HasPrefix(filepath.Base(path), "_") {
			manifests = append(manifests, name)
		}
	}
	// NOTES.txt is shown, not applied: it must render, nothing more.
	if t := root.Lookup(filepath.Join(filepath.Base(chartDir), "templates", "NOTES.txt")); t != nil {
		if err := t.Execute(&bytes.Buffer{}, data); err != nil {
			return nil, err
		}
	}
	var docs []Document
	for _, name := range manifests {
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return nil, err
		}
		for _, part := range strings.Split(buf.String(), "\n---") {
			text := strings.TrimSpace(strings.TrimPrefix(part, "---"))
			if text == "" {
				continue
			}
			object := map[string]interface{}{}
			if err := yaml.Unmarshal([]byte(text), &object); err != nil {
				return nil, fmt.Errorf("%s renders invalid YAML: %w\n%s", name, err, text)
			}
			if len(object) == 0 {
				continue // only comments
			}
			docs = append(docs, Document{Source: name, Text: text, Object: object})
		}
	}
	return docs, nil
}

func main() {
	var files valueFiles
	flag.Var(&files, "f", "values file (repeatable; later files win)")
	release := flag.String("name", "lextral", "release name")
	namespace := flag.String("namespace", "default", "namespace")
	check := flag.Bool("check", false, "check the rendered objects and print a summary instead of the YAML")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: render [-f values.yaml]... [-check] CHART_DIR")
		os.Exit(2)
	}
	docs, err := render(flag.Arg(0), files, *release, *namespace)
	if err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
	if *check {
		problems := Check(docs)
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "check:", p)
		}
		if len(problems) > 0 {
			os.Exit(1)
		}
		fmt.Println(Summary(docs))
		return
	}
	for _, doc := range docs {
		fmt.Printf("---\n# Source: %s\n%s\n", doc.Source, doc.Text)
	}
}
