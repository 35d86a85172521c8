package main

// Argo CD resource customizations (health.lua, actions/discovery.lua,
// actions/<name>/action.lua) run with Argo CD's own Lua VM
// (github.com/argoproj/argo-cd/v3/util/lua). The test files have the formats
// Argo CD's util/lua tests read for its built-in resource_customizations
// (health_test.yaml, actions/action_test.yaml), and a case passes under the
// same conditions as there (see runHealthTests and runActionTests).

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"github.com/argoproj/argo-cd/gitops-engine/pkg/diff"
	"github.com/argoproj/argo-cd/gitops-engine/pkg/health"
	applicationpkg "github.com/argoproj/argo-cd/v3/pkg/apiclient/application"
	appv1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	argoglob "github.com/argoproj/argo-cd/v3/util/glob"
	argolua "github.com/argoproj/argo-cd/v3/util/lua"
	lua "github.com/yuin/gopher-lua"
	luaparse "github.com/yuin/gopher-lua/parse"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// libsMode says which Lua runs get the full standard library (string, math,
// ...) on top of the package/base/table/safe-os libraries Argo CD always loads.
type libsMode struct {
	health, discovery, action bool
}

var libsModes = map[string]libsMode{
	// As Argo CD's util/lua tests run its built-in customizations
	// (TestLuaHealthScript, TestLuaResourceActionsScript); built-in health
	// scripts also get open libs in production.
	"tests": {health: true, discovery: true, action: false},
	// As a resource.customizations entry of argocd-cm without useOpenLibs: the
	// controller runs health, the API server discovery and actions, all
	// without open libs.
	"cm": {},
	// As an argocd-cm entry with useOpenLibs: true (which affects health only:
	// the API server never gives discovery or action scripts open libs).
	"cm-openlibs": {health: true},
}

const libsUsage = "which Lua runs get the full standard library: tests (as Argo CD's own " +
	"tests run built-in customizations: health and discovery yes, actions no), cm (an " +
	"argocd-cm resource.customizations entry: none), cm-openlibs (argocd-cm with useOpenLibs: true: health only)"

func parseLibs(s string) (libsMode, error) {
	m, ok := libsModes[s]
	if !ok {
		return libsMode{}, fmt.Errorf("unknown -libs %q (want tests, cm or cm-openlibs)", s)
	}
	return m, nil
}

// customization is one <group>/<Kind> directory in Argo CD's resource_customizations layout.
type customization struct {
	dir  string
	key  string // the argocd-cm resource.customizations key: <group>/<Kind>
	glob bool   // the key has wildcards ('_' in a directory name, as in Argo CD's tree)

	healthLua    string
	hasHealth    bool
	discoveryLua string
	hasDiscovery bool
	actions      map[string]string // action name -> action.lua
}

func loadCustomization(dir string) (*customization, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	// Argo CD finds <root>/<group>/<Kind>/health.lua by the object's group and
	// kind; '_' in a directory name stands for '*' (e.g. _.crossplane.io/_).
	key := filepath.Base(filepath.Dir(abs)) + "/" + filepath.Base(abs)
	c := &customization{dir: dir, key: key, actions: map[string]string{}}
	if strings.Contains(key, "_") {
		c.key = strings.ReplaceAll(key, "_", "*")
		c.glob = true
	}
	read := func(p string) (string, bool, error) {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return "", false, nil
		}
		return string(b), err == nil, err
	}
	if c.healthLua, c.hasHealth, err = read(filepath.Join(dir, "health.lua")); err != nil {
		return nil, err
	}
	if c.discoveryLua, c.hasDiscovery, err = read(filepath.Join(dir, "actions", "discovery.lua")); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(dir, "actions"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		src, ok, err := read(filepath.Join(dir, "actions", e.Name(), "action.lua"))
		if err != nil {
			return nil, err
		}
		if ok {
			c.actions[e.Name()] = src
		}
	}
	return c, nil
}

