package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

var builds struct {
	mu    sync.Mutex
	byPkg map[string]*build
}

type build struct {
	lazy[string]
	// n names the build's own output subdir, so two packages with the same
	// base name do not overwrite each other.
	n int
}

// BuildBinary builds the main package in <repo>/pkgDir (e.g. "services/worker")
// into a temp dir, once per test binary per pkgDir, and returns the binary's
// path. It builds with -race when this test binary was built with -race.
func BuildBinary(tb testing.TB, pkgDir string) string {
	tb.Helper()
	key := filepath.Clean(pkgDir)
	builds.mu.Lock()
	if builds.byPkg == nil {
		builds.byPkg = make(map[string]*build)
	}
	b, ok := builds.byPkg[key]
	if !ok {
		b = &build{n: len(builds.byPkg)}
		builds.byPkg[key] = b
	}
	builds.mu.Unlock()
	return b.get(tb, func() (string, error) { return buildBinary(key, b.n) })
}

func buildBinary(pkgDir string, n int) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir, err := tempDir()
	if err != nil {
		return "", err
	}
	outDir := filepath.Join(dir, "bin", strconv.Itoa(n))
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	out := filepath.Join(outDir, filepath.Base(pkgDir))
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = filepath.Join(root, pkgDir)
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testenv: go %v in %s: %w\n%s", args, cmd.Dir, err, output)
	}
	return out, nil
}
