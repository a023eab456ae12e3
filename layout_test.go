package snakepit

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/snakepit/snakepit"

// goList returns every package of the module with its imports (not its
// tests' imports), as `go list` sees them.
func goList(t *testing.T) map[string][]string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("no go command: %v", err)
	}
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string][]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs[p.ImportPath] = p.Imports
	}
	return pkgs
}

// rel is a package's path in the module ("." for the root).
func rel(path string) string {
	if path == module {
		return "."
	}
	return strings.TrimPrefix(path, module+"/")
}

// TestDependenciesPointOneWay: only the doors (cmd, daemon, snakepittest,
// test) import the facade; the mechanisms and kernel primitives never do.
func TestDependenciesPointOneWay(t *testing.T) {
	doors := regexp.MustCompile(`^(cmd|daemon|snakepittest|test)(/|$)`)
	for p, imports := range goList(t) {
		if slices.Contains(imports, module) && !doors.MatchString(rel(p)) {
			t.Errorf("%s imports the root package: only cmd/, daemon/, snakepittest/ and test/ may", rel(p))
		}
	}
}

// TestPackageMapIsTrue: docs/DESIGN.md's package map lists every package
// of the module, and nothing that is not one.
func TestPackageMapIsTrue(t *testing.T) {
	doc, err := os.ReadFile("docs/DESIGN.md")
	if err != nil {
		t.Fatal(err)
	}
	// The section whose heading names the package map, to the next
	// heading of the same or a higher level.
	sec := regexp.MustCompile(`(?ims)^(#+) [^\n]*package map[^\n]*\n(.*?)(?:^#{1,2} |\z)`).FindSubmatch(doc)
	if sec == nil {
		t.Fatal("docs/DESIGN.md has no section headed \"... package map ...\"")
	}
	row := regexp.MustCompile("(?m)^\\| `([^`]+)`")
	listed := map[string]bool{}
	for _, m := range row.FindAllSubmatch(sec[2], -1) {
		listed[string(m[1])] = true
	}
	for p := range goList(t) {
		if !listed[rel(p)] {
			t.Errorf("package %s is missing from the package map in docs/DESIGN.md", rel(p))
		}
		delete(listed, rel(p))
	}
	for p := range listed {
		t.Errorf("docs/DESIGN.md's package map lists %s, which is not a package of the module", p)
	}
}

// TestLeanCLI: the default build of the CLI (each `snakepit run` wrapper)
// links no HTTP or TLS stack: their package initialisers would run in every
// wrapper. The daemon and the daemon-aware ps/kill are in `-tags snakepitd`.
func TestLeanCLI(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("no go command: %v", err)
	}
	out, err := exec.Command("go", "list", "-deps", module+"/cmd/snakepit").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "net/http" || p == "crypto/tls" || p == module+"/daemon" || p == module+"/client" {
			t.Errorf("the default build of cmd/snakepit links %s", p)
		}
	}
}
