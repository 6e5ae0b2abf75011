package dashboard

import (
	"bytes"
	"context"
	"crypto/hmac"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pubq/pubq/pkg/inspect"
	"github.com/pubq/pubq/pkg/telemetry"
)

// Config configures the dashboard. Zero fields take the documented defaults.
type Config struct {
	// Tokens are the accepted credentials, typed in the login form or sent as "Authorization: Bearer".
	// An entry "name:secret" records actions in pubq.audit as "dashboard:name"; a bare "secret" as
	// "dashboard". Required: with no valid token every request is refused. Secrets need 16+ bytes. A
	// name is 1-64 of A-Z a-z 0-9 . _ -; the secret is everything after the first ':', so a bare
	// secret may not contain ':' (Validate refuses an entry whose text before it is not a name).
	Tokens []string
	// TraceURL links a trace id to a trace viewer. Default: JaegerTraceURL("http://127.0.0.1:16686");
	// in production use CloudTraceURL(project).
	TraceURL func(traceID string) string
	// BasePath is the path prefix the handler is mounted under, e.g. "/ui" for
	// mux.Handle("/ui/", dashboard.New(...)) — no http.StripPrefix needed. Default "" (the root).
	BasePath string
	// Window is the overview's default stats window. Default 1h.
	Window time.Duration
	// SessionTTL is how long a login lasts. Default 12h.
	SessionTTL time.Duration
	// Logger receives errors (never payloads or tokens). Default slog.Default().
	Logger *slog.Logger
	// Now is the clock for session expiry. Default time.Now.
	Now func() time.Time
}

// Validate reports a configuration the dashboard would refuse to serve with, naming the field.
func (c *Config) Validate() error {
	if len(c.Tokens) == 0 {
		return errors.New("pubq: dashboard: Tokens: at least one token is required")
	}
	for i, e := range c.Tokens {
		// The messages never quote the entry: it may be all secret.
		if name, _ := entryParts(e); name != "" && !tokenName.MatchString(name) {
			return fmt.Errorf("pubq: dashboard: Tokens[%d]: the text before the first ':' is not a name (1-64 of A-Z a-z 0-9 . _ -); a bare secret may not contain ':'", i)
		}
	}
	for i, t := range parseTokens(c.Tokens) {
		if len(t.secret) < minSecretBytes {
			return fmt.Errorf("pubq: dashboard: Tokens[%d]: the secret must be at least %d bytes", i, minSecretBytes)
		}
	}
	if c.BasePath != "" && (!strings.HasPrefix(c.BasePath, "/") || strings.HasSuffix(c.BasePath, "/")) {
		return fmt.Errorf("pubq: dashboard: BasePath %q must start with / and not end with one", c.BasePath)
	}
	if c.Window < 0 || c.SessionTTL < 0 {
		return errors.New("pubq: dashboard: Window and SessionTTL must not be negative")
	}
	return nil
}

// JaegerTraceURL links to a trace in the Jaeger UI at base (e.g. http://127.0.0.1:16686).
func JaegerTraceURL(base string) func(string) string {
	base = strings.TrimRight(base, "/")
	return func(id string) string { return base + "/trace/" + url.PathEscape(id) }
}

// CloudTraceURL links to a trace in Google Cloud Trace for project.
func CloudTraceURL(project string) func(string) string {
	return func(id string) string {
		return "https://console.cloud.google.com/traces/list?" + url.Values{"tid": {id}, "project": {project}}.Encode()
	}
}

//go:embed templates/*.html
var templateFS embed.FS

type handler struct {
	insp   *inspect.Inspector
	cfg    Config
	tokens []token
	err    error // configuration error: every request is refused
	pages  map[string]*template.Template
	mux    *http.ServeMux
	log    *slog.Logger
	cop    *http.CrossOriginProtection
}

