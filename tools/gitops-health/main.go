// Command gitops-health tests GitOps health checks (and Argo CD resource
// actions) for custom resources with the engines Argo CD and Flux embed:
//
//   - Argo CD: resource customizations in Argo CD's resource_customizations
//     layout run by Argo CD's own Lua VM (github.com/argoproj/argo-cd/v3/util/lua);
//   - Flux: kustomize-controller healthCheckExprs evaluated by Flux's own CEL
//     status reader (github.com/fluxcd/pkg/runtime/cel).
//
// Run it without arguments for the usage. Built by tools/gitops-health.sh.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling/engine"
	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/fluxcd/pkg/apis/kustomize"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const usage = `gitops-health: test GitOps health checks with the engines Argo CD and Flux embed.

  gitops-health argocd [-libs MODE] <root>
      Every <group>/<Kind>/ directory under <root> in Argo CD's resource_customizations
      layout: health.lua + health_test.yaml (+ testdata/), actions/discovery.lua,
      actions/<action>/action.lua + actions/action_test.yaml (+ actions/testdata/).
      One line per case; exit 1 if a case fails or no case is found.
  gitops-health argocd-health [-libs MODE] <Kind dir> <object.yaml|->
      The health Argo CD shows for one object, as {"status":...,"message":...}.
  gitops-health argocd-discovery [-libs MODE] <Kind dir> <object.yaml|->
      The actions Argo CD offers for one object (JSON list).
  gitops-health argocd-action [-libs MODE] [-o yaml|json] [-param name=value]... <Kind dir> <action> <object.yaml|->
      The object after running an action (or, for actions returning several
      resources, the list in the format of an expectedOutputPath file).
  gitops-health flux <exprs.yaml> <tests.yaml>
      exprs.yaml: a list of Kustomization spec.healthCheckExprs entries
      ({apiVersion, kind, current, inProgress, failed}) or a whole Kustomization;
      tests.yaml: tests: [{inputPath, status}], status Current|InProgress|Failed|Unknown
      (Unknown: an expression failed to evaluate). Exit 1 on a failure or no case.
  gitops-health flux-status <exprs.yaml> <object.yaml|->
      The status kustomize-controller computes for one object, as {"status":...}.
  gitops-health version
      The module versions of the engines in this binary.

  -libs tests|cm|cm-openlibs (default tests): ` + libsUsage + `

