package check

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pubq/pubq/pkg/queue"
	"github.com/zclconf/go-cty/cty"
)

// repoRoot is the repository root, seen from terraform/check.
var repoRoot = filepath.Join("..", "..")

// devVars are the inputs of terraform/envs/dev: its tfvars example, with the services deployed.
func devVars(t *testing.T, root string) map[string]cty.Value {
	t.Helper()
	vars, err := LoadVars(filepath.Join(root, "terraform", "envs", "dev", "terraform.tfvars.example"))
	if err != nil {
		t.Fatal(err)
	}
	vars["deploy_services"] = cty.True
	return vars
}

func buildDev(t *testing.T, root string, vars map[string]cty.Value) *Plan {
	t.Helper()
	p, err := Build(filepath.Join(root, "terraform", "envs", "dev"), vars)
	if err != nil {
		t.Fatalf("evaluating terraform: %v", err)
	}
	return p
}

func loadConfig(t *testing.T, path string) *queue.Config {
	t.Helper()
	cfg, err := queue.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func noErrors(t *testing.T, what string, errs []error) {
	t.Helper()
	for _, err := range errs {
		t.Errorf("%s: %v", what, err)
	}
}

// TestDevAgreesWithQueueConfig is the check CI runs: the dev environment, evaluated offline, matches
// queues.yaml as pkg/queue reads it and grants least privilege.
func TestDevAgreesWithQueueConfig(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(t, filepath.Join(repoRoot, "queues.yaml"))
	p := buildDev(t, repoRoot, devVars(t, repoRoot))
	noErrors(t, "CheckQueues", CheckQueues(cfg, p))
	noErrors(t, "CheckIAM", CheckIAM(cfg, p, DevLayout))
	noErrors(t, "CheckRuntime", CheckRuntime(p, DevLayout))
	noErrors(t, "CheckOutputs", CheckOutputs(cfg, p))
	if len(cfg.Queues) == 0 || len(p.Find("google_pubsub_subscription", "worker")) != len(cfg.Queues) {
		t.Fatalf("want one worker subscription per queue (%d), got %d", len(cfg.Queues), len(p.Find("google_pubsub_subscription", "worker")))
	}
}

// TestProviderFormats pins a few converted values, so a shared mistake in the Go and HCL conversions
// cannot hide.
func TestProviderFormats(t *testing.T) {
	t.Parallel()
	p := buildDev(t, repoRoot, devVars(t, repoRoot))
	for addr, want := range map[string]map[string]cty.Value{
		`module.queue["critical"].google_pubsub_subscription.worker`: {
			"ack_deadline_seconds":           cty.NumberIntVal(30),
			"message_retention_duration":     cty.StringVal("604800s"),
			"retry_policy.0.minimum_backoff": cty.StringVal("0.500s"),
			"retry_policy.0.maximum_backoff": cty.StringVal("60s"),
		},
		`module.queue["bulk"].google_pubsub_subscription.worker`: {
			"retry_policy.0.minimum_backoff": cty.StringVal("5s"),
			"retry_policy.0.maximum_backoff": cty.StringVal("600s"), // 30m, capped by Pub/Sub
		},
	} {
		i, ok := p.Lookup(addr)
		if !ok {
			t.Fatalf("%s not found", addr)
		}
		noErrors(t, addr, expect(i, want, addr))
	}
	for _, tc := range []struct {
		in   string
		want string
	}{{"500ms", "0.500s"}, {"1s", "1s"}, {"1m30s", "90s"}, {"168h", "604800s"}, {"2h45m10s", "9910s"}, {"1.5s", "1.500s"}, {"10m", "600s"}} {
		if got := ProviderDuration(mustDuration(t, tc.in)); got != tc.want {
			t.Errorf("ProviderDuration(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestBootstrapWithoutServices: the first apply (deploy_services = false) already creates every
// identity, grant and Pub/Sub resource, and no Cloud Run service.
func TestBootstrapWithoutServices(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(t, filepath.Join(repoRoot, "queues.yaml"))
	vars := devVars(t, repoRoot)
	vars["deploy_services"] = cty.False
	delete(vars, "producer_image")
	delete(vars, "worker_image")
	p := buildDev(t, repoRoot, vars)
	if n := len(p.Find("google_cloud_run_v2_service", "")); n != 0 {
		t.Fatalf("bootstrap creates %d Cloud Run services, want 0", n)
	}
	noErrors(t, "All", All(cfg, p, DevLayout))
}

// TestQueueConfigVariants: configs that differ from the repository's still produce matching
// Terraform: built-in defaults (no `defaults:` block), exactly-once, long backoffs, a fourth queue.
func TestQueueConfigVariants(t *testing.T) {
	t.Parallel()
	for name, yaml := range map[string]string{
		"no defaults block": `version: 1
queues:
  only:
    topic: t-only
    subscription: t-only-worker
    dead_letter_topic: t-only-dead
    dead_letter_subscription: t-only-dead-inspect
    kinds: [a.b]
`,
		"partial defaults, exactly-once, sub-second and long backoff": `version: 1
defaults:
  ack_deadline: 45s
  backoff: {max: 2h}
queues:
  fast:
    topic: fast
    subscription: fast-worker
    dead_letter_topic: fast-dead
    dead_letter_subscription: fast-dead-inspect
    exactly_once: true
    message_retention: 1h30m
    max_delivery_attempts: 5
    backoff: {initial: 250ms}
    kinds: [x.y]
  slow:
    topic: slow
    subscription: slow-worker
    dead_letter_topic: slow-dead
    dead_letter_subscription: slow-dead-inspect
    ack_deadline: 10m
    max_delivery_attempts: 100
    kinds: [x.z]
`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			root := copyRepo(t)
			writeFile(t, filepath.Join(root, "queues.yaml"), yaml)
			cfg := loadConfig(t, filepath.Join(root, "queues.yaml"))
			p := buildDev(t, root, devVars(t, root))
			noErrors(t, "All", All(cfg, p, DevLayout))
		})
	}
}

// mutation replaces old, which must occur exactly once, with new in a file of the copied repository.
type mutation struct{ file, old, new string }

// TestChecksRejectMutations: each check fails on a copy of the repository broken in one way.
func TestChecksRejectMutations(t *testing.T) {
	t.Parallel()
	const (
		queueMain   = "terraform/modules/queue/main.tf"
		serviceMain = "terraform/modules/service/main.tf"
		devMain     = "terraform/envs/dev/main.tf"
		devIdentity = "terraform/envs/dev/identity.tf"
		devSQL      = "terraform/envs/dev/sql.tf"
		devSecrets  = "terraform/envs/dev/secrets.tf"
	)
	type checkFunc func(cfg *queue.Config, p *Plan) []error
	queues := func(cfg *queue.Config, p *Plan) []error { return CheckQueues(cfg, p) }
	iam := func(cfg *queue.Config, p *Plan) []error { return CheckIAM(cfg, p, DevLayout) }
	runtime := func(_ *queue.Config, p *Plan) []error { return CheckRuntime(p, DevLayout) }
	outputs := func(cfg *queue.Config, p *Plan) []error { return CheckOutputs(cfg, p) }
	appendTo := func(file, text string) mutation { return mutation{file, "", text} }

	for _, tc := range []struct {
		name  string
		muts  []mutation
		check checkFunc
		want  string
	}{
		{
			name:  "producer gets subscriber on the worker subscriptions",
			muts:  []mutation{{devMain, `subscription_subscribers             = { worker = module.worker.member }`, `subscription_subscribers             = { worker = module.worker.member, producer = module.producer.member }`}},
			check: iam, want: `more than least privilege: serviceAccount:pubq-dev-producer@`,
		},
		{
			name:  "subscriber widened to pubsub.editor",
			muts:  []mutation{{queueMain, "subscription = google_pubsub_subscription.worker.name\n  role         = \"roles/pubsub.subscriber\"", "subscription = google_pubsub_subscription.worker.name\n  role         = \"roles/pubsub.editor\""}},
			check: iam, want: "forbidden role",
		},
		{
			name: "project-wide pubsub.editor",
			muts: []mutation{appendTo(devIdentity, `
resource "google_project_iam_member" "worker_pubsub" {
  project = var.project_id
  role    = "roles/pubsub.editor"
  member  = module.worker.member
}
`)},
			check: iam, want: "forbidden role: serviceAccount:pubq-dev-worker@",
		},
		{
			name: "project-wide pubsub.subscriber",
			muts: []mutation{appendTo(devIdentity, `
resource "google_project_iam_member" "worker_pubsub" {
  project = var.project_id
  role    = "roles/pubsub.subscriber"
  member  = module.worker.member
}
`)},
			check: iam, want: "project-wide Pub/Sub role",
		},
		{
			name: "authoritative binding",
			muts: []mutation{appendTo(queueMain, `
resource "google_pubsub_topic_iam_binding" "all" {
  project = var.project
  topic   = google_pubsub_topic.queue.name
  role    = "roles/pubsub.publisher"
  members = values(var.topic_publishers)
}
`)},
			check: iam, want: "google_pubsub_topic_iam_binding is not allowed",
		},
		{
			name:  "service agent also on the queue topic",
			muts:  []mutation{{queueMain, "for_each = var.topic_publishers", `for_each = merge(var.topic_publishers, { agent = "serviceAccount:${var.pubsub_service_agent}" })`}},
			check: iam, want: `more than least privilege: serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com has roles/pubsub.publisher on topic pubq-bulk `,
		},
		{
			name:  "service agent missing on the dead-letter topics",
			muts:  []mutation{{queueMain, "  dead_letter_publishers = merge(var.dead_letter_publishers, {\n    pubsub-service-agent = \"serviceAccount:${var.pubsub_service_agent}\"\n  })", "  dead_letter_publishers = var.dead_letter_publishers"}},
			check: iam, want: "missing grant: pubsub-agent needs roles/pubsub.publisher on topic pubq-critical-dead",
		},
		{
			name:  "pubqctl given publisher again",
			muts:  []mutation{{devMain, "    worker   = module.worker.member\n  }", "    worker   = module.worker.member\n    pubqctl  = \"serviceAccount:${google_service_account.pubqctl.email}\"\n  }"}},
			check: iam, want: "has roles/pubsub.publisher on topic pubq-default",
		},
		{
			name:  "producer cannot publish dead letters",
			muts:  []mutation{{devMain, "{ worker = module.worker.member, producer = module.producer.member }", "{ worker = module.worker.member }"}},
			check: iam, want: "missing grant: producer needs roles/pubsub.publisher on topic pubq-default-dead",
		},
		{
			name:  "worker cannot publish retries",
			muts:  []mutation{{devMain, "    worker   = module.worker.member\n", ""}},
			check: iam, want: "missing grant: worker needs roles/pubsub.publisher on topic pubq-default",
		},
		{
			name:  "Cloud SQL roles on every instance",
			muts:  []mutation{{serviceMain, "  condition {\n    title      = \"pubq-${var.sql_instance}\"\n    expression = \"resource.name == \\\"projects/${var.project}/instances/${var.sql_instance}\\\"\"\n  }\n", ""}},
			check: iam, want: "the Cloud SQL role is not limited to the instance",
		},
		{
			name:  "queue dropped from terraform",
			muts:  []mutation{{devMain, "    })\n  }\n\n  labels", "    }) if name != \"bulk\"\n  }\n\n  labels"}},
			check: queues, want: `queue "bulk": topic "pubq-bulk" is not in terraform`,
		},
		{
			name:  "queue dropped from terraform (outputs)",
			muts:  []mutation{{devMain, "    })\n  }\n\n  labels", "    }) if name != \"bulk\"\n  }\n\n  labels"}},
			check: outputs, want: `output "topics" has 2 queues, want 3`,
		},
		{
			name:  "ack deadline not from the config",
			muts:  []mutation{{queueMain, "ack_deadline_seconds         = local.seconds.ack_deadline", "ack_deadline_seconds         = 60"}},
			check: queues, want: `queue "critical": subscription "pubq-critical-worker": ack_deadline_seconds = 60, want 30`,
		},
		{
			name:  "dead-letter policy points at the queue topic",
			muts:  []mutation{{queueMain, "dead_letter_topic     = google_pubsub_topic.dead_letter.id", "dead_letter_topic     = google_pubsub_topic.queue.id"}},
			check: queues, want: `dead_letter_policy.0.dead_letter_topic = "projects/my-pubq-dev/topics/pubq-bulk", want "projects/my-pubq-dev/topics/pubq-bulk-dead"`,
		},
		{
			name:  "max delivery attempts hard-coded",
			muts:  []mutation{{queueMain, "max_delivery_attempts = var.max_delivery_attempts\n  }", "max_delivery_attempts = 5\n  }"}},
			check: queues, want: "dead_letter_policy.0.max_delivery_attempts = 5, want 20",
		},
		{
			name:  "retry backoff not capped at 600s",
			muts:  []mutation{{queueMain, "maximum_backoff = min(local.seconds.maximum_backoff, 600)", "maximum_backoff = local.seconds.maximum_backoff"}},
			check: queues, want: `retry_policy.0.maximum_backoff = "1800s", want "600s"`,
		},
		{
			name:  "exactly-once ignored",
			muts:  []mutation{{queueMain, "enable_exactly_once_delivery = var.exactly_once", "enable_exactly_once_delivery = false"}, {"queues.yaml", "    ack_deadline: 30s\n", "    ack_deadline: 30s\n    exactly_once: true\n"}},
			check: queues, want: "enable_exactly_once_delivery = false, want true",
		},
		{
			name:  "inspection subscription renamed",
			muts:  []mutation{{queueMain, "name    = var.dead_letter_subscription", `name    = "${var.dead_letter_subscription}-old"`}},
			check: queues, want: `dead-letter subscription "pubq-default-dead-inspect" is not in terraform`,
		},
		{
			name:  "built-in default drifts from pkg/queue",
			muts:  []mutation{{devMain, `max_delivery_attempts = 20`, `max_delivery_attempts = 25`}, {"queues.yaml", "  max_delivery_attempts: 20     # Pub/Sub dead-letter policy backstop (5..100), for messages pubq never acks\n", ""}},
			check: queues, want: "max_delivery_attempts = 25, want 20",
		},
		{
			name:  "worker CPU throttled",
			muts:  []mutation{{devMain, "  cpu_idle      = false\n  min_instances = var.worker_min_instances", "  cpu_idle      = true\n  min_instances = var.worker_min_instances"}},
			check: runtime, want: "module.worker.google_cloud_run_v2_service.this[0]: cpu_idle must be false",
		},
		{
			name:  "worker scales to zero",
			muts:  []mutation{{devMain, "min_instances = var.worker_min_instances", "min_instances = 0"}},
			check: runtime, want: "min_instance_count is 0, want at least 1",
		},
		{
			name:  "API tokens as a plain env value",
			muts:  []mutation{{devMain, "  env = local.common_env\n  secret_env = {", "  env = merge(local.common_env, { PUBQ_API_TOKENS = \"t0ken\" })\n  secret_env = {"}},
			check: runtime, want: "PUBQ_API_TOKENS must come from Secret Manager",
		},
		{
			name: "API token value in state",
			muts: []mutation{appendTo(devSecrets, `
resource "google_secret_manager_secret_version" "api_tokens" {
  secret      = google_secret_manager_secret.api_tokens.id
  secret_data = "t0ken"
}
`)},
			check: runtime, want: "the API token value must be added out of band",
		},
		{
			name:  "IAM database authentication off",
			muts:  []mutation{{devSQL, `value = "on"`, `value = "off"`}},
			check: runtime, want: "cloudsql.iam_authentication must be on",
		},
		{
			name:  "public IP on Cloud SQL",
			muts:  []mutation{{devSQL, "ipv4_enabled    = false", "ipv4_enabled    = true"}},
			check: runtime, want: "settings.0.ip_configuration.0.ipv4_enabled = true, want false",
		},
		{
			name:  "password on a database user",
			muts:  []mutation{{devIdentity, `type     = "CLOUD_IAM_SERVICE_ACCOUNT"`, "type     = \"CLOUD_IAM_SERVICE_ACCOUNT\"\n  password = \"hunter2\""}},
			check: runtime, want: "password is set",
		},
		{
			name:  "worker database user missing",
			muts:  []mutation{{serviceMain, "count = var.sql_instance == null ? 0 : 1", "count = 0"}},
			check: runtime, want: `worker: no google_sql_user "pubq-dev-worker@my-pubq-dev.iam"`,
		},
		{
			name:  "worker runs as the producer",
			muts:  []mutation{{serviceMain, "service_account                  = google_service_account.this.email", `service_account                  = replace(google_service_account.this.email, "worker", "producer")`}},
			check: runtime, want: `runs as "pubq-dev-producer@my-pubq-dev.iam.gserviceaccount.com", want its own service account "pubq-dev-worker@`,
		},
		{
			name:  "Cloud SQL dialled on a public IP it does not have",
			muts:  []mutation{{devMain, `PUBQ_CLOUDSQL_PRIVATE_IP = "true"`, `PUBQ_CLOUDSQL_PRIVATE_IP = "false"`}},
			check: runtime, want: `env PUBQ_CLOUDSQL_PRIVATE_IP = "false", want "true"`,
		},
		{
			name:  "queue config not mounted",
			muts:  []mutation{{devMain, `queues_path      = "${local.queues_mount_dir}/queues.yaml"`, `queues_path      = "/srv/queues.yaml"`}},
			check: runtime, want: `PUBQ_QUEUES "/srv/queues.yaml" is not a file of the queue config secret`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := copyRepo(t)
			for _, m := range tc.muts {
				mutate(t, root, m)
			}
			cfg := loadConfig(t, filepath.Join(root, "queues.yaml"))
			errs := tc.check(cfg, buildDev(t, root, devVars(t, root)))
			for _, err := range errs {
				if strings.Contains(err.Error(), tc.want) {
					return
				}
			}
			t.Errorf("want an error containing %q, got %d errors:", tc.want, len(errs))
			for _, err := range errs {
				t.Log(err)
			}
		})
	}
}

// TestStaleConfig: Terraform applied from one queues.yaml while the binaries read another.
func TestStaleConfig(t *testing.T) {
	t.Parallel()
	root := copyRepo(t)
	stale := filepath.Join(root, "applied-queues.yaml")
	orig, err := os.ReadFile(filepath.Join(root, "queues.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, stale, string(orig))
	vars := devVars(t, root)
	vars["queues_file"] = cty.StringVal(stale)
	p := buildDev(t, root, vars)

	added := strings.Replace(string(orig), "queues:\n", `queues:
  reports:
    topic: pubq-reports
    subscription: pubq-reports-worker
    dead_letter_topic: pubq-reports-dead
    dead_letter_subscription: pubq-reports-dead-inspect
    kinds: [report.build]
`, 1)
	writeFile(t, filepath.Join(root, "queues.yaml"), added)
	cfg := loadConfig(t, filepath.Join(root, "queues.yaml"))
	wantError(t, CheckQueues(cfg, p), `queue "reports": topic "pubq-reports" is not in terraform`)
	wantError(t, CheckIAM(cfg, p, DevLayout), "missing grant: producer needs roles/pubsub.publisher on topic pubq-reports")

	removed := strings.Replace(string(orig), "  bulk:\n    topic: pubq-bulk\n", "  bulk:\n    topic: pubq-bulk-v2\n", 1)
	writeFile(t, filepath.Join(root, "queues.yaml"), removed)
	cfg = loadConfig(t, filepath.Join(root, "queues.yaml"))
	wantError(t, CheckQueues(cfg, p), `topic "pubq-bulk" (module.queue["bulk"].google_pubsub_topic.queue) belongs to no queue`)
	wantError(t, CheckIAM(cfg, p, DevLayout), "more than least privilege")
}

// TestBuildRejects: the evaluator itself refuses what Terraform would refuse.
func TestBuildRejects(t *testing.T) {
	t.Parallel()
	t.Run("variable validation", func(t *testing.T) {
		t.Parallel()
		vars := devVars(t, repoRoot)
		vars["worker_min_instances"] = cty.NumberIntVal(0)
		_, err := Build(filepath.Join(repoRoot, "terraform", "envs", "dev"), vars)
		wantError(t, []error{err}, "worker_min_instances must be at least 1")
	})
	t.Run("precondition", func(t *testing.T) {
		t.Parallel()
		root := copyRepo(t)
		mutate(t, root, mutation{"terraform/modules/queue/main.tf", "local.seconds.ack_deadline >= 10", "local.seconds.ack_deadline >= 31"})
		_, err := Build(filepath.Join(root, "terraform", "envs", "dev"), devVars(t, root))
		wantError(t, []error{err}, `module.queue["critical"].google_pubsub_subscription.worker precondition: ack_deadline must be between 10s and 600s`)
	})
	t.Run("missing image", func(t *testing.T) {
		t.Parallel()
		vars := devVars(t, repoRoot)
		delete(vars, "worker_image")
		_, err := Build(filepath.Join(repoRoot, "terraform", "envs", "dev"), vars)
		wantError(t, []error{err}, "image is required when deploy is true")
	})
	for name, tc := range map[string]struct{ src, want string }{
		"for_each over a list":  {`resource "a_b" "c" { for_each = ["x"] }`, "for_each must be a map or a set of strings, not tuple"},
		"undeclared variable":   {`output "o" { value = var.nope }`, `Unsupported attribute; This object does not have an attribute named "nope"`},
		"unknown function":      {`output "o" { value = timestamp() }`, `There is no function named "timestamp"`},
		"reference cycle":       {"locals {\n  a = local.b\n  b = local.a\n}\n", "cycle through local."},
		"unsupported block":     {`widget "x" {}`, `unsupported block type "widget"`},
		"unsupported argument":  {"module \"m\" {\n  source = \"./m\"\n  nope = 1\n}\n", `unsupported argument "nope"`},
		"remote module sources": {"module \"m\" {\n  source = \"terraform-google-modules/pubsub/google\"\n}\n", "only local sources are supported"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "main.tf"), tc.src)
			writeFile(t, filepath.Join(dir, "m", "main.tf"), "variable \"x\" {\n  default = 1\n}\n")
			_, err := Build(dir, nil)
			wantError(t, []error{err}, tc.want)
		})
	}
}

func wantError(t *testing.T, errs []error, want string) {
	t.Helper()
	for _, err := range errs {
		if err != nil && strings.Contains(err.Error(), want) {
			return
		}
	}
	t.Errorf("want an error containing %q, got %v", want, errs)
}

// copyRepo copies terraform/ (without this module) and queues.yaml into a temporary repository root.
func copyRepo(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	src := filepath.Join(repoRoot, "terraform")
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			if rel == "check" || strings.HasPrefix(d.Name(), ".terraform") {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, "terraform", rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, "terraform", rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, "queues.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dst, "queues.yaml"), string(b))
	return dst
}

// mutate applies m to the copy at root; an old string that is not found exactly once fails the test,
// so a negative test cannot pass because its mutation silently did nothing.
func mutate(t *testing.T, root string, m mutation) {
	t.Helper()
	path := filepath.Join(root, filepath.FromSlash(m.file))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if m.old == "" {
		writeFile(t, path, s+m.new)
		return
	}
	if n := strings.Count(s, m.old); n != 1 {
		t.Fatalf("mutation of %s: %q occurs %d times, want 1", m.file, m.old, n)
	}
	writeFile(t, path, strings.Replace(s, m.old, m.new, 1))
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
