package check

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/pubq/pubq/pkg/queue"
	"github.com/zclconf/go-cty/cty"
)

// Layout names, by Terraform address, the resources the checks reason about.
type Layout struct {
	ProducerSA      string // the producer's google_service_account
	WorkerSA        string // the worker's google_service_account
	PubqctlSA       string // pubqctl's google_service_account; "" if there is none
	ProducerService string // the producer's google_cloud_run_v2_service
	WorkerService   string // the worker's google_cloud_run_v2_service
	SQLInstance     string // the google_sql_database_instance
	SQLDatabase     string // the google_sql_database
	APITokensSecret string // the google_secret_manager_secret holding PUBQ_API_TOKENS
	QueuesSecret    string // the google_secret_manager_secret holding queues.yaml
}

// DevLayout is the layout of terraform/envs/dev.
var DevLayout = Layout{
	ProducerSA:      "module.producer.google_service_account.this",
	WorkerSA:        "module.worker.google_service_account.this",
	PubqctlSA:       "google_service_account.pubqctl",
	ProducerService: "module.producer.google_cloud_run_v2_service.this[0]",
	WorkerService:   "module.worker.google_cloud_run_v2_service.this[0]",
	SQLInstance:     "google_sql_database_instance.pubq",
	SQLDatabase:     "google_sql_database.pubq",
	APITokensSecret: "google_secret_manager_secret.api_tokens",
	QueuesSecret:    "google_secret_manager_secret.queues",
}

// pubsubMaxBackoff is Pub/Sub's cap on both retry-policy backoffs.
const pubsubMaxBackoff = 600 * time.Second

// ProviderDuration formats d as the provider's duration strings: "30s", or "0.500s" below a second.
func ProviderDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%.3fs", d.Seconds())
}

// CheckQueues reports every way the Pub/Sub resources in p differ from cfg: each queue needs its topic,
// its worker subscription (ack deadline, retention, exactly-once, retry policy, dead-letter policy
// pointing at its dead-letter topic with max_delivery_attempts), its dead-letter topic and inspection
// subscription; no topic or subscription may exist that no queue names.
func CheckQueues(cfg *queue.Config, p *Plan) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	topics := byName(p.Find("google_pubsub_topic", ""), &errs)
	subs := byName(p.Find("google_pubsub_subscription", ""), &errs)
	known := map[string]bool{}
	for _, q := range cfg.Queues {
		known[q.Topic], known[q.DeadLetterTopic] = true, true
		known[q.Subscription], known[q.DeadLetterSubscription] = true, true
		topic, ok := topics[q.Topic]
		if !ok {
			fail("queue %q: topic %q is not in terraform", q.Name, q.Topic)
		}
		dlt, ok := topics[q.DeadLetterTopic]
		if !ok {
			fail("queue %q: dead-letter topic %q is not in terraform", q.Name, q.DeadLetterTopic)
		}
		if sub, ok := subs[q.Subscription]; !ok {
			fail("queue %q: subscription %q is not in terraform", q.Name, q.Subscription)
		} else {
			want := map[string]cty.Value{
				"ack_deadline_seconds":                       cty.NumberIntVal(int64(q.AckDeadline / time.Second)),
				"message_retention_duration":                 cty.StringVal(ProviderDuration(q.MessageRetention)),
				"enable_exactly_once_delivery":               cty.BoolVal(q.ExactlyOnce),
				"expiration_policy.0.ttl":                    cty.StringVal(""),
				"retry_policy.0.minimum_backoff":             cty.StringVal(ProviderDuration(min(q.Backoff.Initial, pubsubMaxBackoff))),
				"retry_policy.0.maximum_backoff":             cty.StringVal(ProviderDuration(min(q.Backoff.Max, pubsubMaxBackoff))),
				"dead_letter_policy.0.max_delivery_attempts": cty.NumberIntVal(int64(q.MaxDeliveryAttempts)),
			}
			if topic != nil {
				want["topic"] = attr(topic, "id")
			}
			if dlt != nil {
				want["dead_letter_policy.0.dead_letter_topic"] = attr(dlt, "id")
			}
			errs = append(errs, expect(sub, want, fmt.Sprintf("queue %q: subscription %q", q.Name, q.Subscription))...)
			if n := length(attr(sub, "dead_letter_policy")); n != 1 {
				fail("queue %q: subscription %q has %d dead_letter_policy blocks, want 1", q.Name, q.Subscription, n)
			}
		}
		if insp, ok := subs[q.DeadLetterSubscription]; !ok {
			fail("queue %q: dead-letter subscription %q is not in terraform", q.Name, q.DeadLetterSubscription)
		} else {
			want := map[string]cty.Value{"expiration_policy.0.ttl": cty.StringVal("")}
			if dlt != nil {
				want["topic"] = attr(dlt, "id")
			}
			errs = append(errs, expect(insp, want, fmt.Sprintf("queue %q: dead-letter subscription %q", q.Name, q.DeadLetterSubscription))...)
			if length(attr(insp, "dead_letter_policy")) != 0 {
				fail("queue %q: dead-letter subscription %q must not dead-letter again", q.Name, q.DeadLetterSubscription)
			}
		}
	}
	for _, name := range sortedKeys(topics) {
		if !known[name] {
			fail("topic %q (%s) belongs to no queue in the config", name, topics[name].Address())
		}
	}
	for _, name := range sortedKeys(subs) {
		if !known[name] {
			fail("subscription %q (%s) belongs to no queue in the config", name, subs[name].Address())
		}
	}
	return errs
}