// override is the customization as an argocd-cm resource.customizations entry
// (health.lua, actions with discovery.lua and definitions, no built-in actions
// merged), the form in which Argo CD runs customizations that are not built in.
func (c *customization) override(healthOpenLibs bool) (appv1.ResourceOverride, error) {
	ro := appv1.ResourceOverride{HealthLua: c.healthLua, UseOpenLibs: healthOpenLibs}
	if c.hasDiscovery || len(c.actions) > 0 {
		ra := appv1.ResourceActions{ActionDiscoveryLua: c.discoveryLua}
		for _, name := range sortedKeys(c.actions) {
			ra.Definitions = append(ra.Definitions, appv1.ResourceActionDefinition{Name: name, ActionLua: c.actions[name]})
		}
		b, err := yaml.Marshal(ra)
		if err != nil {
			return ro, err
		}
		ro.Actions = string(b)
	}
	return ro, nil
}

// vm is the Lua VM Argo CD's controller and API server create, with this
// customization as the only resource override.
func (c *customization) vm(healthOpenLibs bool) (argolua.VM, error) {
	ro, err := c.override(healthOpenLibs)
	if err != nil {
		return argolua.VM{}, err
	}
	return argolua.VM{ResourceOverrides: map[string]appv1.ResourceOverride{c.key: ro}}, nil
}

// checkKind fails when Argo CD would not pick this customization for obj.
func (c *customization) checkKind(obj *unstructured.Unstructured) error {
	objKey := argolua.GetConfigMapKey(obj.GroupVersionKind())
	if objKey == c.key || (c.glob && argoglob.Match(c.key, objKey)) {
		return nil
	}
	return fmt.Errorf("object is %s (apiVersion %q, kind %q) but %s is the customization for %s",
		objKey, obj.GetAPIVersion(), obj.GetKind(), c.dir, c.key)
}

// luaFiles lists the scripts of the customization, relative to its directory.
func (c *customization) luaFiles() map[string]string {
	files := map[string]string{}
	if c.hasHealth {
		files["health.lua"] = c.healthLua
	}
	if c.hasDiscovery {
		files["actions/discovery.lua"] = c.discoveryLua
	}
	for name, src := range c.actions {
		files["actions/"+name+"/action.lua"] = src
	}
	return files
}

// luaSyntax compiles a script with gopher-lua (the engine inside Argo CD's VM),
// so syntax errors are reported with the file name even for scripts no test runs.
func luaSyntax(name, src string) error {
	chunk, err := luaparse.Parse(strings.NewReader(src), name)
	if err != nil {
		return err
	}
	_, err = lua.Compile(chunk, name)
	return err
}

// luaErr names the script in an error from Argo CD's VM (which runs scripts
// as "<string>") and puts it on one line.
func luaErr(script string, err error) error {
	if err == nil {
		return nil
	}
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "<string>", script)
	return errors.New(strings.Join(strings.Fields(msg), " "))
}

// healthResult is what Argo CD shows for a resource: status and message.
type healthResult struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func healthJSON(h *health.HealthStatus) string {
	r := healthResult{}
	if h != nil {
		r = healthResult{Status: string(h.Status), Message: h.Message}
	}
	return compactJSON(r)
}

// ---------------------------------------------------------------- test files

