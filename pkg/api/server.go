package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
)

// DefaultMaxBodyBytes is Config.MaxBodyBytes's default: room for a full batch (publish.MaxBatch jobs)
// of payloads averaging 16 KiB, while one job's payload is capped at job.MaxPayloadBytes anyway.
const DefaultMaxBodyBytes = 16 << 20

// MinTokenBytes is the shortest bearer token worth using: tokens are the only thing between the
// network and the queue. Shorter ones are accepted (local stacks use "dev-token"); the producer warns.
const MinTokenBytes = 16

// Config configures the API handler. Zero fields take the documented defaults.
type Config struct {
	// Tokens are the bearer tokens accepted on /v1/jobs (Authorization: Bearer <token>), non-empty and
	// without whitespace (use at least MinTokenBytes of randomness); compared in constant time.
	// Required unless Insecure.
	Tokens []string
	// Insecure turns authentication off, for local development only; it must be set explicitly and
	// cannot be combined with Tokens. Default false.
	Insecure bool
	// MaxBodyBytes caps a request body; a larger one is refused with 413. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Timeout bounds the database work of one request; past it the answer is 503. Default 10s.
	Timeout time.Duration
	// Ready reports whether the producer can serve, usually by pinging the database; /readyz answers
	// 503 while it returns an error. It is called with a 2s deadline. Default: always ready.
	Ready func(ctx context.Context) error
	// Logger receives one line per request that enqueued or failed on the server's side. Payloads and
	// tokens are never logged. Default slog.Default().
	Logger *slog.Logger
	// TracerProvider makes the HTTP server spans. Default otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// MeterProvider records otelhttp's request metrics. Default otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
	// ServerName ("host:port") names this server in the HTTP spans' and metrics' server.address and
	// server.port. Default "pubq-producer:8080". Without it they would come from each request's Host
	// header, which any client sets: a new metric series per made-up host, before authentication.
	ServerName string
}

func (c *Config) withDefaults() (Config, error) {
	out := Config{}
	if c != nil {
		out = *c
	}
	switch {
	case out.Insecure && len(out.Tokens) > 0:
		return out, errors.New("pubq: api: set Config.Tokens or Config.Insecure, not both")
	case !out.Insecure && len(out.Tokens) == 0:
		return out, errors.New("pubq: api: Config.Tokens is empty; set bearer tokens (or Insecure, for local development only)")
	case out.MaxBodyBytes < 0:
		return out, errors.New("pubq: api: Config.MaxBodyBytes must not be negative")
	case out.Timeout < 0:
		return out, errors.New("pubq: api: Config.Timeout must not be negative")
	}
	for i, t := range out.Tokens {
		if t == "" {
			return out, fmt.Errorf("pubq: api: Config.Tokens[%d] is empty", i)
		}
		if strings.ContainsAny(t, " \t\r\n") {
			return out, fmt.Errorf("pubq: api: Config.Tokens[%d] contains whitespace", i)
		}
	}
	if out.ServerName == "" {
		out.ServerName = "pubq-producer:8080"
	} else if _, port, err := net.SplitHostPort(out.ServerName); err != nil || port == "" {
		return out, fmt.Errorf("pubq: api: Config.ServerName %q is not host:port", out.ServerName)
	}
	if out.MaxBodyBytes == 0 {
		out.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if out.Timeout == 0 {
		out.Timeout = 10 * time.Second
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.TracerProvider == nil {
		out.TracerProvider = otel.GetTracerProvider()
	}
	if out.MeterProvider == nil {
		out.MeterProvider = otel.GetMeterProvider()
	}
	return out, nil
}

// enqueuer is what the handler needs of a *publish.Client; tests substitute database failures.
type enqueuer interface {
	Prepare(publish.Request) (*queue.Queue, error)
	EnqueueMany(context.Context, []publish.Request) ([]publish.Result, error)
}

type server struct {
	enq    enqueuer
	cfg    Config
	log    *slog.Logger
	tokens [][sha256.Size]byte
}

// New returns the API's handler, enqueueing through client. See the package documentation for the
// routes and their answers.
func New(client *publish.Client, cfg *Config) (http.Handler, error) {
	if client == nil {
		return nil, errors.New("pubq: api: a publish client is required")
	}
	return newHandler(client, cfg)
}

func newHandler(enq enqueuer, cfg *Config) (http.Handler, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &server{enq: enq, cfg: c, log: c.Logger}
	for _, t := range c.Tokens {
		s.tokens = append(s.tokens, sha256.Sum256([]byte(t)))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/jobs", s.jobs)
	mux.HandleFunc("/healthz", s.healthz)
	mux.HandleFunc("/readyz", s.readyz)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, newProblem(TypeNotFound, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, truncate(r.URL.Path, 128))))
	})
	return otelhttp.NewHandler(mux, "pubq-producer",
		otelhttp.WithServerName(c.ServerName),
		otelhttp.WithTracerProvider(c.TracerProvider),
		otelhttp.WithMeterProvider(c.MeterProvider),
		otelhttp.WithSpanNameFormatter(spanName),
		// Probes every few seconds would drown the jobs' traces.
		otelhttp.WithFilter(func(r *http.Request) bool { return r.URL.Path != "/healthz" && r.URL.Path != "/readyz" }),
	), nil
}

