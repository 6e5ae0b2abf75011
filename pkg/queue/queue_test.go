package queue_test

import (
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pubq/pubq/pkg/queue"
)

func repoFile(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "queues.yaml")
}

func TestLoadRepoConfig(t *testing.T) {
	cfg, err := queue.Load(repoFile(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Queues) < 3 {
		t.Fatalf("want at least 3 queues, got %d", len(cfg.Queues))
	}
	crit, ok := cfg.Queue("critical")
	if !ok {
		t.Fatal("no critical queue")
	}
	// Set in the queue.
	if crit.AckDeadline != 30*time.Second || crit.Concurrency != 32 || crit.Backoff.Initial != 500*time.Millisecond {
		t.Errorf("critical overrides not applied: %+v", crit)
	}
	// Inherited from defaults.
	if crit.Backoff.Multiplier != 2 || crit.Backoff.Randomization != 0.5 || crit.MaxDeliveryAttempts != 20 {
		t.Errorf("critical defaults not inherited: %+v", crit.Backoff)
	}
	q, err := cfg.Route("email.send")
	if err != nil || q.Name != "bulk" {
		t.Fatalf("Route(email.send) = %v, %v", q, err)
	}
	if _, err := cfg.Route("nope.nope"); !errors.Is(err, queue.ErrUnknownKind) {
		t.Fatalf("unknown kind: %v", err)
	}
	def, _ := cfg.Queue("default")
	if b := def.BackoffFor("account.merge"); b.MaxAttempts != 5 || b.Initial != time.Second {
		t.Errorf("kind override: %+v", b)
	}
	if def.TimeoutFor("account.merge") != 2*time.Minute || def.TimeoutFor("demo.record") != 5*time.Minute {
		t.Error("kind timeout override not applied")
	}
	if len(cfg.Schedules) != 1 || cfg.Schedules[0].Kind != "students.scan" || !strings.Contains(string(cfg.Schedules[0].Payload), `"ranges":64`) {
		t.Errorf("schedules: %+v", cfg.Schedules)
	}
}

const base = `
version: 1
queues:
  alpha:
    topic: t-alpha
    subscription: s-alpha
    dead_letter_topic: t-alpha-dead
    dead_letter_subscription: s-alpha-dead
    kinds: [a.one]
`

func TestParseDefaults(t *testing.T) {
	cfg, err := queue.Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	q := cfg.Queues[0]
	if q.AckDeadline != time.Minute || q.Backoff.MaxAttempts != 10 || q.KeyRetention <= q.MessageRetention || q.DBConns != 16 {
		t.Errorf("built-in defaults: %+v", q)
	}
}

// Each bad file must fail with an error naming the queue (or schedule) and the field.
func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"version", strings.Replace(base, "version: 1", "version: 2", 1), []string{"version"}},
		{"unknown field", base + "    concurrencyy: 3\n", []string{"concurrencyy"}},
		{"no queues", "version: 1\n", []string{"queues"}},
		{"bad duration", base + "    ack_deadline: soon\n", []string{"soon", "duration"}},
		{"ack too short", base + "    ack_deadline: 5s\n", []string{`queue "alpha"`, "ack_deadline"}},
		{"attempts", base + "    max_delivery_attempts: 2\n", []string{`queue "alpha"`, "max_delivery_attempts"}},
		{"retention", base + "    key_retention: 1h\n", []string{`queue "alpha"`, "key_retention"}},
		{"concurrency", base + "    concurrency: 0\n", []string{`queue "alpha"`, "concurrency"}},
		{"streams", base + "    streams: 0\n", []string{`queue "alpha"`, "streams"}},
		{"db_conns", base + "    db_conns: -1\n", []string{`queue "alpha"`, "db_conns"}},
		{"max_rate", base + "    max_rate: -5\n", []string{`queue "alpha"`, "max_rate"}},
		{"backoff", base + "    backoff: {initial: 10s, max: 1s}\n", []string{`queue "alpha"`, "backoff", "max"}},
		{"randomization", base + "    backoff: {randomization: 1.5}\n", []string{"backoff", "randomization"}},
		{"no topic", strings.Replace(base, "    topic: t-alpha\n", "", 1), []string{`queue "alpha"`, "topic: required"}},
		{"bad topic", strings.Replace(base, "    topic: t-alpha\n", "    topic: x\n", 1), []string{`queue "alpha"`, "topic", "valid"}},
		{"same dlq", strings.Replace(base, "t-alpha-dead", "t-alpha", 1), []string{"dead_letter_topic"}},
		{"no kinds", strings.Replace(base, "kinds: [a.one]", "kinds: []", 1), []string{"kinds"}},
		{"bad kind", strings.Replace(base, "a.one", "A One", 1), []string{"kinds", "A One"}},
		// Valid syntax, but longer than a job may carry (job.ValidateKind): no job could ever reach it.
		{"kind too long", strings.Replace(base, "a.one", "a."+strings.Repeat("x", 127), 1), []string{"kinds", "128 bytes"}},
		{"override unknown kind", base + "    kind_overrides: {b.two: {timeout: 1s}}\n", []string{"kind_overrides", "b.two"}},
		{"kind twice", base + `  beta:
    topic: t-beta
    subscription: s-beta
    dead_letter_topic: t-beta-dead
    dead_letter_subscription: s-beta-dead
    kinds: [a.one]
`, []string{`queue "beta"`, "already routed", "alpha"}},
		{"shared topic", base + `  beta:
    topic: t-alpha
    subscription: s-beta
    dead_letter_topic: t-beta-dead
    dead_letter_subscription: s-beta-dead
    kinds: [b.one]
`, []string{`queue "beta"`, "topic", "already used"}},
		{"defaults with topic", "version: 1\ndefaults: {topic: t-x}\n" + strings.TrimPrefix(base, "\nversion: 1\n"), []string{"defaults"}},
		{"schedule kind", base + "schedules:\n  s1: {cron: '* * * * *', kind: z.z}\n", []string{`schedule "s1"`, "kind"}},
		{"schedule cron", base + "schedules:\n  s1: {cron: '* *', kind: a.one}\n", []string{`schedule "s1"`, "cron"}},
		{"schedule payload", base + "schedules:\n  s1: {cron: '* * * * *', kind: a.one, payload: [1]}\n", []string{`schedule "s1"`, "payload"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := queue.Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