// New returns the dashboard. It serves HTML only (no JavaScript needed); every page needs a login
// and every action a POST carrying the session's CSRF token.
func New(insp *inspect.Inspector, cfg *Config) http.Handler {
	h := &handler{insp: insp}
	if cfg != nil {
		h.cfg = *cfg
	}
	h.err = h.cfg.Validate()
	if insp == nil {
		h.err = errors.New("pubq: dashboard: an Inspector is required")
	}
	if h.cfg.TraceURL == nil {
		h.cfg.TraceURL = JaegerTraceURL("http://127.0.0.1:16686")
	}
	if h.cfg.Window == 0 {
		h.cfg.Window = time.Hour
	}
	if h.cfg.SessionTTL == 0 {
		h.cfg.SessionTTL = 12 * time.Hour
	}
	if h.cfg.Logger == nil {
		h.cfg.Logger = slog.Default()
	}
	if h.cfg.Now == nil {
		h.cfg.Now = time.Now
	}
	h.log = h.cfg.Logger
	if h.err == nil {
		h.tokens = parseTokens(h.cfg.Tokens)
	} else {
		h.log.Error("dashboard disabled", "error", h.err)
	}
	h.pages = h.parseTemplates()
	h.cop = http.NewCrossOriginProtection()
	h.cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusForbidden, "Cross-origin request refused.")
	}))

	m := http.NewServeMux()
	m.HandleFunc("GET /login", h.loginForm)
	m.HandleFunc("POST /login", h.login)
	m.HandleFunc("POST /logout", h.authed(h.logout))
	m.HandleFunc("GET /{$}", h.authed(h.overview))
	m.HandleFunc("GET /jobs", h.authed(h.jobs))
	m.HandleFunc("GET /dead", h.authed(h.dead))
	m.HandleFunc("GET /job", h.authed(h.job))
	m.HandleFunc("POST /replay", h.authed(h.action(inspect.ActionReplay)))
	m.HandleFunc("POST /retry", h.authed(h.action(inspect.ActionRetry)))
	m.HandleFunc("POST /cancel", h.authed(h.action(inspect.ActionCancel)))
	h.mux = m
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	// Pages show job keys and errors: keep them out of caches, frames and other sites' Referer.
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	if h.err != nil {
		http.Error(w, "pubq dashboard is not configured; see the server log", http.StatusServiceUnavailable)
		return
	}
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20) // forms are small; a bulk selection is at most 1000 keys
	}
	p := r.URL.Path
	if h.cfg.BasePath != "" {
		rest, ok := strings.CutPrefix(p, h.cfg.BasePath)
		if !ok || (rest != "" && rest[0] != '/') {
			http.NotFound(w, r)
			return
		}
		if rest == "" {
			http.Redirect(w, r, h.cfg.BasePath+"/", http.StatusMovedPermanently)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path, r2.URL.RawPath = rest, ""
		r = r2
	}
	h.cop.Handler(h.mux).ServeHTTP(w, r)
}

// path returns p under BasePath, for links and redirects.
func (h *handler) path(p string) string { return h.cfg.BasePath + p }

type ctxKey struct{}

func sessionOf(ctx context.Context) session {
	s, _ := ctx.Value(ctxKey{}).(session)
	return s
}

