package testenv

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// Docker cannot run on the development machines, so the compose file and the
// Dockerfiles are checked for the wiring they promise instead.

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Command     any               `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	Build       *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

func loadCompose(t *testing.T) (string, composeFile) {
	t.Helper()
	root := RepoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.emulator.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.emulator.yml does not parse: %v", err)
	}
	return root, c
}

func TestComposeFile(t *testing.T) {
	t.Parallel()
	root, c := loadCompose(t)
	for _, name := range []string{"pubsub", "postgres", "jaeger", "bootstrap", "worker", "producer"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("service %q missing", name)
		}
	}
	if s := c.Services["pubsub"]; s.Image != "gcr.io/google.com/cloudsdktool/google-cloud-cli:emulators" ||
		s.Command != "gcloud beta emulators pubsub start --host-port=0.0.0.0:8085 --project=pubq-local" {
		t.Errorf("pubsub: image %q, command %v", s.Image, s.Command)
	}
	if s := c.Services["postgres"]; s.Image != "postgres:15" || s.Environment["POSTGRES_HOST_AUTH_METHOD"] != "trust" {
		t.Errorf("postgres: image %q, env %v; want postgres:15 with trust auth", s.Image, s.Environment)
	}
	if s := c.Services["jaeger"]; !regexp.MustCompile(`^jaegertracing/jaeger:2\.\d+\.\d+$`).MatchString(s.Image) {
		t.Errorf("jaeger image %q, want a pinned jaegertracing/jaeger:2.x", s.Image)
	} else {
		for _, p := range []string{":4317:4317", ":4318:4318", ":16686:16686"} {
			if !slices.ContainsFunc(s.Ports, func(q string) bool { return strings.HasSuffix(q, p) }) {
				t.Errorf("jaeger does not publish %s (ports %v)", p, s.Ports)
			}
		}
	}

	wantEnv := map[string]string{
		"PUBSUB_EMULATOR_HOST":        "pubsub:8085",
		"PUBQ_PROJECT":                "pubq-local",
		"PUBQ_DATABASE_URL":           "postgres://postgres@postgres:5432/postgres?sslmode=disable",
		"PUBQ_QUEUES":                 "/etc/pubq/queues.yaml",
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318",
		"PUBQ_API_TOKENS":             "dev-token",
	}
	for _, name := range []string{"bootstrap", "worker", "producer"} {
		s := c.Services[name]
		for k, v := range wantEnv {
			if s.Environment[k] != v {
				t.Errorf("%s: %s=%q, want %q", name, k, s.Environment[k], v)
			}
		}
		if !slices.Contains(s.Volumes, "./queues.yaml:/etc/pubq/queues.yaml:ro") {
			t.Errorf("%s does not mount ./queues.yaml (volumes %v)", name, s.Volumes)
		}
		if s.Build == nil || s.Build.Context != "." {
			t.Errorf("%s: build %+v, want the repository root as context", name, s.Build)
			continue
		}
		want := "services/worker/Dockerfile"
		if name == "producer" {
			want = "services/producer/Dockerfile"
		}
		if s.Build.Dockerfile != want {
			t.Errorf("%s: dockerfile %q, want %q", name, s.Build.Dockerfile, want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "queues.yaml")); err != nil {
		t.Errorf("the mounted queues.yaml: %v", err)
	}
	if cmd := c.Services["bootstrap"].Command; !slices.Equal(toStrings(cmd), []string{"bootstrap"}) {
		t.Errorf("bootstrap command %v, want [bootstrap] (worker bootstrap)", cmd)
	}
	for _, name := range []string{"worker", "producer"} {
		if d := c.Services[name].DependsOn["bootstrap"]; d.Condition != "service_completed_successfully" {
			t.Errorf("%s starts before bootstrap has finished (depends_on %+v)", name, c.Services[name].DependsOn)
		}
	}
	for name, s := range c.Services {
		for dep := range s.DependsOn {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("%s depends on unknown service %q", name, dep)
			}
		}
		// PostgreSQL trusts everyone: nothing may be published beyond loopback.
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %q on all interfaces", name, p)
			}
		}
	}
}

func toStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func TestDockerfiles(t *testing.T) {
	t.Parallel()
	root := RepoRoot(t)
	for svc, port := range map[string]string{"producer": "8080", "worker": "9090"} {
		b, err := os.ReadFile(filepath.Join(root, "services", svc, "Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		df := string(b)
		for _, want := range []string{
			"FROM golang:1.26 AS build",
			"COPY . .", // the go.work workspace needs every module it names
			"CGO_ENABLED=0 go build",
			"./services/" + svc + "\n",
			"FROM gcr.io/distroless/static",
			"EXPOSE " + port + "\n",
			"USER nonroot",
			`ENTRYPOINT ["/usr/local/bin/` + svc + `"]`,
		} {
			if !strings.Contains(df, want) {
				t.Errorf("services/%s/Dockerfile lacks %q", svc, want)
			}
		}
	}
	ignore, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".git", ".run"} {
		if !slices.Contains(strings.Fields(string(ignore)), want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
	// Everything the build copies in must be there: go.work and its modules.
	work, err := os.ReadFile(filepath.Join(root, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*(\./\S+)\s*$`).FindAllStringSubmatch(string(work), -1) {
		if _, err := os.Stat(filepath.Join(root, m[1], "go.mod")); err != nil {
			t.Errorf("go.work uses %s, which has no go.mod: the image build would fail", m[1])
		}
	}
}