// spanName names server spans by route, never by a raw path (unbounded cardinality).
func spanName(_ string, r *http.Request) string {
	if r.URL.Path == "/v1/jobs" {
		return r.Method + " /v1/jobs"
	}
	return r.Method
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	if s.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.cfg.Ready(ctx); err != nil {
			// The error may name hosts; it goes to the log, not to the caller.
			s.log.WarnContext(ctx, "not ready", "error", err)
			w.Header().Set("Retry-After", "1")
			writeProblem(w, newProblem(TypeUnavailable, http.StatusServiceUnavailable, "not ready: the database is unreachable"))
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeProblem(w, newProblem(TypeMethod, http.StatusMethodNotAllowed,
		fmt.Sprintf("%s is not allowed on %s; use %s", truncate(r.Method, 16), r.URL.Path, strings.Join(methods, " or "))))
	return false
}

// authorized answers 401 itself when the request has no valid bearer token.
func (s *server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.Insecure {
		return true
	}
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	var detail, challenge string
	switch {
	case h == "":
		detail, challenge = "no bearer token: send Authorization: Bearer <token>", `Bearer realm="pubq"`
	case !strings.EqualFold(scheme, "Bearer") || tok == "":
		detail, challenge = "the Authorization header is not a bearer token", `Bearer realm="pubq", error="invalid_request"`
	case !s.tokenOK(tok):
		detail, challenge = "the bearer token is not valid", `Bearer realm="pubq", error="invalid_token"`
	default:
		return true
	}
	w.Header().Set("WWW-Authenticate", challenge)
	writeProblem(w, newProblem(TypeUnauthorized, http.StatusUnauthorized, detail))
	return false
}

// tokenOK compares digests, so neither a token's length nor which token matched shows in the timing.
func (s *server) tokenOK(tok string) bool {
	sum := sha256.Sum256([]byte(tok))
	ok := 0
	for i := range s.tokens {
		ok |= subtle.ConstantTimeCompare(sum[:], s.tokens[i][:])
	}
	return ok == 1
}

func (s *server) jobs(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) || !allow(w, r, http.MethodPost) {
		return
	}
	if p := checkContentType(r.Header.Get("Content-Type")); p != nil {
		w.Header().Set("Accept-Post", "application/json")
		s.refuse(w, r, p)
		return
	}
	if r.ContentLength > s.cfg.MaxBodyBytes {
		s.refuse(w, r, s.bodyTooLarge())
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.refuse(w, r, s.bodyTooLarge())
			return
		}
		s.refuse(w, r, newProblem(TypeMalformed, http.StatusBadRequest, "reading the body failed before its end"))
		return
	}
	keys := r.Header.Values("Idempotency-Key")
	if len(keys) > 1 {
		s.refuse(w, r, invalid("key", "more than one Idempotency-Key header"))
		return
	}
	headerKey := ""
	if len(keys) == 1 {
		headerKey = strings.TrimSpace(keys[0])
	}
	reqs, batch, p := decodeBody(data, headerKey)
	if p != nil {
		s.refuse(w, r, p)
		return
	}
	// Validate and route every job before touching the database: a refusal costs no transaction and
	// names the job at fault.
	for i, req := range reqs {
		if _, err := s.enq.Prepare(req); err != nil {
			p := s.problemFor(r.Context(), err, reqs)
			if errors.Is(err, publish.ErrUnknownKind) {
				p.Detail = fmt.Sprintf("no queue accepts kind %q; see the queue configuration", truncate(req.Kind, 64))
			}
			p.Index = nil
			if batch {
				p.at(i)
			}
			s.refuse(w, r, p)
			return
		}
	}

	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	defer cancel()
	res, err := s.enq.EnqueueMany(ctx, reqs)
	if err != nil {
		p := s.problemFor(ctx, err, reqs)
		if !batch {
			p.Index = nil
		}
		if p.Status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		s.refuse(w, r, p)
		return
	}
	fresh := 0
	for _, x := range res {
		if !x.Duplicate {
			fresh++
		}
	}
	status := http.StatusAccepted
	if fresh == 0 {
		status = http.StatusOK // nothing new: every job already existed
	}
	if !batch {
		x := res[0]
		attrs := append(telemetry.Job{Queue: x.Queue, Kind: x.Kind, Key: x.Key, ID: x.ID}.LogAttrs(),
			slog.Bool("duplicate", x.Duplicate), slog.String("state", x.State))
		s.log.LogAttrs(ctx, slog.LevelInfo, "job enqueued", attrs...)
		writeJSON(w, status, x)
		return
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "batch enqueued", slog.Int("jobs", len(res)), slog.Int("new", fresh),
		logKeys(len(res), func(i int) string { return res[i].Key }))
	writeJSON(w, status, batchResultJSON{Jobs: res})
}