// Grant is one IAM membership in the plan.
type Grant struct {
	Address   string
	Scope     string // project, topic, subscription, secret, run-service, service-account
	Resource  string // short name of the resource (topic id, secret id, SA email, ...)
	Role      string
	Member    string
	Condition string // the IAM condition expression, if any
}

func (g Grant) String() string {
	s := fmt.Sprintf("%s has %s on %s %s", g.Member, g.Role, g.Scope, g.Resource)
	if g.Condition != "" {
		s += " if " + g.Condition
	}
	return s + " (" + g.Address + ")"
}

// iamScopes maps the *_iam_member types the configuration may use to their scope and resource argument.
var iamScopes = map[string][2]string{
	"google_project_iam_member":               {"project", "project"},
	"google_pubsub_topic_iam_member":          {"topic", "topic"},
	"google_pubsub_subscription_iam_member":   {"subscription", "subscription"},
	"google_secret_manager_secret_iam_member": {"secret", "secret_id"},
	"google_cloud_run_v2_service_iam_member":  {"run-service", "name"},
	"google_service_account_iam_member":       {"service-account", "service_account_id"},
}

var iamType = regexp.MustCompile(`^google_.*_iam_(member|binding|policy|audit_config)$|_iam_custom_role$`)

// Grants collects every IAM membership in p; IAM resources other than the *_iam_member types above
// (authoritative bindings and policies, custom roles) are errors.
func Grants(p *Plan) ([]Grant, []error) {
	var out []Grant
	var errs []error
	for _, i := range p.Instances {
		sc, ok := iamScopes[i.Type]
		if !ok {
			if iamType.MatchString(i.Type) {
				errs = append(errs, fmt.Errorf("%s: %s is not allowed: grant with the non-authoritative *_iam_member resources", i.Address(), i.Type))
			}
			continue
		}
		g := Grant{
			Address:  i.Address(),
			Scope:    sc[0],
			Resource: lastSegment(str(attr(i, sc[1]))),
			Role:     str(attr(i, "role")),
			Member:   str(attr(i, "member")),
		}
		if c := attr(i, "condition"); length(c) > 0 {
			g.Condition = str(index(c, 0, "expression"))
		}
		out = append(out, g)
	}
	return out, errs
}

// telemetryRoles are the project-level roles the producer and worker hold to write traces, logs and metrics.
var telemetryRoles = []string{"roles/cloudtrace.agent", "roles/logging.logWriter", "roles/monitoring.metricWriter"}

var sqlRoles = []string{"roles/cloudsql.client", "roles/cloudsql.instanceUser"}

// forbiddenRoles may not be granted to anyone, anywhere.
var forbiddenRoles = map[string]bool{
	"roles/owner": true, "roles/editor": true, "roles/viewer": true,
	"roles/pubsub.admin": true, "roles/pubsub.editor": true,
	"roles/iam.serviceAccountAdmin": true, "roles/iam.serviceAccountKeyAdmin": true,
	"roles/secretmanager.admin": true, "roles/cloudsql.admin": true, "roles/cloudsql.editor": true,
}

