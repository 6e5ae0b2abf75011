package telemetry

import (
	"context"
	"io"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// LoggerOptions configures NewLogger.
type LoggerOptions struct {
	// Level is the minimum level logged. Default: slog.LevelInfo (the zero value).
	Level slog.Level
	// GCPProject switches to Cloud Logging's structured format when set: "severity" instead of
	// "level", "message" instead of "msg", and the logging.googleapis.com/trace, spanId and
	// trace_sampled fields that link a log line to its trace in Cloud Trace. Default: "" (plain JSON).
	GCPProject string
}

// Log keys added from the context.
const (
	LogKeyTraceID = "trace_id"
	LogKeySpanID  = "span_id"

	gcpTraceKey   = "logging.googleapis.com/trace"
	gcpSpanKey    = "logging.googleapis.com/spanId"
	gcpSampledKey = "logging.googleapis.com/trace_sampled"
)

// NewLogger returns a JSON slog.Logger writing to w. Every record logged with a context (InfoContext,
// ErrorContext, …) carries trace_id and span_id of the span in that context, and the attributes added
// to the context with WithJob or WithLogAttrs, at the top level whatever groups the logger has.
// Attributes whose key is sensitive (see Sensitive) are dropped, as is everything inside a group with
// such a name, so a payload or a token never reaches the log.
func NewLogger(w io.Writer, opts LoggerOptions) *slog.Logger {
	gcp := opts.GCPProject != ""
	jh := slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: opts.Level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if gcp && len(groups) == 0 {
				switch a.Key {
				case slog.LevelKey:
					if l, ok := a.Value.Any().(slog.Level); ok {
						return slog.String("severity", gcpSeverity(l))
					}
				case slog.MessageKey:
					return slog.Attr{Key: "message", Value: a.Value}
				}
			}
			return a
		},
	})
	return slog.New(&handler{root: jh, leaf: jh, project: opts.GCPProject})
}

// gcpSeverity maps slog levels to Cloud Logging's LogSeverity names.
func gcpSeverity(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "DEBUG"
	case l < slog.LevelWarn:
		return "INFO"
	case l < slog.LevelError:
		return "WARNING"
	case l < slog.LevelError+4:
		return "ERROR"
	default:
		return "CRITICAL"
	}
}

// sensitiveKeys are dropped from logs wherever they appear (compared in lower case, on the last
// dotted segment so http.request.header.authorization matches too).
var sensitiveKeys = map[string]bool{
	"payload": true, "token": true, "authorization": true, "password": true, "passwd": true,
	"secret": true, "cookie": true, "set-cookie": true, "api_key": true, "apikey": true,
}

// Sensitive reports whether an attribute with this key must never be logged: payload, token,
// authorization, password, secret, cookie, api_key, and any key ending in _token, -token, _secret
// or _password. Case does not matter; for a dotted key the last segment counts.
func Sensitive(key string) bool {
	k := strings.ToLower(key)
	if i := strings.LastIndexByte(k, '.'); i >= 0 {
		k = k[i+1:]
	}
	if sensitiveKeys[k] {
		return true
	}
	for _, suffix := range [...]string{"_token", "-token", "_secret", "_password"} {
		if strings.HasSuffix(k, suffix) {
			return true
		}
	}
	return false
}

type logAttrsKey struct{}

// WithLogAttrs returns a copy of ctx whose log records (from a NewLogger logger) carry attrs. An
// attribute replaces an earlier one with the same key, so updating a value (say the attempt) does not
// duplicate it.
func WithLogAttrs(ctx context.Context, attrs ...slog.Attr) context.Context {
	if len(attrs) == 0 {
		return ctx
	}
	attrs, _ = cleanAttrs(attrs)
	prev, _ := ctx.Value(logAttrsKey{}).([]slog.Attr)
	merged := make([]slog.Attr, 0, len(prev)+len(attrs))
	for _, p := range prev {
		replaced := false
		for _, a := range attrs {
			if a.Key == p.Key {
				replaced = true
				break
			}
		}
		if !replaced {
			merged = append(merged, p)
		}
	}
	merged = append(merged, attrs...)
	return context.WithValue(ctx, logAttrsKey{}, merged)
}

// WithJob returns a copy of ctx whose log records carry the job's queue, kind, key, id and attempt
// (job_queue, job_kind, job_key, job_id, job_attempt). A worker calls it once per delivery, before
// running the handler, so every line the handler logs with its ctx names the job.
//
// The attributes are built only when a line is logged: a worker runs many jobs that log nothing.
func WithJob(ctx context.Context, j Job) context.Context {
	return context.WithValue(ctx, jobKey{}, &j)
}

type jobKey struct{}

// LogAttrsFromContext returns the attributes added with WithLogAttrs and WithJob (the job's first;
// an attribute added with WithLogAttrs under the same key wins).
func LogAttrsFromContext(ctx context.Context) []slog.Attr {
	attrs, _ := ctx.Value(logAttrsKey{}).([]slog.Attr)
	j, ok := ctx.Value(jobKey{}).(*Job)
	if !ok {
		return attrs
	}
	out := make([]slog.Attr, 0, len(attrs)+5)
	for _, ja := range j.LogAttrs() {
		overridden := false
		for _, a := range attrs {
			if a.Key == ja.Key {
				overridden = true
				break
			}
		}
		if !overridden {
			out = append(out, ja)
		}
	}
	return append(out, attrs...)
}

