package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pubq/pubq/pkg/testenv"
)

const goodToken = "producer-token-0123456789"

func envOf(t *testing.T, kv map[string]string) func(string) string {
	t.Helper()
	base := map[string]string{
		"PUBQ_PROJECT":      "demo-project",
		"PUBQ_QUEUES":       filepath.Join(testenv.RepoRoot(t), "queues.yaml"),
		"PUBQ_DATABASE_URL": "postgres://postgres@127.0.0.1:5432/pubq",
		"PUBQ_API_TOKENS":   goodToken,
	}
	for k, v := range kv {
		if v == "-" {
			delete(base, k)
			continue
		}
		base[k] = v
	}
	return func(k string) string { return base[k] }
}

func TestLoadConfigDefaults(t *testing.T) {
	c, err := loadConfig(nil, envOf(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.project != "demo-project" || c.addr != ":8080" || c.insecure || c.migrate || !c.schedules ||
		c.shutdown != 10*time.Second || c.logLevel != slog.LevelInfo || len(c.tokens) != 1 || c.tokens[0] != goodToken {
		t.Fatalf("config = %+v", c)
	}
	if c.db.URL == "" || c.db.CloudSQLInstance != "" || !c.db.Trace {
		t.Fatalf("db = %+v", c.db)
	}
	if _, err := c.queues.Route("payment.capture"); err != nil {
		t.Fatalf("queues not loaded: %v", err)
	}
}

func TestLoadConfigValues(t *testing.T) {
	c, err := loadConfig(nil, envOf(t, map[string]string{
		"PUBQ_DATABASE_URL":        "-",
		"PUBQ_CLOUDSQL_INSTANCE":   "proj:europe-west1:pubq",
		"PUBQ_DATABASE_USER":       "producer@proj.iam",
		"PUBQ_DATABASE_NAME":       "pubq",
		"PUBQ_CLOUDSQL_PRIVATE_IP": "true",
		"PUBQ_API_TOKENS":          " " + goodToken + " ,second-token-0123456789,\n",
		"PORT":                     "9999",
		"PUBQ_MIGRATE":             "true",
		"PUBQ_SCHEDULES":           "false",
		"PUBQ_SHUTDOWN_TIMEOUT":    "3s",
		"PUBQ_LOG_LEVEL":           "debug",
		"PUBQ_TRACE_SQL":           "false",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.addr != ":9999" || !c.migrate || c.schedules || c.shutdown != 3*time.Second || c.logLevel != slog.LevelDebug {
		t.Fatalf("config = %+v", c)
	}
	if len(c.tokens) != 2 || c.tokens[0] != goodToken || c.tokens[1] != "second-token-0123456789" {
		t.Fatalf("tokens not split and trimmed: %q", c.tokens)
	}
	db := c.db
	if db.CloudSQLInstance != "proj:europe-west1:pubq" || db.User != "producer@proj.iam" || db.Database != "pubq" ||
		!db.IAMAuth || !db.PrivateIP || db.Trace {
		t.Fatalf("db = %+v", db)
	}
	// --addr wins over PORT.
	c, err = loadConfig([]string{"--addr", "127.0.0.1:7000"}, envOf(t, map[string]string{"PORT": "9999"}))
	if err != nil || c.addr != "127.0.0.1:7000" {
		t.Fatalf("addr = %v, err %v", c, err)
	}
	// Short tokens work (local stacks use dev-token) but are marked for a warning.
	c, err = loadConfig(nil, envOf(t, map[string]string{"PUBQ_API_TOKENS": "dev-token," + goodToken + ",x"}))
	if err != nil || len(c.tokens) != 3 || len(c.weakTokens) != 2 || c.weakTokens[0] != 1 || c.weakTokens[1] != 3 {
		t.Fatalf("weak tokens: %+v, %v", c, err)
	}
	c, err = loadConfig(nil, envOf(t, map[string]string{"PUBQ_API_TOKENS": "-", "PUBQ_INSECURE_NO_AUTH": "true"}))
	if err != nil || !c.insecure || len(c.tokens) != 0 {
		t.Fatalf("insecure: %+v, %v", c, err)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"no project", nil, map[string]string{"PUBQ_PROJECT": "-"}, []string{"PUBQ_PROJECT is required"}},
		{"nothing set", nil, map[string]string{"PUBQ_PROJECT": "-", "PUBQ_DATABASE_URL": "-", "PUBQ_API_TOKENS": "-"},
			[]string{"PUBQ_PROJECT is required", "PUBQ_DATABASE_URL is required", "PUBQ_API_TOKENS is required"}},
		{"queues file missing", nil, map[string]string{"PUBQ_QUEUES": "/nonexistent/queues.yaml"}, []string{"PUBQ_QUEUES", "/nonexistent/queues.yaml"}},
		{"default queues path missing", nil, map[string]string{"PUBQ_QUEUES": "-"}, []string{"PUBQ_QUEUES", "queues.yaml"}},
		{"both databases", nil, map[string]string{"PUBQ_CLOUDSQL_INSTANCE": "p:r:i"}, []string{"PUBQ_DATABASE_URL or PUBQ_CLOUDSQL_INSTANCE, not both"}},
		{"cloud sql without user", nil, map[string]string{"PUBQ_DATABASE_URL": "-", "PUBQ_CLOUDSQL_INSTANCE": "p:r:i"},
			[]string{"PUBQ_DATABASE_USER is required", "PUBQ_DATABASE_NAME is required"}},
		{"cloud sql instance format", nil, map[string]string{"PUBQ_DATABASE_URL": "-", "PUBQ_CLOUDSQL_INSTANCE": "pubq",
			"PUBQ_DATABASE_USER": "u", "PUBQ_DATABASE_NAME": "d"}, []string{`PUBQ_CLOUDSQL_INSTANCE="pubq" is not project:region:instance`}},
		{"private ip not a bool", nil, map[string]string{"PUBQ_CLOUDSQL_PRIVATE_IP": "yes please"}, []string{`PUBQ_CLOUDSQL_PRIVATE_IP="yes please" is not true or false`}},
		{"token with space", nil, map[string]string{"PUBQ_API_TOKENS": goodToken + ",hunter2 hunter2"}, []string{"PUBQ_API_TOKENS: token 2 of 2 contains whitespace"}},
		{"only commas", nil, map[string]string{"PUBQ_API_TOKENS": " , ,"}, []string{"PUBQ_API_TOKENS is required"}},
		{"insecure and tokens", nil, map[string]string{"PUBQ_INSECURE_NO_AUTH": "true"}, []string{"PUBQ_API_TOKENS or PUBQ_INSECURE_NO_AUTH=true, not both"}},
		{"insecure not a bool", nil, map[string]string{"PUBQ_API_TOKENS": "-", "PUBQ_INSECURE_NO_AUTH": "on"},
			[]string{`PUBQ_INSECURE_NO_AUTH="on" is not true or false`, "PUBQ_API_TOKENS is required"}},
		{"bad port", nil, map[string]string{"PORT": "http"}, []string{`PORT="http" is not a port number`}},
		{"port out of range", nil, map[string]string{"PORT": "70000"}, []string{`PORT="70000"`}},
		{"bad addr", []string{"--addr", "8080"}, nil, []string{`--addr="8080" is not host:port`}},
		{"unknown flag", []string{"--port", "1"}, nil, []string{"flags:", "-port"}},
		{"stray argument", []string{"serve"}, nil, []string{`unexpected argument "serve"`}},
		{"bad migrate", nil, map[string]string{"PUBQ_MIGRATE": "always"}, []string{`PUBQ_MIGRATE="always"`}},
		{"bad shutdown timeout", nil, map[string]string{"PUBQ_SHUTDOWN_TIMEOUT": "10"}, []string{`PUBQ_SHUTDOWN_TIMEOUT="10" is not a positive duration`}},
		{"bad log level", nil, map[string]string{"PUBQ_LOG_LEVEL": "loud"}, []string{`PUBQ_LOG_LEVEL="loud"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := envOf(t, tc.env)
			if tc.name == "default queues path missing" {
				t.Chdir(t.TempDir())
			}
			_, err := loadConfig(tc.args, getenv)
			if err == nil {
				t.Fatal("no error")
			}
			var ue usageError
			if !errors.As(err, &ue) {
				t.Errorf("err is not a usage error (exit 2): %T", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q, want it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), goodToken) {
				t.Errorf("the error echoes a token: %q", err)
			}
		})
	}
}

func TestRunExitsTwoOnBadConfig(t *testing.T) {
	if code := run(context.Background(), nil, envOf(t, map[string]string{"PUBQ_PROJECT": "-"})); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
}