var pubsubAgent = regexp.MustCompile(`^serviceAccount:service-([0-9]+)@gcp-sa-pubsub\.iam\.gserviceaccount\.com$`)

type grantKey struct{ who, scope, resource, role string }

// CheckIAM reports grants beyond least privilege and missing grants the system needs:
//   - producer: publisher on each queue and dead-letter topic (its relay publishes dead letters too);
//     secretAccessor on the API token and queue config secrets;
//   - worker: subscriber on each worker subscription; publisher on each queue and dead-letter topic;
//     secretAccessor on the queue config secret;
//   - pubqctl: subscriber on each inspection subscription (operators pull dead letters as it); no
//     publisher: a replay is an outbox row that a relay publishes;
//   - each of them: Cloud SQL client and instance user conditioned on the instance, and the producer
//     and worker the telemetry writers, at project level; nothing else;
//   - the Pub/Sub service agent: publisher on each dead-letter topic and subscriber on each worker
//     subscription, nothing else;
//   - anyone else: only run.invoker on the producer and token creator on the pubqctl account.
func CheckIAM(cfg *queue.Config, p *Plan, l Layout) []error {
	grants, errs := Grants(p)
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	who := map[string]string{} // member => principal
	emails := map[string]string{}
	for _, sa := range []struct{ name, addr string }{{"producer", l.ProducerSA}, {"worker", l.WorkerSA}, {"pubqctl", l.PubqctlSA}} {
		if sa.addr == "" {
			continue
		}
		i, ok := p.Lookup(sa.addr)
		if !ok {
			fail("service account %s (%s) is not in terraform", sa.name, sa.addr)
			continue
		}
		email := str(attr(i, "email"))
		who["serviceAccount:"+email] = sa.name
		emails[sa.name] = email
	}
	agent := ""
	if ps := p.Find("google_project", ""); len(ps) == 1 {
		agent = "serviceAccount:service-" + str(attr(ps[0], "number")) + "@gcp-sa-pubsub.iam.gserviceaccount.com"
	} else {
		fail("want exactly one data.google_project to find the Pub/Sub service agent, found %d", len(ps))
	}
	secretID := func(addr string) string {
		i, ok := p.Lookup(addr)
		if !ok {
			fail("secret %s is not in terraform", addr)
			return ""
		}
		return str(attr(i, "secret_id"))
	}
	tokens, queuesSecret := secretID(l.APITokensSecret), secretID(l.QueuesSecret)

	allowed := map[grantKey]bool{}
	required := map[grantKey]bool{}
	need := func(k grantKey) { allowed[k], required[k] = true, true }
	for _, q := range cfg.Queues {
		need(grantKey{"producer", "topic", q.Topic, "roles/pubsub.publisher"})
		// The producer's relay publishes any due outbox row, dead letters included.
		need(grantKey{"producer", "topic", q.DeadLetterTopic, "roles/pubsub.publisher"})
		need(grantKey{"worker", "topic", q.Topic, "roles/pubsub.publisher"})
		need(grantKey{"worker", "topic", q.DeadLetterTopic, "roles/pubsub.publisher"})
		need(grantKey{"worker", "subscription", q.Subscription, "roles/pubsub.subscriber"})
		need(grantKey{"pubsub-agent", "topic", q.DeadLetterTopic, "roles/pubsub.publisher"})
		need(grantKey{"pubsub-agent", "subscription", q.Subscription, "roles/pubsub.subscriber"})
		if l.PubqctlSA != "" {
			need(grantKey{"pubqctl", "subscription", q.DeadLetterSubscription, "roles/pubsub.subscriber"})
		}
	}
	need(grantKey{"producer", "secret", tokens, "roles/secretmanager.secretAccessor"})
	need(grantKey{"producer", "secret", queuesSecret, "roles/secretmanager.secretAccessor"})
	need(grantKey{"worker", "secret", queuesSecret, "roles/secretmanager.secretAccessor"})
	for _, name := range []string{"producer", "worker", "pubqctl"} {
		if name == "pubqctl" && l.PubqctlSA == "" {
			continue
		}
		for _, r := range sqlRoles {
			need(grantKey{name, "project", "", r})
		}
		if name != "pubqctl" {
			for _, r := range telemetryRoles {
				need(grantKey{name, "project", "", r})
			}
		}
	}
	producerService := ""
	if i, ok := p.Lookup(l.ProducerService); ok {
		producerService = str(attr(i, "name"))
	}
	sqlInstance := ""
	if i, ok := p.Lookup(l.SQLInstance); ok {
		sqlInstance = "projects/" + str(attr(i, "project")) + "/instances/" + str(attr(i, "name"))
	} else {
		fail("the Cloud SQL instance %s is not in terraform", l.SQLInstance)
	}

	have := map[grantKey]bool{}
	for _, g := range grants {
		if forbiddenRoles[g.Role] {
			fail("forbidden role: %s", g)
			continue
		}
		if g.Scope == "project" && strings.HasPrefix(g.Role, "roles/pubsub.") {
			fail("project-wide Pub/Sub role: %s; grant on topics and subscriptions instead", g)
			continue
		}
		if g.Member == "allUsers" || g.Member == "allAuthenticatedUsers" {
			fail("public member: %s", g)
			continue
		}
		principal, ours := who[g.Member]
		switch {
		case ours:
		case g.Member == agent:
			principal = "pubsub-agent"
		case pubsubAgent.MatchString(g.Member):
			fail("Pub/Sub service agent of another project: %s", g)
			continue
		default:
			// Humans and callers: may call the producer and impersonate pubqctl, nothing else.
			ok := (g.Scope == "run-service" && g.Resource == producerService && g.Role == "roles/run.invoker") ||
				(l.PubqctlSA != "" && g.Scope == "service-account" && g.Resource == emails["pubqctl"] && g.Role == "roles/iam.serviceAccountTokenCreator")
			if !ok {
				fail("grant to a member outside pubq: %s", g)
			}
			continue
		}
		resource := g.Resource
		if g.Scope == "project" {
			resource = ""
		}
		k := grantKey{principal, g.Scope, resource, g.Role}
		if !allowed[k] {
			fail("more than least privilege: %s is not in the allowed list for %s", g, principal)
			continue
		}
		if g.Scope == "project" && strings.HasPrefix(g.Role, "roles/cloudsql.") &&
			(sqlInstance == "" || !strings.Contains(g.Condition, `"`+sqlInstance+`"`)) {
			fail("the Cloud SQL role is not limited to the instance %s by an IAM condition: %s", sqlInstance, g)
			continue
		}
		have[k] = true
	}
	var missing []string
	for k := range required {
		if !have[k] {
			missing = append(missing, fmt.Sprintf("%s needs %s on %s %s", k.who, k.role, k.scope, k.resource))
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		fail("missing grant: %s", strings.TrimSpace(m))
	}
	return errs
}

// CheckRuntime reports Cloud Run and Cloud SQL settings the binaries depend on: the worker and the
// producer (which fires schedules) keep CPU and at least one instance; each runs as its own service
// account with PUBQ_* and OTEL_* env wired to the instance (over its private IP), database and mounted
// queues.yaml; the API
// tokens come from Secret Manager; Postgres 15 with IAM authentication on a private IP only, and an IAM
// database user per service account with no passwords anywhere. Without Cloud Run services (bootstrap)
// only the database part is checked.
func CheckRuntime(p *Plan, l Layout) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	inst, ok := p.Lookup(l.SQLInstance)
	if !ok {
		return []error{fmt.Errorf("the Cloud SQL instance %s is not in terraform", l.SQLInstance)}
	}
	errs = append(errs, expect(inst, map[string]cty.Value{
		"database_version":                           cty.StringVal("POSTGRES_15"),
		"settings.0.ip_configuration.0.ipv4_enabled": cty.False,
	}, l.SQLInstance)...)
	if str(index(attr(inst, "settings"), 0, "ip_configuration", 0, "private_network")) == "" {
		fail("%s: ip_configuration.private_network must be set (private IP only)", l.SQLInstance)
	}
	iamAuth := false
	for _, f := range elems(index(attr(inst, "settings"), 0, "database_flags")) {
		if str(index(f, "name")) == "cloudsql.iam_authentication" {
			iamAuth = str(index(f, "value")) == "on"
		}
	}
	if !iamAuth {
		fail("%s: database flag cloudsql.iam_authentication must be on", l.SQLInstance)
	}
	connName := str(attr(inst, "connection_name"))
	dbName := ""
	if db, ok := p.Lookup(l.SQLDatabase); ok {
		dbName = str(attr(db, "name"))
	} else {
		fail("database %s is not in terraform", l.SQLDatabase)
	}

	users := map[string]*Instance{}
	for _, u := range p.Find("google_sql_user", "") {
		users[str(attr(u, "name"))] = u
		for _, pw := range []string{"password", "password_wo"} {
			if v := attr(u, pw); v != cty.NilVal && !v.IsNull() {
				fail("%s: %s is set; database users authenticate with IAM, no passwords in state", u.Address(), pw)
			}
		}
	}
	if i, ok := p.Lookup(l.APITokensSecret); ok {
		for _, v := range p.Find("google_secret_manager_secret_version", "") {
			if lastSegment(strings.TrimSuffix(str(attr(v, "secret")), "/")) == str(attr(i, "secret_id")) ||
				str(attr(v, "secret")) == str(attr(i, "id")) {
				fail("%s: the API token value must be added out of band, not kept in state", v.Address())
			}
		}
	}

	for _, svc := range []struct{ name, sa, addr string }{{"producer", l.ProducerSA, l.ProducerService}, {"worker", l.WorkerSA, l.WorkerService}} {
		sa, ok := p.Lookup(svc.sa)
		if !ok {
			fail("%s service account %s is not in terraform", svc.name, svc.sa)
			continue
		}
		email := str(attr(sa, "email"))
		dbUser := strings.TrimSuffix(email, ".gserviceaccount.com")
		if u, ok := users[dbUser]; !ok {
			fail("%s: no google_sql_user %q", svc.name, dbUser)
		} else if str(attr(u, "type")) != "CLOUD_IAM_SERVICE_ACCOUNT" {
			fail("%s: type must be CLOUD_IAM_SERVICE_ACCOUNT", u.Address())
		}
		run, ok := p.Lookup(svc.addr)
		if !ok {
			continue // bootstrap: services not deployed yet
		}
		tmpl := index(attr(run, "template"), 0)
		if got := str(index(tmpl, "service_account")); got != email {
			fail("%s: runs as %q, want its own service account %q", svc.addr, got, email)
		}
		if v := index(tmpl, "containers", 0, "resources", 0, "cpu_idle"); v == cty.NilVal || v.IsNull() || v.True() {
			fail("%s: cpu_idle must be false: pulls, the relay and schedules run outside requests", svc.addr)
		}
		if n := num(index(tmpl, "scaling", 0, "min_instance_count")); n < 1 {
			fail("%s: min_instance_count is %d, want at least 1", svc.addr, n)
		}
		env, secretEnv := containerEnv(index(tmpl, "containers", 0))
		want := map[string]string{
			"PUBQ_PROJECT":             str(attr(run, "project")),
			"PUBQ_CLOUDSQL_INSTANCE":   connName,
			"PUBQ_CLOUDSQL_PRIVATE_IP": "true",
			"PUBQ_DATABASE_USER":       dbUser,
			"PUBQ_DATABASE_NAME":       dbName,
			"OTEL_TRACES_EXPORTER":     "gcp",
		}
		for _, k := range sortedKeys(want) {
			if env[k] != want[k] {
				fail("%s: env %s = %q, want %q", svc.addr, k, env[k], want[k])
			}
		}
		if env["OTEL_SERVICE_NAME"] == "" {
			fail("%s: env OTEL_SERVICE_NAME is not set", svc.addr)
		}
		for _, k := range []string{"PUBQ_DATABASE_URL", "PUBQ_DATABASE_PASSWORD", "PGPASSWORD"} {
			if _, ok := env[k]; ok {
				fail("%s: env %s must not be set in production (IAM database auth)", svc.addr, k)
			}
		}
		if !queuesMounted(tmpl, env["PUBQ_QUEUES"], p, l) {
			fail("%s: PUBQ_QUEUES %q is not a file of the queue config secret mounted into the container", svc.addr, env["PUBQ_QUEUES"])
		}
		_, plainTokens := env["PUBQ_API_TOKENS"]
		tokenSecret, secretTokens := secretEnv["PUBQ_API_TOKENS"]
		switch {
		case plainTokens:
			fail("%s: PUBQ_API_TOKENS must come from Secret Manager, not a plain value", svc.addr)
		case svc.name == "producer" && !secretTokens:
			fail("%s: PUBQ_API_TOKENS is not set from Secret Manager", svc.addr)
		case svc.name == "producer":
			if i, ok := p.Lookup(l.APITokensSecret); ok && lastSegment(tokenSecret) != str(attr(i, "secret_id")) {
				fail("%s: PUBQ_API_TOKENS comes from secret %q, want %q", svc.addr, tokenSecret, str(attr(i, "secret_id")))
			}
		case secretTokens:
			fail("%s: only the producer reads PUBQ_API_TOKENS", svc.addr)
		}
	}
	if l.PubqctlSA != "" {
		if sa, ok := p.Lookup(l.PubqctlSA); ok {
			dbUser := strings.TrimSuffix(str(attr(sa, "email")), ".gserviceaccount.com")
			if u, ok := users[dbUser]; !ok || str(attr(u, "type")) != "CLOUD_IAM_SERVICE_ACCOUNT" {
				fail("pubqctl: no google_sql_user %q of type CLOUD_IAM_SERVICE_ACCOUNT", dbUser)
			}
		} else {
			fail("pubqctl service account %s is not in terraform", l.PubqctlSA)
		}
	}
	return errs
}