// handler adds the context's trace and job attributes at the top level of each record, and drops
// sensitive attributes. slog adds handler-side attributes inside the currently open group, so while a
// group is open the handler keeps the groups and attrs given after it (ops) and replays them on top of
// the context attributes.
//
// Redaction happens here rather than in ReplaceAttr: slog's JSON handler writes invalid JSON when
// ReplaceAttr empties a group, and ReplaceAttr never sees a group's own key.
type handler struct {
	root    slog.Handler // the JSON handler with every WithAttrs made before the first WithGroup
	ops     []handlerOp  // WithGroup/WithAttrs calls since the first WithGroup
	leaf    slog.Handler // root with ops applied
	project string
	dropAll bool // inside WithGroup(sensitive name): every attribute from here on is dropped
}

type handlerOp struct {
	group string
	attrs []slog.Attr
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.leaf.Enabled(ctx, l) }

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if h.dropAll {
		return h
	}
	attrs, _ = cleanAttrs(attrs)
	if len(attrs) == 0 {
		return h
	}
	c := *h
	if len(h.ops) == 0 {
		c.root = h.root.WithAttrs(attrs)
		c.leaf = c.root
		return &c
	}
	c.ops = append(h.ops[:len(h.ops):len(h.ops)], handlerOp{attrs: attrs})
	c.leaf = h.leaf.WithAttrs(attrs)
	return &c
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" || h.dropAll {
		return h
	}
	c := *h
	if Sensitive(name) {
		c.dropAll = true
		return &c
	}
	c.ops = append(h.ops[:len(h.ops):len(h.ops)], handlerOp{group: name})
	c.leaf = h.leaf.WithGroup(name)
	return &c
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	r = h.redact(r)
	extra := h.contextAttrs(ctx)
	if len(extra) == 0 {
		return h.leaf.Handle(ctx, r)
	}
	if len(h.ops) == 0 {
		r = r.Clone()
		r.AddAttrs(extra...)
		return h.leaf.Handle(ctx, r)
	}
	hh := h.root.WithAttrs(extra)
	for _, op := range h.ops {
		if op.group != "" {
			hh = hh.WithGroup(op.group)
		} else {
			hh = hh.WithAttrs(op.attrs)
		}
	}
	return hh.Handle(ctx, r)
}

// redact returns r without sensitive attributes, or r itself when it has none (the common case costs
// one pass and no allocation).
func (h *handler) redact(r slog.Record) slog.Record {
	if r.NumAttrs() == 0 {
		return r
	}
	dirty := h.dropAll
	if !dirty {
		r.Attrs(func(a slog.Attr) bool {
			k := a.Value.Kind()
			dirty = Sensitive(a.Key) || k == slog.KindGroup || k == slog.KindLogValuer
			return !dirty
		})
	}
	if !dirty {
		return r
	}
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	if h.dropAll {
		return nr
	}
	attrs := make([]slog.Attr, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a); return true })
	attrs, _ = cleanAttrs(attrs)
	nr.AddAttrs(attrs...)
	return nr
}

// cleanAttrs drops sensitive attributes, recursively inside groups, and groups left empty. It returns
// attrs itself, and false, when nothing had to change.
func cleanAttrs(attrs []slog.Attr) ([]slog.Attr, bool) {
	var out []slog.Attr
	for i, a := range attrs {
		c, keep, changed := cleanAttr(a)
		if changed && out == nil {
			out = append(make([]slog.Attr, 0, len(attrs)), attrs[:i]...)
		}
		if out != nil && keep {
			out = append(out, c)
		}
	}
	if out == nil {
		return attrs, false
	}
	return out, true
}

func cleanAttr(a slog.Attr) (c slog.Attr, keep, changed bool) {
	if Sensitive(a.Key) {
		return a, false, true
	}
	resolved := a.Value.Kind() == slog.KindLogValuer
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		members, ch := cleanAttrs(v.Group())
		if len(members) == 0 {
			return a, false, true
		}
		if ch || resolved {
			return slog.Attr{Key: a.Key, Value: slog.GroupValue(members...)}, true, true
		}
		return a, true, false
	}
	if resolved {
		return slog.Attr{Key: a.Key, Value: v}, true, true
	}
	return a, true, false
}

func (h *handler) contextAttrs(ctx context.Context) []slog.Attr {
	if ctx == nil {
		return nil
	}
	job := LogAttrsFromContext(ctx)
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return job
	}
	attrs := make([]slog.Attr, 0, 5+len(job))
	tid, sid := sc.TraceID().String(), sc.SpanID().String()
	attrs = append(attrs, slog.String(LogKeyTraceID, tid), slog.String(LogKeySpanID, sid))
	if h.project != "" {
		attrs = append(attrs,
			slog.String(gcpTraceKey, "projects/"+h.project+"/traces/"+tid),
			slog.String(gcpSpanKey, sid),
			slog.Bool(gcpSampledKey, sc.IsSampled()))
	}
	return append(attrs, job...)
}