Exit status: 0 ok; 1 a test failed or no test was found; 2 bad usage or input;
3 (argocd-health, argocd-discovery, argocd-action, flux-status) the engine reported an error (a
Lua or CEL failure): the JSON still shows what Argo CD / Flux would show.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	fset := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fset.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	libs := fset.String("libs", "tests", libsUsage)
	output := fset.String("o", "yaml", "argocd-action output: yaml or json")
	params := map[string]string{}
	fset.Func("param", "argocd-action parameter name=value (repeatable)", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("want name=value, got %q", s)
		}
		params[k] = v
		return nil
	})
	if err := fset.Parse(args); err != nil {
		os.Exit(2)
	}
	mode, err := parseLibs(*libs)
	if err != nil {
		fatal(2, err)
	}
	pos := fset.Args()
	need := func(n int) {
		if len(pos) != n {
			fmt.Fprintf(os.Stderr, "%s: want %d arguments, got %d\n\n", cmd, n, len(pos))
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
	}

	switch cmd {
	case "argocd":
		need(1)
		r := newReporter()
		if err := runArgoCD(pos[0], mode, r); err != nil {
			fatal(2, err)
		}
		os.Exit(r.finish(pos[0]))

	case "argocd-health":
		need(2)
		c, obj := loadCustomizationAndObject(pos[0], pos[1])
		h, err := argocdHealth(c, mode, obj)
		if h == nil && err != nil {
			fatal(2, err)
		}
		fmt.Println(healthJSON(h))
		if err != nil {
			fatal(3, luaErr("health.lua", err))
		}

	case "argocd-discovery":
		need(2)
		c, obj := loadCustomizationAndObject(pos[0], pos[1])
		if err := c.checkKind(obj); err != nil {
			fatal(2, err)
		}
		actions, err := discoverActions(c, mode, obj)
		if err != nil {
			fatal(3, luaErr("actions/discovery.lua", err))
		}
		printJSON(actions)

	case "argocd-action":
		need(3)
		if *output != "yaml" && *output != "json" {
			fatal(2, fmt.Errorf("-o: want yaml or json, got %q", *output))
		}
		c, obj := loadCustomizationAndObject(pos[0], pos[2])
		if err := c.checkKind(obj); err != nil {
			fatal(2, err)
		}
		impacted, err := runAction(c, mode, obj, pos[1], params)
		if err != nil {
			fatal(3, luaErr("actions/"+pos[1]+"/action.lua", err))
		}
		out := actionOutput(impacted)
		if *output == "json" {
			printJSON(out)
		} else {
			b, err := yaml.Marshal(out)
			if err != nil {
				fatal(2, err)
			}
			os.Stdout.Write(b)
		}

	case "flux":
		need(2)
		r := newReporter()
		if err := runFlux(pos[0], pos[1], r); err != nil {
			fatal(2, err)
		}
		os.Exit(r.finish(pos[1]))

	case "flux-status":
		need(2)
		ev, err := loadFluxExprs(pos[0])
		if err != nil {
			fatal(2, err)
		}
		obj, err := readObject(pos[1])
		if err != nil {
			fatal(2, err)
		}
		st, evalErr, err := ev.status(obj)
		if err != nil {
			fatal(2, err)
		}
		res := struct {
			Status string `json:"status"`
			Error  string `json:"error,omitempty"`
		}{Status: string(st)}
		if evalErr != nil {
			res.Error = evalErr.Error()
		}
		fmt.Println(compactJSON(res))
		if evalErr != nil {
			fatal(3, evalErr)
		}

	case "version":
		need(0)
		printVersions()

	case "help", "-h", "-help", "--help":
		fmt.Print(usage)

	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n\n", cmd)
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
}

func fatal(code int, err error) {
	fmt.Fprintf(os.Stderr, "gitops-health: %v\n", err)
	os.Exit(code)
}

func printJSON(v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fatal(2, err)
	}
	os.Stdout.Write(buf.Bytes())
}

// compactJSON is v as one line of JSON, without escaping <, > and &.
func compactJSON(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func loadCustomizationAndObject(dir, objPath string) (*customization, *unstructured.Unstructured) {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		fatal(2, fmt.Errorf("%s: not a directory", dir))
	}
	c, err := loadCustomization(dir)
	if err != nil {
		fatal(2, err)
	}
	obj, err := readObject(objPath)
	if err != nil {
		fatal(2, err)
	}
	return c, obj
}