// CheckOutputs reports missing or wrong root outputs the binaries and operators need.
func CheckOutputs(cfg *queue.Config, p *Plan) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	maps := map[string]func(queue.Queue) string{
		"topics":                    func(q queue.Queue) string { return q.Topic },
		"subscriptions":             func(q queue.Queue) string { return q.Subscription },
		"dead_letter_topics":        func(q queue.Queue) string { return q.DeadLetterTopic },
		"dead_letter_subscriptions": func(q queue.Queue) string { return q.DeadLetterSubscription },
	}
	for _, name := range sortedKeys(maps) {
		v, ok := p.Outputs[name]
		if !ok {
			fail("output %q is missing", name)
			continue
		}
		if n := length(v); n != len(cfg.Queues) {
			fail("output %q has %d queues, want %d", name, n, len(cfg.Queues))
		}
		for _, q := range cfg.Queues {
			if got := str(index(v, q.Name)); got != maps[name](q) {
				fail("output %q[%q] = %q, want %q", name, q.Name, got, maps[name](q))
			}
		}
	}
	for _, name := range []string{"project_id", "sql_instance_connection_name", "database_name", "database_users", "service_account_emails", "service_urls", "api_tokens_secret"} {
		if _, ok := p.Outputs[name]; !ok {
			fail("output %q is missing", name)
		}
	}
	for _, k := range []string{"producer", "worker"} {
		if str(index(p.Outputs["service_account_emails"], k)) == "" {
			fail("output service_account_emails has no %q", k)
		}
	}
	return errs
}