// refuse answers p and logs the refusal at debug level (why a client keeps getting 400 is a common
// question); server-side failures are logged where they happen.
func (s *server) refuse(w http.ResponseWriter, r *http.Request, p *Problem) {
	if p.Status < 500 {
		attrs := []slog.Attr{slog.Int("status", p.Status), slog.String("type", p.Type)}
		if p.Field != "" {
			attrs = append(attrs, slog.String("field", p.Field))
		}
		if p.Index != nil {
			attrs = append(attrs, slog.Int("index", *p.Index))
		}
		s.log.LogAttrs(r.Context(), slog.LevelDebug, "request refused", attrs...)
	}
	writeProblem(w, p)
}

func (s *server) bodyTooLarge() *Problem {
	return newProblem(TypeTooLarge, http.StatusRequestEntityTooLarge,
		fmt.Sprintf("the body exceeds %d bytes; send fewer jobs per batch", s.cfg.MaxBodyBytes))
}

func checkContentType(ct string) *Problem {
	if ct == "" {
		return newProblem(TypeUnsupportedMedia, http.StatusUnsupportedMediaType, "no Content-Type; send application/json")
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return newProblem(TypeUnsupportedMedia, http.StatusUnsupportedMediaType,
			fmt.Sprintf("Content-Type %q is not application/json", truncate(ct, 64)))
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return newProblem(TypeUnsupportedMedia, http.StatusUnsupportedMediaType,
			fmt.Sprintf("charset %q is not utf-8", truncate(cs, 32)))
	}
	return nil
}

// problemFor maps an enqueue error to the problem the caller sees; reqs locate a conflicting key.
func (s *server) problemFor(ctx context.Context, err error, reqs []publish.Request) *Problem {
	indexOf := func(key string) *int {
		for i, r := range reqs {
			if r.Key == key {
				return &i
			}
		}
		return nil
	}
	var kc *store.KeyConflictError
	var de *job.DecodeError
	switch {
	case errors.As(err, &kc):
		p := newProblem(TypeKeyConflict, http.StatusConflict,
			fmt.Sprintf("key %q is already used by job %s with a different kind or payload", truncate(kc.Key, 64), kc.ExistingID))
		p.Field, p.JobID, p.Index = "key", kc.ExistingID, indexOf(kc.Key)
		return p
	case errors.Is(err, publish.ErrUnknownKind):
		p := newProblem(TypeUnknownKind, http.StatusUnprocessableEntity, strings.TrimPrefix(err.Error(), "pubq: "))
		p.Field = "kind"
		return p
	case errors.As(err, &de):
		return fromDecodeError(de)
	case errors.Is(err, publish.ErrTooMany):
		p := newProblem(TypeTooLarge, http.StatusRequestEntityTooLarge, fmt.Sprintf("at most %d jobs per batch", publish.MaxBatch))
		p.Field = "jobs"
		return p
	}
	// The line names the job of a single-job request (through the context, as the worker's lines do),
	// and the first keys of a batch.
	attrs := []slog.Attr{slog.Any("error", err), slog.Int("jobs", len(reqs))}
	if len(reqs) == 1 {
		ctx = telemetry.WithJob(ctx, telemetry.Job{Kind: reqs[0].Kind, Key: reqs[0].Key})
	} else if len(reqs) > 1 {
		attrs = append(attrs, logKeys(len(reqs), func(i int) string { return reqs[i].Key }))
	}
	if unavailable(err) {
		s.log.LogAttrs(ctx, slog.LevelWarn, "enqueue failed: database unavailable", attrs...)
		return newProblem(TypeUnavailable, http.StatusServiceUnavailable,
			"the job database is unavailable; retry with the same idempotency key")
	}
	s.log.LogAttrs(ctx, slog.LevelError, "enqueue failed", attrs...)
	return newProblem(TypeInternal, http.StatusInternalServerError, "the job could not be enqueued; see the producer's log")
}

// maxLogKeys is the most job keys one log line lists for a batch.
const maxLogKeys = 10

// logKeys is the job_keys attribute of a batch's log line: the first maxLogKeys of its n keys.
func logKeys(n int, key func(i int) string) slog.Attr {
	keys := make([]string, min(n, maxLogKeys))
	for i := range keys {
		keys[i] = key(i)
	}
	return slog.Any("job_keys", keys)
}

// unavailable reports whether an enqueue error is the database being out of reach, busy or too slow,
// so that a retry with the same key may succeed (503), rather than a fault that retrying repeats (500).
func unavailable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), // connection exception
			strings.HasPrefix(pe.Code, "40"),  // serialization failure, deadlock
			strings.HasPrefix(pe.Code, "53"),  // insufficient resources (too many connections, disk full)
			strings.HasPrefix(pe.Code, "57P"), // shutting down, cannot connect now
			pe.Code == "57014",                // statement timeout
			pe.Code == "55P03":                // lock not available
			return true
		}
		return false
	}
	// Not an error the server reported: dialing, the connection, the pool or the deadline failed.
	return true
}