// readObject reads one Kubernetes object (YAML or JSON; "-" is stdin) the way a
// client reading it from the API server would: integers become int64, which
// matters to Flux (status.observedGeneration) and to CEL, not to Lua.
func readObject(path string) (*unstructured.Unstructured, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	var docs [][]byte
	rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
	if len(docs) != 1 {
		return nil, fmt.Errorf("%s: want exactly one YAML document, found %d", path, len(docs))
	}
	j, err := yaml.YAMLToJSON(docs[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(j); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if obj.GetAPIVersion() == "" || obj.GetKind() == "" {
		return nil, fmt.Errorf("%s: the object needs apiVersion and kind", path)
	}
	if obj.IsList() {
		return nil, fmt.Errorf("%s: is a %s; want a single object", path, obj.GetKind())
	}
	return obj, nil
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// unmarshalTestFile decodes a test file like Argo CD's tests do (sigs.k8s.io/yaml,
// unknown fields ignored), warning about unknown fields so typos are visible.
func unmarshalTestFile(path string, data []byte, v any) error {
	if err := yaml.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := yaml.UnmarshalStrict(data, v); err != nil {
		fmt.Fprintf(os.Stderr, "WARN %s: %v (ignored, as Argo CD's tests do)\n", path, err)
		if err := yaml.Unmarshal(data, v); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ---------------------------------------------------------------- reporting

type reporter struct {
	passed, failed int
}

func newReporter() *reporter { return &reporter{} }

func (r *reporter) pass(kind, key, input, detail string) {
	r.passed++
	fmt.Printf("PASS %s %s %s: %s\n", kind, key, input, detail)
}

func (r *reporter) fail(kind, key, input, detail string) {
	r.failed++
	fmt.Printf("FAIL %s %s %s: %s\n", kind, key, input, detail)
}

func (r *reporter) warn(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "WARN "+format+"\n", args...)
}

func (r *reporter) finish(where string) int {
	fmt.Printf("%d passed, %d failed\n", r.passed, r.failed)
	switch {
	case r.failed > 0:
		return 1
	case r.passed == 0:
		fmt.Fprintf(os.Stderr, "gitops-health: no test case found in %s\n", where)
		return 1
	}
	return 0
}

// ---------------------------------------------------------------- Flux

// fluxExprs holds Kustomization healthCheckExprs compiled by Flux's own
// cel.NewStatusReader, the constructor kustomize-controller calls with
// spec.healthCheckExprs (so the same validation errors: duplicate group/kind,
// missing current, CEL parse errors).
type fluxExprs struct {
	reader engine.StatusReader
}

func loadFluxExprs(path string) (*fluxExprs, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var checks []kustomize.CustomHealthCheck
	switch d := doc.(type) {
	case []any:
		// Strict, so a misspelt key (inprogress, Failed, ...) is an error rather
		// than an expression silently left out.
		if err := yaml.UnmarshalStrict(data, &checks); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	case map[string]any:
		if d["kind"] != "Kustomization" {
			return nil, fmt.Errorf("%s: want a list of healthCheckExprs entries or a Kustomization", path)
		}
		var k struct {
			Spec struct {
				HealthCheckExprs []kustomize.CustomHealthCheck `json:"healthCheckExprs"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(data, &k); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		checks = k.Spec.HealthCheckExprs
	default:
		return nil, fmt.Errorf("%s: want a list of healthCheckExprs entries or a Kustomization", path)
	}
	if len(checks) == 0 {
		return nil, fmt.Errorf("%s: no healthCheckExprs entries", path)
	}
	if err := checkExprKeys(doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for i, hc := range checks {
		if hc.APIVersion == "" {
			return nil, fmt.Errorf("%s: entry %d has no apiVersion (required by the Kustomization CRD)", path, i)
		}
	}
	ctor, err := fluxcel.NewStatusReader(checks)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// The poller gives the reader a RESTMapper and a cluster reader to fetch the
	// object; ReadStatusForObject is the part that runs on the fetched object
	// and needs neither.
	return &fluxExprs{reader: ctor(nil)}, nil
}

// checkExprKeys rejects keys the Kustomization CRD would prune. Its schema is
// case-sensitive, while Go's JSON decoding (and so the structs above) is not:
// "inprogress" would be read as inProgress here but dropped by the API server.
func checkExprKeys(doc any) error {
	entries, _ := doc.([]any)
	if m, ok := doc.(map[string]any); ok {
		spec, _ := m["spec"].(map[string]any)
		entries, _ = spec["healthCheckExprs"].([]any)
	}
	known := map[string]bool{"apiVersion": true, "kind": true, "current": true, "inProgress": true, "failed": true}
	for i, e := range entries {
		m, ok := e.(map[string]any)
		if !ok {
			return fmt.Errorf("healthCheckExprs[%d] is not an object", i)
		}
		for k := range m {
			if !known[k] {
				return fmt.Errorf("healthCheckExprs[%d]: unknown field %q (the Kustomization CRD would drop it; "+
					"the fields are apiVersion, kind, current, inProgress, failed)", i, k)
			}
		}
	}
	return nil
}

// status is the kstatus status kustomize-controller's health check computes for
// obj; evalErr is set (with status Unknown) when an expression failed.
func (f *fluxExprs) status(obj *unstructured.Unstructured) (st status.Status, evalErr, err error) {
	gk := obj.GroupVersionKind().GroupKind()
	if !f.reader.Supports(gk) {
		return "", nil, fmt.Errorf("no healthCheckExprs entry for %s (apiVersion %q, kind %q); Flux would use kstatus's default rules for it",
			groupKindKey(gk), obj.GetAPIVersion(), obj.GetKind())
	}
	rs, err := f.reader.ReadStatusForObject(context.Background(), nil, obj)
	if err != nil {
		return "", nil, err
	}
	return rs.Status, rs.Error, nil
}

func groupKindKey(gk schema.GroupKind) string {
	if gk.Group == "" {
		return gk.Kind
	}
	return gk.Group + "/" + gk.Kind
}

type fluxTestFile struct {
	Tests []struct {
		InputPath string `json:"inputPath"`
		Status    string `json:"status"`
	} `json:"tests"`
}

func runFlux(exprsPath, testsPath string, r *reporter) error {
	ev, err := loadFluxExprs(exprsPath)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(testsPath)
	if err != nil {
		return err
	}
	var tf fluxTestFile
	if err := yaml.UnmarshalStrict(data, &tf); err != nil {
		return fmt.Errorf("%s: %w", testsPath, err)
	}
	valid := map[string]bool{
		string(status.CurrentStatus): true, string(status.InProgressStatus): true,
		string(status.FailedStatus): true, string(status.UnknownStatus): true,
	}
	base := filepath.Dir(testsPath)
	for _, t := range tf.Tests {
		if !valid[t.Status] {
			r.fail("flux", "-", t.InputPath, fmt.Sprintf("status %q in %s: want Current, InProgress, Failed or Unknown", t.Status, testsPath))
			continue
		}
		obj, err := readObject(filepath.Join(base, t.InputPath))
		if err != nil {
			r.fail("flux", "-", t.InputPath, "error: "+err.Error())
			continue
		}
		key := groupKindKey(obj.GroupVersionKind().GroupKind())
		got, evalErr, err := ev.status(obj)
		if err != nil {
			r.fail("flux", key, t.InputPath, "error: "+err.Error())
			continue
		}
		detail := string(got)
		if evalErr != nil {
			detail += " (" + evalErr.Error() + ")"
		}
		if string(got) == t.Status {
			r.pass("flux", key, t.InputPath, detail)
		} else {
			r.fail("flux", key, t.InputPath, fmt.Sprintf("got %s, want %s", detail, t.Status))
		}
	}
	return nil
}

// ---------------------------------------------------------------- version

func printVersions() {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Println("gitops-health (no build info)")
		return
	}
	fmt.Printf("gitops-health %s\n", bi.GoVersion)
	want := []string{
		"github.com/argoproj/argo-cd/v3",
		"github.com/argoproj/argo-cd/gitops-engine",
		"github.com/yuin/gopher-lua",
		"github.com/fluxcd/pkg/runtime",
		"github.com/fluxcd/pkg/apis/kustomize",
		"github.com/fluxcd/cli-utils",
		"github.com/google/cel-go",
	}
	for _, path := range want {
		for _, d := range bi.Deps {
			if d.Path != path {
				continue
			}
			v := d.Version
			if d.Replace != nil {
				v += " => " + d.Replace.Path + " " + d.Replace.Version
			}
			fmt.Printf("  %s %s\n", path, v)
		}
	}
}