// All runs every check.
func All(cfg *queue.Config, p *Plan, l Layout) []error {
	var errs []error
	errs = append(errs, CheckQueues(cfg, p)...)
	errs = append(errs, CheckIAM(cfg, p, l)...)
	errs = append(errs, CheckRuntime(p, l)...)
	errs = append(errs, CheckOutputs(cfg, p)...)
	return errs
}

func queuesMounted(tmpl cty.Value, path string, p *Plan, l Layout) bool {
	secret, ok := p.Lookup(l.QueuesSecret)
	if path == "" || !ok {
		return false
	}
	volumes := map[string]cty.Value{}
	for _, v := range elems(index(tmpl, "volumes")) {
		volumes[str(index(v, "name"))] = v
	}
	for _, m := range elems(index(tmpl, "containers", 0, "volume_mounts")) {
		vol, ok := volumes[str(index(m, "name"))]
		if !ok || lastSegment(str(index(vol, "secret", 0, "secret"))) != str(attr(secret, "secret_id")) {
			continue
		}
		for _, item := range elems(index(vol, "secret", 0, "items")) {
			if strings.TrimSuffix(str(index(m, "mount_path")), "/")+"/"+str(index(item, "path")) == path {
				return true
			}
		}
	}
	return false
}

func containerEnv(c cty.Value) (plain, secret map[string]string) {
	plain, secret = map[string]string{}, map[string]string{}
	for _, e := range elems(index(c, "env")) {
		name := str(index(e, "name"))
		if ref := index(e, "value_source", 0, "secret_key_ref", 0, "secret"); ref != cty.NilVal {
			secret[name] = str(ref)
			continue
		}
		plain[name] = str(index(e, "value"))
	}
	return plain, secret
}