// authed lets authenticated requests through: a browser without a session is sent to the login page
// (GETs) or refused (401); POSTs from a cookie session must carry its CSRF token (else 403).
func (h *handler) authed(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok, bearer := h.authenticate(r)
		if !ok {
			if r.Method == http.MethodGet && !bearer {
				http.Redirect(w, r, h.path("/login?")+url.Values{"next": {h.path(r.URL.RequestURI())}}.Encode(), http.StatusSeeOther)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="pubq"`)
			h.fail(w, r, http.StatusUnauthorized, "Not logged in, or the token is not valid.")
			return
		}
		if r.Method == http.MethodPost {
			if err := r.ParseForm(); err != nil {
				h.fail(w, r, http.StatusBadRequest, "Malformed form.")
				return
			}
			if !s.bearer && !hmac.Equal([]byte(r.PostForm.Get(csrfField)), []byte(s.csrf)) {
				h.fail(w, r, http.StatusForbidden, "The form's security token is missing or stale. Reload the page and try again.")
				return
			}
		}
		next(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, s)))
	}
}

// safeNext accepts only paths inside the dashboard, so the login form cannot redirect elsewhere.
func (h *handler) safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(u.Path, h.path("/")) || strings.HasPrefix(u.Path, "//") {
		return h.path("/")
	}
	return u.RequestURI()
}

func (h *handler) loginForm(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, http.StatusOK, "login", map[string]any{"Next": h.safeNext(r.URL.Query().Get("next"))})
}

func (h *handler) login(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, http.StatusBadRequest, "Malformed form.")
		return
	}
	next := h.safeNext(r.PostForm.Get("next"))
	t, ok := h.checkToken(r.PostForm.Get("token"))
	if !ok {
		h.log.Warn("dashboard login refused", "remote", r.RemoteAddr)
		h.render(w, r, http.StatusUnauthorized, "login", map[string]any{"Next": next, "Error": "That token is not valid."})
		return
	}
	h.setSessionCookie(w, r, h.newSession(t), int(h.cfg.SessionTTL.Seconds()))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (h *handler) logout(w http.ResponseWriter, r *http.Request) {
	h.setSessionCookie(w, r, "", -1)
	http.Redirect(w, r, h.path("/login"), http.StatusSeeOther)
}

// overviewRow is one queue on the overview page.
type overviewRow struct {
	inspect.QueueStats
	PerMinute float64
}

func (h *handler) overview(w http.ResponseWriter, r *http.Request) {
	window := h.cfg.Window
	if v := r.URL.Query().Get("window"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > 31*24*time.Hour {
			h.fail(w, r, http.StatusBadRequest, "window must be a duration like 15m, 1h or 24h.")
			return
		}
		window = d
	}
	st, err := h.insp.Stats(r.Context(), window)
	if err != nil {
		h.internal(w, r, err)
		return
	}
	rows := make([]overviewRow, 0, len(st.Queues)+1)
	for _, q := range st.Queues {
		rows = append(rows, overviewRow{q, q.Throughput * 60})
	}
	tot := st.Total()
	h.render(w, r, http.StatusOK, "overview", map[string]any{
		"Stats": st, "Rows": rows, "Total": overviewRow{tot, tot.Throughput * 60}, "Window": window,
		"Windows": []string{"15m", "1h", "6h", "24h"}, "Refresh": true,
	})
}

// filterFrom reads a Filter from query or form values.
func (h *handler) filterFrom(v url.Values) (inspect.Filter, error) {
	now := time.Now()
	f := inspect.Filter{Queue: v.Get("queue"), Kind: v.Get("kind"), State: v.Get("state"), Cursor: v.Get("cursor")}
	var err error
	if f.Since, err = inspect.ParseTime(v.Get("since"), now); err != nil {
		return f, err
	}
	if f.Until, err = inspect.ParseTime(v.Get("until"), now); err != nil {
		return f, err
	}
	if l := v.Get("limit"); l != "" {
		if f.Limit, err = strconv.Atoi(l); err != nil {
			return f, fmt.Errorf("%w: limit %q", inspect.ErrInvalidFilter, l)
		}
	}
	return f, nil
}

func (h *handler) jobs(w http.ResponseWriter, r *http.Request) { h.list(w, r, false) }

func (h *handler) dead(w http.ResponseWriter, r *http.Request) { h.list(w, r, true) }

func (h *handler) list(w http.ResponseWriter, r *http.Request, dead bool) {
	q := r.URL.Query()
	if dead {
		q.Set("state", inspect.StateDead)
	}
	f, err := h.filterFrom(q)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	page, err := h.insp.List(r.Context(), f)
	if errors.Is(err, inspect.ErrInvalidFilter) {
		h.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		h.internal(w, r, err)
		return
	}
	next := ""
	if page.Next != "" {
		nq := r.URL.Query()
		nq.Set("cursor", page.Next)
		nq.Del("done")
		next = r.URL.Path + "?" + nq.Encode()
		next = h.path(next)
	}
	h.render(w, r, http.StatusOK, "jobs", map[string]any{
		"Dead": dead, "Page": page, "Next": next, "Q": q, "Queues": h.insp.Queues(), "States": append(inspect.States, inspect.StateStuck),
		"Done": doneMessage(r.URL.Query()), "Filtered": q.Get("queue") != "" || q.Get("kind") != "" || q.Get("since") != "" || q.Get("until") != "",
	})
}

func (h *handler) job(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	if key == "" {
		h.fail(w, r, http.StatusBadRequest, "Which job? Give its key.")
		return
	}
	withPayload := r.URL.Query().Get("payload") == "1"
	j, err := h.insp.Job(r.Context(), key, withPayload)
	if errors.Is(err, inspect.ErrNotFound) {
		h.fail(w, r, http.StatusNotFound, fmt.Sprintf("No job has the key %q (it never existed, or it was purged).", key))
		return
	}
	if err != nil {
		h.internal(w, r, err)
		return
	}
	var payload string
	if withPayload && j.Payload != nil {
		var b bytes.Buffer
		if err := jsonIndent(&b, j.Payload); err != nil {
			payload = string(j.Payload)
		} else {
			payload = b.String()
		}
	}
	h.render(w, r, http.StatusOK, "job", map[string]any{"Job": j, "Payload": payload, "WithPayload": withPayload,
		"Done": doneMessage(r.URL.Query())})
}

// doneMessage rebuilds the message of a finished action from the redirect's query: fixed texts and
// numbers only, so a crafted link cannot put words on the page.
func doneMessage(q url.Values) string {
	action := q.Get("done")
	changed, err1 := strconv.Atoi(q.Get("changed"))
	matched, err2 := strconv.Atoi(q.Get("matched"))
	if err1 != nil || err2 != nil {
		return ""
	}
	r := inspect.ActionResult{Action: action, Changed: changed, Matched: matched}
	switch action {
	case inspect.ActionReplay, inspect.ActionRetry, inspect.ActionCancel:
		s := r.Summary()
		return strings.ToUpper(s[:1]) + s[1:] + "."
	}
	return ""
}

// action handles the replay, retry and cancel forms: without confirm=yes it shows what would happen
// (a dry run where there is one) and asks for confirmation; with it, it acts and redirects (POST,
// redirect, GET), so reloading the result page never repeats the action.
func (h *handler) action(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		s := sessionOf(ctx)
		form := r.PostForm
		// A per-row button sends "key"; the bulk form sends the ticked "sel" boxes or scope=filter.
		var keys []string
		byFilter := false
		switch {
		case form.Get("key") != "":
			keys = []string{form.Get("key")}
		case name == inspect.ActionReplay && form.Get("scope") == "filter":
			byFilter = true
		default:
			keys = form["sel"]
		}
		if len(keys) == 0 && !byFilter {
			h.fail(w, r, http.StatusBadRequest, "Nothing selected.")
			return
		}
		var f inspect.Filter
		if len(keys) > 0 {
			f.Keys = keys
		} else {
			var err error
			if f, err = h.filterFrom(form); err != nil {
				h.fail(w, r, http.StatusBadRequest, err.Error())
				return
			}
			f.State, f.Cursor, f.Limit = "", "", 0
			f.All = true // the confirmation page shows exactly how many jobs that is
		}
		confirmed := form.Get("confirm") == "yes"
		var res *inspect.ActionResult
		var err error
		switch {
		case name == inspect.ActionReplay:
			res, err = h.insp.Replay(ctx, s.actor, f, !confirmed)
		case !confirmed:
			// Retry and cancel have no dry run: the confirmation shows the job as it is.
			h.confirmSingle(w, r, name, keys)
			return
		case len(keys) != 1:
			h.fail(w, r, http.StatusBadRequest, "Retry and cancel act on one job at a time.")
			return
		case name == inspect.ActionRetry:
			res, err = h.insp.RetryNow(ctx, s.actor, keys[0])
		default:
			res, err = h.insp.CancelRetry(ctx, s.actor, keys[0])
		}
		switch {
		case errors.Is(err, inspect.ErrNotFound):
			h.fail(w, r, http.StatusNotFound, err.Error())
			return
		case errors.Is(err, inspect.ErrInvalidFilter), errors.Is(err, inspect.ErrUnboundedFilter):
			h.fail(w, r, http.StatusBadRequest, err.Error())
			return
		case err != nil:
			h.internal(w, r, err)
			return
		}
		if !confirmed {
			if byFilter {
				// The preview pins its window: "since 2h" and an open end, worked out again at confirm
				// time, would replay jobs that died after the preview and that it never showed. The end
				// is the one the preview used, by the database's clock.
				pinned := url.Values{}
				for k, vs := range form {
					pinned[k] = vs
				}
				if !f.Since.IsZero() {
					pinned.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
				}
				if !res.Until.IsZero() {
					pinned.Set("until", res.Until.UTC().Format(time.RFC3339Nano))
				}
				form = pinned
			}
			h.render(w, r, http.StatusOK, "confirm", map[string]any{"Action": name, "Result": res, "Form": form, "Keys": keys})
			return
		}
		lctx := ctx
		if len(keys) == 1 {
			// A single-job action names its job (queue and kind too when the result has them).
			j := telemetry.Job{Key: keys[0]}
			if len(res.Jobs) == 1 && res.Jobs[0].Key == keys[0] {
				j.Queue, j.Kind = res.Jobs[0].Queue, res.Jobs[0].Kind
			}
			lctx = telemetry.WithJob(ctx, j)
		}
		h.log.InfoContext(lctx, "dashboard action", "action", name, "actor", s.actor, "matched", res.Matched, "changed", res.Changed)
		done := url.Values{"done": {name}, "changed": {strconv.Itoa(res.Changed)}, "matched": {strconv.Itoa(res.Matched)}}
		if len(keys) == 1 {
			done.Set("key", keys[0])
			http.Redirect(w, r, h.path("/job?")+done.Encode(), http.StatusSeeOther)
			return
		}
		for _, k := range []string{"queue", "kind", "since", "until"} {
			if v := form.Get(k); v != "" {
				done.Set(k, v)
			}
		}
		http.Redirect(w, r, h.path("/dead?")+done.Encode(), http.StatusSeeOther)
	}
}

func (h *handler) confirmSingle(w http.ResponseWriter, r *http.Request, name string, keys []string) {
	if len(keys) != 1 {
		h.fail(w, r, http.StatusBadRequest, "Retry and cancel act on one job at a time.")
		return
	}
	j, err := h.insp.Job(r.Context(), keys[0], false)
	if errors.Is(err, inspect.ErrNotFound) {
		h.fail(w, r, http.StatusNotFound, err.Error())
		return
	}
	if err != nil {
		h.internal(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "confirm", map[string]any{"Action": name, "Job": j, "Form": r.PostForm, "Keys": keys})
}

func (h *handler) internal(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the browser went away
	}
	h.log.Error("dashboard request failed", "path", r.URL.Path, "error", err)
	h.fail(w, r, http.StatusInternalServerError, "Something went wrong reading or changing the jobs; the server log has the details.")
}

func (h *handler) fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	h.render(w, r, code, "error", map[string]any{"Code": code, "Status": http.StatusText(code), "Message": msg})
}

// render executes a page into a buffer first, so a template error never sends half a page.
func (h *handler) render(w http.ResponseWriter, r *http.Request, code int, page string, data map[string]any) {
	t, ok := h.pages[page]
	if !ok {
		http.Error(w, "unknown page "+page, http.StatusInternalServerError)
		return
	}
	s := sessionOf(r.Context())
	data["CSRF"] = s.csrf
	data["Actor"] = s.actor
	data["Base"] = h.cfg.BasePath
	data["Nav"] = page
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, "layout", data); err != nil {
		h.log.Error("dashboard template failed", "page", page, "error", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}