// health_test.yaml, as read by Argo CD's TestLuaHealthScript.
type healthTestFile struct {
	Tests []struct {
		InputPath    string              `json:"inputPath"`
		HealthStatus health.HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

// actions/action_test.yaml, as read by Argo CD's TestLuaResourceActionsScript.
type actionTestFile struct {
	DiscoveryTests []struct {
		InputPath string                 `json:"inputPath"`
		Result    []appv1.ResourceAction `json:"result"`
	} `json:"discoveryTests"`
	ActionTests []struct {
		Action               string            `json:"action"`
		InputPath            string            `json:"inputPath"`
		ExpectedOutputPath   string            `json:"expectedOutputPath"`
		ExpectedErrorMessage string            `json:"expectedErrorMessage"`
		Parameters           map[string]string `json:"parameters"`
	} `json:"actionTests"`
}

// ---------------------------------------------------------------- argocd <root>

func runArgoCD(root string, mode libsMode, r *reporter) error {
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if name := d.Name(); p != root && (name == "testdata" || name == "actions" || strings.HasPrefix(name, ".")) {
			return fs.SkipDir
		}
		for _, f := range []string{"health.lua", "health_test.yaml", "actions/action_test.yaml", "actions/discovery.lua"} {
			if _, err := os.Stat(filepath.Join(p, f)); err == nil {
				dirs = append(dirs, p)
				break
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, dir := range dirs {
		c, err := loadCustomization(dir)
		if err != nil {
			return err
		}
		files := c.luaFiles()
		for _, name := range sortedKeys(files) {
			if err := luaSyntax(name, files[name]); err != nil {
				r.fail("lua-syntax", c.key, name, luaErr(name, err).Error())
			}
		}
		if err := runHealthTests(c, mode, r); err != nil {
			return err
		}
		if err := runActionTests(c, mode, r); err != nil {
			return err
		}
	}
	return nil
}

// runHealthTests runs health_test.yaml like Argo CD's TestLuaHealthScript: a
// VM with UseOpenLibs (in -libs tests mode), GetHealthScript then
// ExecuteHealthLua, and the result must equal healthStatus (status and
// message, both exactly; a Lua error fails the case).
func runHealthTests(c *customization, mode libsMode, r *reporter) error {
	testPath := filepath.Join(c.dir, "health_test.yaml")
	data, err := os.ReadFile(testPath)
	if errors.Is(err, fs.ErrNotExist) {
		if c.hasHealth {
			// Argo CD's test requires a health_test.yaml next to every health.lua.
			r.fail("health", c.key, "health_test.yaml", "missing (every health.lua needs one)")
		}
		return nil
	}
	if err != nil {
		return err
	}
	var tf healthTestFile
	if err := unmarshalTestFile(testPath, data, &tf); err != nil {
		return err
	}
	if len(tf.Tests) == 0 {
		r.warn("%s: no tests", testPath)
	}
	for _, t := range tf.Tests {
		want := t.HealthStatus
		got, err := func() (*health.HealthStatus, error) {
			if !c.hasHealth {
				return nil, fmt.Errorf("no health.lua in %s", c.dir)
			}
			obj, err := readObject(filepath.Join(c.dir, t.InputPath))
			if err != nil {
				return nil, err
			}
			if err := c.checkKind(obj); err != nil {
				return nil, err
			}
			vm, err := c.vm(mode.health)
			if err != nil {
				return nil, err
			}
			vm.UseOpenLibs = mode.health
			script, _, err := vm.GetHealthScript(obj)
			if err != nil {
				return nil, err
			}
			return vm.ExecuteHealthLua(obj, script)
		}()
		switch {
		case err != nil:
			r.fail("health", c.key, t.InputPath, fmt.Sprintf("error: %v; want %s", luaErr("health.lua", err), healthJSON(&want)))
		case reflect.DeepEqual(&want, got):
			r.pass("health", c.key, t.InputPath, healthJSON(got))
		default:
			r.fail("health", c.key, t.InputPath, fmt.Sprintf("got %s, want %s", healthJSON(got), healthJSON(&want)))
		}
	}
	return nil
}

// runActionTests runs actions/action_test.yaml like Argo CD's
// TestLuaResourceActionsScript (paths are relative to the actions directory).
func runActionTests(c *customization, mode libsMode, r *reporter) error {
	actionsDir := filepath.Join(c.dir, "actions")
	testPath := filepath.Join(actionsDir, "action_test.yaml")
	data, err := os.ReadFile(testPath)
	if errors.Is(err, fs.ErrNotExist) {
		if c.hasDiscovery || len(c.actions) > 0 {
			r.warn("%s: no action_test.yaml, the actions are not tested", actionsDir)
		}
		return nil
	}
	if err != nil {
		return err
	}
	var tf actionTestFile
	if err := unmarshalTestFile(testPath, data, &tf); err != nil {
		return err
	}
	if len(tf.DiscoveryTests)+len(tf.ActionTests) == 0 {
		r.warn("%s: no discoveryTests or actionTests", testPath)
	}
	input := func(p string) string { return filepath.ToSlash(filepath.Join("actions", p)) }

	// Discovery: every action the script returns must be one of `result`
	// (compared as whole appv1.ResourceAction values: name, disabled,
	// iconClass, displayName, params), as assert.Contains does in Argo CD's
	// test. Listed actions that are not returned do not fail the case there,
	// so they are only reported here.
	for _, t := range tf.DiscoveryTests {
		got, err := func() ([]appv1.ResourceAction, error) {
			obj, err := readObject(filepath.Join(actionsDir, t.InputPath))
			if err != nil {
				return nil, err
			}
			if err := c.checkKind(obj); err != nil {
				return nil, err
			}
			return discoverActions(c, mode, obj)
		}()
		if err != nil {
			r.fail("discovery", c.key, input(t.InputPath), "error: "+luaErr("actions/discovery.lua", err).Error())
			continue
		}
		var unexpected, missing []string
		for _, a := range got {
			if !containsAction(t.Result, a) {
				unexpected = append(unexpected, actionJSON(a))
			}
		}
		for _, w := range t.Result {
			if !containsAction(got, w) {
				missing = append(missing, w.Name)
			}
		}
		if len(unexpected) > 0 {
			r.fail("discovery", c.key, input(t.InputPath), fmt.Sprintf("got %s; not in result: %s",
				actionNames(got), strings.Join(unexpected, ", ")))
			continue
		}
		detail := actionNames(got)
		if len(missing) > 0 {
			detail += fmt.Sprintf(" (note: listed in result but not returned: %s; Argo CD's test does not fail on this)",
				strings.Join(missing, ", "))
		}
		r.pass("discovery", c.key, input(t.InputPath), detail)
	}

	for _, t := range tf.ActionTests {
		name := "action:" + t.Action
		impacted, src, err := func() ([]argolua.ImpactedResource, *unstructured.Unstructured, error) {
			src, err := readObject(filepath.Join(actionsDir, t.InputPath))
			if err != nil {
				return nil, nil, err
			}
			if err := c.checkKind(src); err != nil {
				return nil, nil, err
			}
			out, err := runAction(c, mode, src, t.Action, t.Parameters)
			return out, src, err
		}()
		script := "actions/" + t.Action + "/action.lua"
		if t.ExpectedErrorMessage != "" {
			// assert.EqualError: there must be an error with exactly this text.
			switch {
			case err == nil:
				r.fail(name, c.key, input(t.InputPath), fmt.Sprintf("got no error, want error %q", t.ExpectedErrorMessage))
			case err.Error() != t.ExpectedErrorMessage:
				r.fail(name, c.key, input(t.InputPath), fmt.Sprintf("got error %q, want error %q", err.Error(), t.ExpectedErrorMessage))
			default:
				r.pass(name, c.key, input(t.InputPath), fmt.Sprintf("error %q", err.Error()))
			}
			continue
		}
		if err != nil {
			r.fail(name, c.key, input(t.InputPath), "error: "+luaErr(script, err).Error())
			continue
		}
		problems, notes, err := compareActionOutput(src, impacted, filepath.Join(actionsDir, t.ExpectedOutputPath))
		if err != nil {
			r.fail(name, c.key, input(t.InputPath), "error: "+err.Error())
			continue
		}
		if len(problems) > 0 {
			r.fail(name, c.key, input(t.InputPath), fmt.Sprintf("output differs from %s:\n    %s",
				input(t.ExpectedOutputPath), strings.Join(problems, "\n    ")))
			continue
		}
		detail := "matches " + input(t.ExpectedOutputPath)
		if len(notes) > 0 {
			detail += " (note: " + strings.Join(notes, "; ") + "; Argo CD's test does not fail on this)"
		}
		r.pass(name, c.key, input(t.InputPath), detail)
	}
	return nil
}

func discoverActions(c *customization, mode libsMode, obj *unstructured.Unstructured) ([]appv1.ResourceAction, error) {
	vm, err := c.vm(mode.health)
	if err != nil {
		return nil, err
	}
	vm.UseOpenLibs = mode.discovery
	scripts, err := vm.GetResourceActionDiscovery(obj)
	if err != nil {
		return nil, err
	}
	if !c.hasDiscovery {
		return nil, fmt.Errorf("no actions/discovery.lua in %s", c.dir)
	}
	got, err := vm.ExecuteResourceActionDiscovery(obj, scripts)
	if err != nil {
		return nil, err
	}
	sort.Slice(got, func(i, j int) bool { return got[i].Name < got[j].Name })
	return got, nil
}

func runAction(c *customization, mode libsMode, src *unstructured.Unstructured, action string, params map[string]string) ([]argolua.ImpactedResource, error) {
	vm, err := c.vm(mode.health)
	if err != nil {
		return nil, err
	}
	vm.UseOpenLibs = mode.action
	def, err := vm.GetResourceAction(src, action)
	if err != nil {
		return nil, fmt.Errorf("action %q: %w", action, err)
	}
	var ps []*applicationpkg.ResourceActionParameters
	for _, k := range sortedKeys(params) {
		k, v := k, params[k]
		ps = append(ps, &applicationpkg.ResourceActionParameters{Name: &k, Value: &v})
	}
	return vm.ExecuteResourceAction(src.DeepCopy(), def.ActionLua, ps)
}

func containsAction(list []appv1.ResourceAction, a appv1.ResourceAction) bool {
	for _, x := range list {
		if reflect.DeepEqual(x, a) {
			return true
		}
	}
	return false
}

func actionJSON(a appv1.ResourceAction) string {
	return compactJSON(a)
}

func actionNames(as []appv1.ResourceAction) string {
	names := make([]string, 0, len(as))
	for _, a := range as {
		n := a.Name
		if a.Disabled {
			n += "(disabled)"
		}
		names = append(names, n)
	}
	return "[" + strings.Join(names, " ") + "]"
}

// loadExpectedObjects reads an expectedOutputPath file like Argo CD's test:
// either one object (an action that returns the changed source object, i.e.
// a patch), or a list of {unstructuredObj: <object>, ...} items (actions that
// return [{resource, operation}] tables; only unstructuredObj is used).
func loadExpectedObjects(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch d := doc.(type) {
	case map[string]any:
		return []*unstructured.Unstructured{{Object: d}}, nil
	case []any:
		var out []*unstructured.Unstructured
		for i, item := range d {
			m, _ := item.(map[string]any)
			obj, ok := m["unstructuredObj"].(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: item %d has no unstructuredObj object", path, i)
			}
			out = append(out, &unstructured.Unstructured{Object: obj})
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: want an object or a list of {unstructuredObj: ...}", path)
}

// compareActionOutput checks an action's result like Argo CD's test: each
// impacted resource is matched with the first expected object of the same
// group/version/kind, name and namespace (for a Job created from a CronJob
// or a Workflow from a CronWorkflow/WorkflowTemplate: a name starting with the
// source's name); a patch must target the source object itself; and
// gitops-engine's diff.Diff(expected, result) must report no modification.
// diff.Diff ignores what the result has beyond the expected object (fields,
// recursively, absent from it; list items are compared by position, extra
// items count), drops metadata.creationTimestamp, and compares through JSON,
// so 1 and 1.0 are equal. Expected objects no result matched are reported too
// (Argo CD's test does not notice them).
func compareActionOutput(src *unstructured.Unstructured, impacted []argolua.ImpactedResource, expectedPath string) (problems, notes []string, err error) {
	expected, err := loadExpectedObjects(expectedPath)
	if err != nil {
		return nil, nil, err
	}
	used := map[int]bool{}
	for _, ir := range impacted {
		result := ir.UnstructuredObj
		derived := (result.GetKind() == "Job" && src.GetKind() == "CronJob") ||
			(result.GetKind() == "Workflow" && (src.GetKind() == "CronWorkflow" || src.GetKind() == "WorkflowTemplate"))
		idx := -1
		for i, e := range expected {
			if e.GroupVersionKind() != result.GroupVersionKind() || e.GetNamespace() != result.GetNamespace() {
				continue
			}
			if (derived && strings.HasPrefix(e.GetName(), src.GetName())) || (!derived && e.GetName() == result.GetName()) {
				idx = i
				break
			}
		}
		what := fmt.Sprintf("%s %s %s/%s", ir.K8SOperation, result.GroupVersionKind().Kind, result.GetNamespace(), result.GetName())
		if idx < 0 {
			problems = append(problems, fmt.Sprintf("%s: no expected object with this apiVersion, kind, namespace and name", what))
			continue
		}
		used[idx] = true
		exp := expected[idx]
		switch ir.K8SOperation {
		case argolua.PatchOperation:
			if result.GroupVersionKind() != src.GroupVersionKind() || result.GetName() != src.GetName() || result.GetNamespace() != src.GetNamespace() {
				problems = append(problems, what+": a patch must return the source object itself")
			}
		case argolua.CreateOperation:
			if result.GetKind() == "Job" || result.GetKind() == "Workflow" {
				result = result.DeepCopy()
				result.SetName(exp.GetName())
			}
		}
		d, err := diff.Diff(context.Background(), exp, result)
		if err != nil {
			return nil, nil, err
		}
		if d.Modified {
			lines := explainDiff("", exp.Object, result.Object, nil)
			if len(lines) == 0 {
				lines = []string{"(see gitops-engine diff) result: " + string(d.NormalizedLive)}
			}
			problems = append(problems, what+":")
			for _, l := range lines {
				problems = append(problems, "  "+l)
			}
		}
	}
	for i, e := range expected {
		if !used[i] {
			notes = append(notes, fmt.Sprintf("expected %s %s/%s was not produced", e.GetKind(), e.GetNamespace(), e.GetName()))
		}
	}
	return problems, notes, nil
}

// explainDiff lists, for a failed comparison, where result differs from want
// in the way diff.Diff looks at them (fields of want only).
func explainDiff(path string, want, got any, out []string) []string {
	const limit = 20
	if len(out) >= limit {
		return out
	}
	name := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return append(out, fmt.Sprintf("%s: got %s, want %s", orRoot(path), compact(got), compact(want)))
		}
		for _, k := range sortedKeys(w) {
			if path == "metadata" && k == "creationTimestamp" {
				continue
			}
			gv, present := g[k]
			switch {
			case w[k] == nil && present && gv != nil:
				out = append(out, fmt.Sprintf("%s: got %s, want it absent (null)", name(k), compact(gv)))
			case w[k] != nil && !present:
				out = append(out, fmt.Sprintf("%s: missing, want %s", name(k), compact(w[k])))
			case w[k] != nil:
				out = explainDiff(name(k), w[k], gv, out)
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok {
			return append(out, fmt.Sprintf("%s: got %s, want %s", orRoot(path), compact(got), compact(want)))
		}
		if len(g) != len(w) {
			out = append(out, fmt.Sprintf("%s: got %d items, want %d", orRoot(path), len(g), len(w)))
		}
		for i := 0; i < len(w) && i < len(g); i++ {
			out = explainDiff(fmt.Sprintf("%s[%d]", path, i), w[i], g[i], out)
		}
	default:
		if compact(want) != compact(got) {
			out = append(out, fmt.Sprintf("%s: got %s, want %s", orRoot(path), compact(got), compact(want)))
		}
	}
	return out
}

func orRoot(p string) string {
	if p == "" {
		return "(object)"
	}
	return p
}

func compact(v any) string {
	s := compactJSON(v)
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// ---------------------------------------------------------------- single objects

// argocdHealth computes the health Argo CD's application controller shows for
// obj with this customization configured: gitops-engine's
// health.GetResourceHealth with the override (objects being deleted are
// "Progressing: Pending deletion" before any Lua runs; a Lua error becomes
// status Unknown with the error as message).
func argocdHealth(c *customization, mode libsMode, obj *unstructured.Unstructured) (*health.HealthStatus, error) {
	if !c.hasHealth {
		return nil, fmt.Errorf("no health.lua in %s", c.dir)
	}
	if err := c.checkKind(obj); err != nil {
		return nil, err
	}
	ro, err := c.override(mode.health)
	if err != nil {
		return nil, err
	}
	return health.GetResourceHealth(obj, argolua.ResourceHealthOverrides{c.key: ro})
}

// actionOutput is what argocd-action prints: the changed object when the
// action patches its source (the usual case), else the list of impacted
// resources in the format of an expectedOutputPath file.
func actionOutput(impacted []argolua.ImpactedResource) any {
	if len(impacted) == 1 && impacted[0].K8SOperation == argolua.PatchOperation {
		return impacted[0].UnstructuredObj.Object
	}
	list := make([]map[string]any, 0, len(impacted))
	for _, ir := range impacted {
		list = append(list, map[string]any{"operation": string(ir.K8SOperation), "unstructuredObj": ir.UnstructuredObj.Object})
	}
	return list
}