func byName(insts []*Instance, errs *[]error) map[string]*Instance {
	out := map[string]*Instance{}
	for _, i := range insts {
		n := str(attr(i, "name"))
		if prev, dup := out[n]; dup {
			*errs = append(*errs, fmt.Errorf("%s and %s both create %q", prev.Address(), i.Address(), n))
		}
		out[n] = i
	}
	return out
}

// expect compares dotted paths ("retry_policy.0.minimum_backoff") of i's attributes with want.
func expect(i *Instance, want map[string]cty.Value, what string) []error {
	var errs []error
	for _, path := range sortedKeys(want) {
		var steps []any
		for _, s := range strings.Split(path, ".") {
			var n int
			if _, err := fmt.Sscanf(s, "%d", &n); err == nil {
				steps = append(steps, n)
			} else {
				steps = append(steps, s)
			}
		}
		got := index(i.Attrs, steps...)
		if got == cty.NilVal || got.IsNull() || !got.Type().Equals(want[path].Type()) || !got.Equals(want[path]).True() {
			errs = append(errs, fmt.Errorf("%s: %s = %s, want %s (%s)", what, path, show(got), show(want[path]), i.Address()))
		}
	}
	return errs
}

func show(v cty.Value) string {
	switch {
	case v == cty.NilVal:
		return "<unset>"
	case v.IsNull():
		return "null"
	case v.Type() == cty.String:
		return fmt.Sprintf("%q", v.AsString())
	case v.Type() == cty.Number:
		return v.AsBigFloat().Text('f', -1)
	case v.Type() == cty.Bool:
		return fmt.Sprint(v.True())
	}
	return v.GoString()
}

