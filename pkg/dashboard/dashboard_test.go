package dashboard_test

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pubq/pubq/pkg/dashboard"
	"github.com/pubq/pubq/pkg/inspect"
	"github.com/pubq/pubq/pkg/pubqtest"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
	"github.com/pubq/pubq/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const (
	aliceToken = "alice:correct-horse-battery-staple"
	aliceSec   = "correct-horse-battery-staple"
	bareToken  = "0123456789abcdef0123"
)

const testQueues = `
version: 1
queues:
  default:
    topic: t-default
    subscription: t-default-worker
    dead_letter_topic: t-default-dead
    dead_letter_subscription: t-default-dead-inspect
    kinds: [email.send]
`

type bundle struct {
	pool *pgxpool.Pool
	srv  *httptest.Server
	now  *clock
	logs *pubqtest.SyncBuffer // the dashboard's JSON log
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func setup(t *testing.T, tokens ...string) *bundle {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{URL: testenv.Postgres(t), MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	qc, err := queue.Parse([]byte(testQueues))
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) == 0 {
		tokens = []string{aliceToken, bareToken}
	}
	c := &clock{t: time.Now()}
	logs := &pubqtest.SyncBuffer{}
	h := dashboard.New(inspect.New(st.Pool(), qc), &dashboard.Config{Tokens: tokens, BasePath: "/ui", Now: c.Now,
		TraceURL: dashboard.CloudTraceURL("my-proj"), Logger: telemetry.NewLogger(logs, telemetry.LoggerOptions{})})
	mux := http.NewServeMux()
	mux.Handle("/ui/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	b := &bundle{pool: st.Pool(), srv: srv, now: c, logs: logs}
	b.exec(t, `INSERT INTO pubq.jobs (key, id, queue, kind, state, attempt, payload, finished_at, last_error, dead_reason, trace_parent)
		VALUES ('dead-1', 'i1', 'default', 'email.send', 'dead', 3, '{"to":"a@example.com"}', now(), 'smtp 550 <b>mailbox</b>', 'permanent',
			'00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'),
		('dead-2', 'i2', 'default', 'email.send', 'dead', 3, '{"to":"b@example.com"}', now(), 'smtp 550', 'exhausted', NULL),
		('<script>alert(1)</script>', 'i3', 'default', 'email.send', 'dead', 1, '{}', now(), 'x', 'permanent', NULL)`)
	return b
}

func (b *bundle) exec(t *testing.T, sql string) {
	t.Helper()
	if _, err := b.pool.Exec(context.Background(), sql); err != nil {
		t.Fatal(err)
	}
}

func (b *bundle) state(t *testing.T, key string) string {
	t.Helper()
	var s string
	if err := b.pool.QueryRow(context.Background(), `SELECT state FROM pubq.jobs WHERE key = $1`, key).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// client returns an HTTP client that keeps cookies and does not follow redirects.
func (b *bundle) client(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func (b *bundle) get(t *testing.T, c *http.Client, path string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.srv.URL+path, nil)
	return do(t, c, req)
}

func (b *bundle) post(t *testing.T, c *http.Client, path string, form url.Values, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(t, c, req)
}

func (b *bundle) login(t *testing.T, c *http.Client, tok string) {
	t.Helper()
	resp, _ := b.post(t, c, "/ui/login", url.Values{"token": {tok}, "next": {"/ui/dead"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/dead" {
		t.Fatalf("login: %d → %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%s", body)
	}
	return m[1]
}

func TestRefusesUnauthenticatedRequests(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t)

	resp, _ := b.get(t, c, "/ui/dead?queue=default")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login?next=%2Fui%2Fdead%3Fqueue%3Ddefault" {
		t.Fatalf("GET without a session: %d → %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = b.get(t, c, "/ui")
	if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d → %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := b.post(t, c, "/ui/replay", url.Values{"key": {"dead-1"}, "confirm": {"yes"}})
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Not logged in") {
		t.Fatalf("POST without a session: %d", resp.StatusCode)
	}
	for _, auth := range []string{"Bearer wrong-token-wrong-token", "Basic YWxpY2U6eA==", "Bearer "} {
		req, _ := http.NewRequest(http.MethodGet, b.srv.URL+"/ui/", nil)
		req.Header.Set("Authorization", auth)
		resp, _ = do(t, c, req)
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("GET with %q: %d, want 401", auth, resp.StatusCode)
		}
	}
	// A forged cookie (right shape, wrong signature) and an unknown token at login.
	u, _ := url.Parse(b.srv.URL + "/ui/")
	c.Jar.SetCookies(u, []*http.Cookie{{Name: "pubq_session", Value: "99999999999.AAAA", Path: "/ui/"}})
	if resp, _ = b.get(t, c, "/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("forged cookie: %d", resp.StatusCode)
	}
	resp, body = b.post(t, b.client(t), "/ui/login", url.Values{"token": {"not-a-token-at-all"}})
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "not valid") || len(resp.Cookies()) != 0 {
		t.Errorf("bad login: %d cookies %v", resp.StatusCode, resp.Cookies())
	}
	if b.state(t, "dead-1") != "dead" {
		t.Fatal("an unauthenticated request changed a job")
	}
}

func TestLoginSetsAStrictHttpOnlyCookieAndSessionsExpire(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t)
	resp, _ := b.post(t, c, "/ui/login", url.Values{"token": {aliceSec}, "next": {"https://evil.example/x"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("login with a foreign next: %d → %q (must stay on the dashboard)", resp.StatusCode, resp.Header.Get("Location"))
	}
	ck := resp.Cookies()
	if len(ck) != 1 || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode || ck[0].Path != "/ui/" || strings.Contains(ck[0].Value, aliceSec) {
		t.Fatalf("session cookie = %+v", ck)
	}
	resp, body := b.get(t, c, "/ui/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-queue="default"`) || !strings.Contains(body, "dashboard:alice") {
		t.Fatalf("overview: %d\n%s", resp.StatusCode, body)
	}
	if resp.Header.Get("Content-Security-Policy") == "" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Error("security headers missing")
	}
	b.now.Add(13 * time.Hour)
	if resp, _ = b.get(t, c, "/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("expired session still accepted: %d", resp.StatusCode)
	}
}

func TestRemovingATokenEndsItsSessions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t)
	b.login(t, c, aliceSec)
	// Another dashboard over the same database that no longer lists alice's token.
	qc, _ := queue.Parse([]byte(testQueues))
	h := dashboard.New(inspect.New(b.pool, qc), &dashboard.Config{Tokens: []string{bareToken}, BasePath: "/ui",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv := httptest.NewServer(h)
	defer srv.Close()
	u, _ := url.Parse(b.srv.URL + "/ui/")
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/ui/", nil)
	for _, ck := range c.Jar.Cookies(u) {
		req.AddCookie(ck)
	}
	resp, _ := do(t, b.client(t), req)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("session of a removed token: %d", resp.StatusCode)
	}
}

func TestActionsNeedCSRFAndConfirmation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t)
	b.login(t, c, aliceSec)

	// No token, a wrong one, and one from another session: 403.
	other := b.client(t)
	b.login(t, other, bareToken)
	_, otherPage := b.get(t, other, "/ui/dead")
	for _, tok := range []string{"", "bogus", csrfOf(t, otherPage)} {
		resp, _ := b.post(t, c, "/ui/replay", url.Values{"key": {"dead-1"}, "confirm": {"yes"}, "csrf": {tok}})
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST with csrf %q: %d, want 403", tok, resp.StatusCode)
		}
	}
	_, page := b.get(t, c, "/ui/dead")
	tok := csrfOf(t, page)
	// A cross-site POST with a valid token is refused too (defence in depth).
	resp, _ := b.post(t, c, "/ui/replay", url.Values{"key": {"dead-1"}, "confirm": {"yes"}, "csrf": {tok}}, "Sec-Fetch-Site", "cross-site")
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site POST: %d, want 403", resp.StatusCode)
	}
	if b.state(t, "dead-1") != "dead" {
		t.Fatal("a refused POST changed the job")
	}

	// Without confirm: a dry run and a confirmation form; nothing changes.
	resp, body := b.post(t, c, "/ui/replay", url.Values{"key": {"dead-1"}, "csrf": {tok}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "would have replayed 1 of 1") || !strings.Contains(body, `name="confirm" value="yes"`) {
		t.Fatalf("confirmation page: %d\n%s", resp.StatusCode, body)
	}
	if b.state(t, "dead-1") != "dead" {
		t.Fatal("the confirmation step replayed the job")
	}
	resp, _ = b.post(t, c, "/ui/replay", url.Values{"key": {"dead-1"}, "csrf": {tok}, "confirm": {"yes"}})
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/job?") {
		t.Fatalf("confirmed replay: %d → %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if b.state(t, "dead-1") != "pending" {
		t.Fatal("not replayed")
	}
	resp, body = b.get(t, c, resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Replayed 1 of 1 job(s).") || !strings.Contains(body, `id="state">pending`) {
		t.Fatalf("job page after replay: %d\n%s", resp.StatusCode, body)
	}
	var actor string
	if err := b.pool.QueryRow(context.Background(), `SELECT actor FROM pubq.audit WHERE job_key = 'dead-1'`).Scan(&actor); err != nil || actor != "dashboard:alice" {
		t.Fatalf("audit actor = %q, %v", actor, err)
	}
	// Submitting the confirmed form again (a double click, a resubmit) does not replay twice.
	resp, _ = b.post(t, c, "/ui/replay", url.Values{"key": {"dead-1"}, "csrf": {tok}, "confirm": {"yes"}})
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "changed=0") {
		t.Fatalf("second replay → %q", loc)
	}

	// Bulk: every dead job of the queue (two are left), with a bearer token and no CSRF (no ambient credential).
	resp, body = b.post(t, http.DefaultClient, "/ui/replay", url.Values{"scope": {"filter"}, "queue": {"default"}}, "Authorization", "Bearer "+bareToken)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "would have replayed 2 of 2") {
		t.Fatalf("bulk confirmation: %d\n%s", resp.StatusCode, body)
	}
	// The confirmation carries the preview's window pinned: a job that dies after the preview is not
	// replayed by the confirm it never showed.
	m := regexp.MustCompile(`name="until" value="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("the confirmation form pins no until:\n%s", body)
	}
	until := html.UnescapeString(m[1])
	if _, err := time.Parse(time.RFC3339Nano, until); err != nil {
		t.Fatalf("pinned until %q: %v", until, err)
	}
	time.Sleep(10 * time.Millisecond)
	b.exec(t, `INSERT INTO pubq.jobs (key, id, queue, kind, state, attempt, payload, finished_at, dead_reason)
		VALUES ('dead-late', 'i9', 'default', 'email.send', 'dead', 3, '{}', now(), 'exhausted')`)
	nc := b.client(t)
	resp, _ = b.post(t, nc, "/ui/replay", url.Values{"scope": {"filter"}, "queue": {"default"}, "until": {until}, "confirm": {"yes"}}, "Authorization", "Bearer "+bareToken)
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "changed=2") {
		t.Fatalf("bulk replay: %d → %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if b.state(t, "dead-2") != "pending" {
		t.Fatal("bulk replay missed dead-2")
	}
	if b.state(t, "dead-late") != "dead" {
		t.Fatal("the confirm replayed a job that died after its preview")
	}
}

func TestPagesEscapeAndLink(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t)
	b.login(t, c, aliceSec)

	_, body := b.get(t, c, "/ui/dead")
	if strings.Contains(body, "<script>alert(1)</script>") || !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Fatal("a job key was not escaped in the dead-letter view")
	}
	if !strings.Contains(body, `data-key="dead-1"`) || !strings.Contains(body, `id="replay-selected"`) {
		t.Fatalf("dead-letter view:\n%s", body)
	}
	resp, body := b.get(t, c, "/ui/job?key=dead-1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("job page: %d", resp.StatusCode)
	}
	if !strings.Contains(body, `href="https://console.cloud.google.com/traces/list?project=my-proj&amp;tid=4bf92f3577b34da6a3ce929d0e0e4736"`) {
		t.Errorf("no Cloud Trace link in the job page:\n%s", body)
	}
	if strings.Contains(body, "<b>mailbox</b>") || !strings.Contains(body, "&lt;b&gt;mailbox&lt;/b&gt;") {
		t.Error("the error text was not escaped")
	}
	if strings.Contains(body, "a@example.com") {
		t.Error("the payload is shown without being asked for")
	}
	if _, body = b.get(t, c, "/ui/job?key=dead-1&payload=1"); !strings.Contains(body, "a@example.com") {
		t.Error("the payload is not shown when asked for")
	}
	if resp, _ = b.get(t, c, "/ui/job?key=nope"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("missing job: %d", resp.StatusCode)
	}
	if resp, _ = b.get(t, c, "/ui/jobs?state=exploded"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad filter: %d", resp.StatusCode)
	}
	if resp, _ = b.get(t, c, "/ui/?window=forever"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad window: %d", resp.StatusCode)
	}
	// The done message is rebuilt from numbers, never echoed.
	if _, body = b.get(t, c, "/ui/job?key=dead-1&done=<i>pwned</i>&changed=1&matched=1"); strings.Contains(body, "pwned") {
		t.Error("the flash message echoes the query")
	}
}

func TestUnconfiguredDashboardRefusesEverything(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]*dashboard.Config{
		"nil":          nil,
		"no tokens":    {},
		"short token":  {Tokens: []string{"alice:short"}},
		"bad basepath": {Tokens: []string{bareToken}, BasePath: "ui/"},
	} {
		if cfg != nil {
			if err := cfg.Validate(); err == nil || !strings.HasPrefix(err.Error(), "pubq: dashboard:") {
				t.Errorf("%s: Validate = %v", name, err)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		}
		h := dashboard.New(inspect.New(nil, nil), cfg)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/login", nil))
		if rec.Code != http.StatusServiceUnavailable {
			t.Errorf("%s: %d, want 503", name, rec.Code)
		}
	}
}

// actionLines returns the "dashboard action" lines of the log, decoded, after checking no key appears
// in one twice.
func (b *bundle) actionLines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		if m["msg"] != "dashboard action" {
			continue
		}
		for k := range m {
			if n := strings.Count(l, `"`+k+`":`); n != 1 {
				t.Errorf("%s appears %d times in %s", k, n, l)
			}
		}
		out = append(out, m)
	}
	return out
}

// An action on one job logs the job (job_key, with its queue and kind); a bulk action logs none.
func TestActionLogNamesTheJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	bearer := []string{"Authorization", "Bearer " + bareToken}
	resp, _ := b.post(t, b.client(t), "/ui/replay", url.Values{"key": {"dead-1"}, "confirm": {"yes"}}, bearer...)
	if resp.StatusCode != http.StatusSeeOther || b.state(t, "dead-1") != "pending" {
		t.Fatalf("replay: %d, state %s", resp.StatusCode, b.state(t, "dead-1"))
	}
	resp, _ = b.post(t, b.client(t), "/ui/replay", url.Values{"scope": {"filter"}, "queue": {"default"}, "confirm": {"yes"}}, bearer...)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("bulk replay: %d", resp.StatusCode)
	}
	lines := b.actionLines(t)
	if len(lines) != 2 {
		t.Fatalf("%d action lines, want 2:\n%s", len(lines), b.logs)
	}
	if l := lines[0]; l["job_key"] != "dead-1" || l["job_queue"] != "default" || l["job_kind"] != "email.send" ||
		l["action"] != "replay" || l["actor"] != "dashboard" || l["changed"] != 1.0 {
		t.Errorf("single-job action line: %v", l)
	}
	if l := lines[1]; l["job_key"] != nil || l["changed"] != 2.0 {
		t.Errorf("bulk action line: %v", l)
	}
}

// A token entry is "name:secret" split at the first ':' (the secret may hold more), or a bare secret.
// An entry whose text before ':' is no name is refused, and the refusal does not quote it: it could be
// a bare secret holding ':', part of which would otherwise become the logged and audited actor.
func TestTokenEntries(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{
		"s3cr3t!pfx:0123456789abcdef-xyz",    // the text before ':' is no name
		"alice@example.com:0123456789abcdef", // nor is an address
		"hunter2pfx0123456789:tail",          // a name, but a 4-byte secret
	} {
		err := (&dashboard.Config{Tokens: []string{bareToken, bad}}).Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "pubq: dashboard: Tokens[1]:") {
			t.Errorf("%q: Validate = %v, want Tokens[1] refused", bad, err)
			continue
		}
		if before, _, _ := strings.Cut(bad, ":"); strings.Contains(err.Error(), before) {
			t.Errorf("the refusal quotes the entry: %v", err)
		}
	}
	const (
		bobToken = "bob:pass:word-0123456789" // name:secret, the secret holding ':'
		noName   = ":anonymous-0123456789"    // an empty name: the bare secret after ':'
	)
	b := setup(t, bobToken, noName)
	b.exec(t, `INSERT INTO pubq.jobs (key, id, queue, kind, state, attempt, payload, finished_at, last_error, dead_reason)
		VALUES ('dead-3', 'i4', 'default', 'email.send', 'dead', 3, '{}', now(), 'x', 'permanent')`)
	for _, c := range []struct{ token, key, actor string }{
		{"pass:word-0123456789", "dead-1", "dashboard:bob"},
		{"anonymous-0123456789", "dead-3", "dashboard"},
	} {
		resp, _ := b.post(t, b.client(t), "/ui/replay", url.Values{"key": {c.key}, "confirm": {"yes"}}, "Authorization", "Bearer "+c.token)
		if resp.StatusCode != http.StatusSeeOther {
			t.Errorf("replay with %q: %d, want 303", c.token, resp.StatusCode)
			continue
		}
		var actor string
		if err := b.pool.QueryRow(context.Background(), `SELECT actor FROM pubq.audit WHERE job_key = $1`, c.key).Scan(&actor); err != nil || actor != c.actor {
			t.Errorf("audit actor for %q = %q (%v), want %q", c.token, actor, err, c.actor)
		}
	}
	for _, part := range []string{"pass:word", "anonymous"} {
		if strings.Contains(b.logs.String(), part) {
			t.Errorf("part of a secret (%q) reached the log:\n%s", part, b.logs)
		}
	}
}