// attr is i's attribute name, or cty.NilVal.
func attr(i *Instance, name string) cty.Value { return index(i.Attrs, name) }

// index walks objects/maps by string and tuples/lists by int; cty.NilVal when a step is missing.
func index(v cty.Value, steps ...any) cty.Value {
	for _, s := range steps {
		if v == cty.NilVal || v.IsNull() || !v.IsKnown() {
			return cty.NilVal
		}
		ty := v.Type()
		switch k := s.(type) {
		case string:
			switch {
			case ty.IsObjectType():
				if !ty.HasAttribute(k) {
					return cty.NilVal
				}
				v = v.GetAttr(k)
			case ty.IsMapType():
				kv := cty.StringVal(k)
				if !v.HasIndex(kv).True() {
					return cty.NilVal
				}
				v = v.Index(kv)
			default:
				return cty.NilVal
			}
		case int:
			if !(ty.IsTupleType() || ty.IsListType()) || k >= v.LengthInt() {
				return cty.NilVal
			}
			v = v.Index(cty.NumberIntVal(int64(k)))
		}
	}
	return v
}

// elems is the elements of a list, tuple, set or map, or nothing.
func elems(v cty.Value) []cty.Value {
	if v == cty.NilVal || v.IsNull() || !v.IsKnown() || !v.CanIterateElements() {
		return nil
	}
	var out []cty.Value
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		out = append(out, e)
	}
	return out
}

func str(v cty.Value) string {
	if v == cty.NilVal || v.IsNull() || !v.IsKnown() || v.Type() != cty.String {
		return ""
	}
	return v.AsString()
}

func num(v cty.Value) int64 {
	if v == cty.NilVal || v.IsNull() || v.Type() != cty.Number {
		return 0
	}
	n, _ := v.AsBigFloat().Int64()
	return n
}

func length(v cty.Value) int {
	if v == cty.NilVal || v.IsNull() || !v.CanIterateElements() {
		return 0
	}
	return v.LengthInt()
}

func lastSegment(s string) string { return s[strings.LastIndex(s, "/")+1:] }
