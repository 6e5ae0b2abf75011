package traceview

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultAttributes are the span attributes Render prints, in this order.
var DefaultAttributes = []string{
	attrJobKey, attrJobKind, attrJobAttempt, attrJobQueue,
	"messaging.message.id", "db.statement", "db.query.text",
}

// shortNames are the labels Render prints for well-known attributes.
var shortNames = map[string]string{
	attrJobKey: "key", attrJobKind: "kind", attrJobAttempt: "attempt", attrJobQueue: "queue", attrJobID: "id",
	"messaging.message.id": "msg", "db.statement": "db", "db.query.text": "db",
}

// RenderOptions configures Render.
type RenderOptions struct {
	// BarWidth is the width of the timeline bar in columns. Default: 40.
	BarWidth int
	// MaxValueLen cuts attribute values and error messages to this many characters. Default: 48.
	MaxValueLen int
	// MaxNameWidth caps the tree-and-name column. Default: 56.
	MaxNameWidth int
	// Attributes are the span attributes printed after the status, in order; a value equal to the
	// nearest printed ancestor's is not repeated. Default: DefaultAttributes.
	Attributes []string
	// Location is the time zone of the trace start times. Default: UTC.
	Location *time.Location
}

func (o RenderOptions) withDefaults() RenderOptions {
	if o.BarWidth <= 0 {
		o.BarWidth = 40
	}
	if o.MaxValueLen <= 0 {
		o.MaxValueLen = 48
	}
	if o.MaxNameWidth <= 0 {
		o.MaxNameWidth = 56
	}
	if o.Attributes == nil {
		o.Attributes = DefaultAttributes
	}
	if o.Location == nil {
		o.Location = time.UTC
	}
	return o
}

// Render prints traces as indented waterfalls, in start order: per trace a header (id, start, duration,
// spans, errors, services), a time ruler, then one line per span — the span tree by parent with
// children in start order, service, duration, a bar placed on the trace's timeline, ERROR and the
// message for failed spans, and key attributes — and last the links between traces (a retry's trace
// links to the attempt before it).
func Render(w io.Writer, traces []*Trace, opts RenderOptions) error {
	opts = opts.withDefaults()
	sorted := append([]*Trace(nil), traces...)
	sortTraces(sorted)
	index := map[string]int{} // trace id → 1-based position
	for i, t := range sorted {
		index[t.TraceID] = i + 1
	}
	bw := bufio.NewWriter(w)
	r := renderer{w: bw, opts: opts, traces: sorted, index: index}
	for i, t := range sorted {
		if i > 0 {
			r.printf("\n")
		}
		r.trace(t)
	}
	return bw.Flush()
}

type renderer struct {
	w      *bufio.Writer
	opts   RenderOptions
	traces []*Trace
	index  map[string]int
}

func (r *renderer) printf(format string, args ...any) { fmt.Fprintf(r.w, format, args...) }

// row is one span line before padding.
type row struct {
	span  Span
	name  string // tree prefix + name (+ missing-parent note)
	attrs string
}

func (r *renderer) trace(t *Trace) {
	n := r.index[t.TraceID]
	start := t.Start()
	errs := 0
	for _, s := range t.Spans {
		if s.Error {
			errs++
		}
	}
	r.printf("trace %d/%d  %s", n, len(r.traces), t.TraceID)
	if len(t.Spans) == 0 {
		r.printf("  (no spans)\n")
		return
	}
	r.printf("  %s  %s  %d spans", start.In(r.opts.Location).Format("2006-01-02 15:04:05.000 MST"),
		formatDuration(t.Duration()), len(t.Spans))
	if t.Omitted > 0 {
		r.printf(" (%d others not about this job)", t.Omitted)
	}
	if errs > 0 {
		noun := "errors"
		if errs == 1 {
			noun = "error"
		}
		r.printf("  %d %s", errs, noun)
	}
	if n > 1 {
		r.printf("  (+%s after trace 1)", formatDuration(start.Sub(r.traces[0].Start())))
	}
	r.printf("\n  services: %s\n", strings.Join(t.Services(), ", "))
	for _, warn := range t.Warnings {
		r.printf("  warning: %s\n", warn)
	}

	rows := r.rows(t)
	nameW, svcW := 0, 0
	for _, row := range rows {
		nameW = max(nameW, utf8.RuneCountInString(row.name))
		svcW = max(svcW, utf8.RuneCountInString(row.span.Service))
	}
	nameW = min(nameW, r.opts.MaxNameWidth)
	const durW = 9

	// Ruler: 0 at the bar's left edge, the trace's length at its right edge.
	dur := t.Duration() // scans every span: once per trace, not per row
	total := formatDuration(dur)
	ruler := "0" + strings.Repeat(" ", max(1, r.opts.BarWidth-1-len(total))) + total
	r.printf("  %s  %s  %s  %s\n", pad("", nameW), pad("", svcW), pad("", durW), " "+ruler)

	for _, row := range rows {
		s := row.span
		line := fmt.Sprintf("  %s  %s  %s  |%s|", pad(row.name, nameW), pad(s.Service, svcW),
			padLeft(formatDuration(s.Duration), durW), bar(s, start, dur, r.opts.BarWidth))
		if s.Error {
			line += "  ERROR"
			if s.Status != "" {
				line += " " + strconv.Quote(truncate(s.Status, r.opts.MaxValueLen))
			}
		}
		if row.attrs != "" {
			line += "  " + row.attrs
		}
		r.printf("%s\n", line)
	}
	r.links(t)
}

// rows walks the span tree depth first, children by start time.
func (r *renderer) rows(t *Trace) []row {
	byID := make(map[string]int, len(t.Spans))
	for i, s := range t.Spans {
		byID[s.SpanID] = i
	}
	children := map[string][]Span{}
	var roots []Span
	for _, s := range t.Spans {
		if _, ok := byID[s.ParentSpanID]; ok && s.ParentSpanID != "" && s.ParentSpanID != s.SpanID {
			children[s.ParentSpanID] = append(children[s.ParentSpanID], s)
		} else {
			roots = append(roots, s)
		}
	}
	sortSpans(roots)
	for _, c := range children {
		sortSpans(c)
	}
	var out []row
	visited := map[string]bool{}
	var walk func(s Span, prefix, connector string, inherited map[string]string)
	walk = func(s Span, prefix, connector string, inherited map[string]string) {
		if visited[s.SpanID] {
			return
		}
		visited[s.SpanID] = true
		name := prefix + connector + s.Name
		if s.ParentSpanID != "" {
			if _, ok := byID[s.ParentSpanID]; !ok {
				name += " [parent " + s.ParentSpanID + " missing]"
			}
		}
		attrs, shown := r.attrs(s, inherited)
		out = append(out, row{span: s, name: name, attrs: attrs})
		kids := children[s.SpanID]
		childPrefix := prefix
		switch connector {
		case "├─ ":
			childPrefix += "│  "
		case "└─ ":
			childPrefix += "   "
		}
		for i, c := range kids {
			conn := "├─ "
			if i == len(kids)-1 {
				conn = "└─ "
			}
			walk(c, childPrefix, conn, shown)
		}
	}
	for _, s := range roots {
		walk(s, "", "", nil)
	}
	// Spans only reachable through a parent cycle are still printed, as roots.
	for _, s := range t.Spans {
		if !visited[s.SpanID] {
			walk(s, "", "", nil)
		}
	}
	return out
}

// attrs formats the configured attributes of s, leaving out values equal to the ones inherited from
// the nearest ancestors, and returns what its children inherit.
func (r *renderer) attrs(s Span, inherited map[string]string) (string, map[string]string) {
	shown := make(map[string]string, len(inherited)+len(r.opts.Attributes))
	for k, v := range inherited {
		shown[k] = v
	}
	var parts []string
	for _, k := range r.opts.Attributes {
		v, ok := s.Attributes[k]
		if !ok {
			continue
		}
		label := k
		if short, ok := shortNames[k]; ok {
			label = short
		}
		if prev, ok := inherited[label]; ok && prev == v {
			continue
		}
		shown[label] = v
		parts = append(parts, label+"="+formatValue(v, r.opts.MaxValueLen))
	}
	if len(s.Events) > 0 {
		names := make([]string, 0, len(s.Events))
		for _, e := range s.Events {
			names = append(names, e.Name)
		}
		parts = append(parts, "events="+formatValue(strings.Join(names, ","), r.opts.MaxValueLen))
	}
	return strings.Join(parts, " "), shown
}

// maxHiddenLinks: a span with more links than this (a batch serving many messages) lists only its
// links to spans shown, and counts the others; one with fewer lists them all.
const maxHiddenLinks = 3

// shown reports whether the span is printed: its trace is among those rendered and has it (FetchJob
// leaves other jobs' spans out of a trace).
func (r *renderer) shown(traceID, spanID string) bool {
	n, ok := r.index[traceID]
	if !ok {
		return false
	}
	_, ok = r.traces[n-1].Span(spanID)
	return ok
}

func (r *renderer) links(t *Trace) {
	describe := func(traceID, spanID string) string {
		n, ok := r.index[traceID]
		if !ok {
			return fmt.Sprintf("trace %s span %s (not shown)", traceID, spanID)
		}
		target := r.traces[n-1]
		if s, ok := target.Span(spanID); ok {
			return fmt.Sprintf("trace %d/%d span %s %q", n, len(r.traces), spanID, s.Name)
		}
		if target.Omitted > 0 {
			return fmt.Sprintf("trace %d/%d span %s (left out: not about this job)", n, len(r.traces), spanID)
		}
		return fmt.Sprintf("trace %d/%d span %s (span not in trace)", n, len(r.traces), spanID)
	}
	spans := append([]Span(nil), t.Spans...)
	sortSpans(spans)
	for _, s := range spans {
		// A round trip links to every job it carried: list those shown, count the rest.
		hidden := 0
		for _, l := range s.Links {
			if !r.shown(l.TraceID, l.SpanID) && len(s.Links) > maxHiddenLinks {
				hidden++
				continue
			}
			r.printf("  link: %q %s -> %s\n", s.Name, s.SpanID, describe(l.TraceID, l.SpanID))
		}
		if hidden > 0 {
			r.printf("  link: %q %s -> %d more spans not shown\n", s.Name, s.SpanID, hidden)
		}
	}
	// Links into this trace from the other traces shown.
	for _, other := range r.traces {
		if other == t {
			continue
		}
		ospans := append([]Span(nil), other.Spans...)
		sortSpans(ospans)
		for _, s := range ospans {
			for _, l := range s.Links {
				if l.TraceID != t.TraceID {
					continue
				}
				target := "span " + l.SpanID
				ts, ok := t.Span(l.SpanID)
				if ok {
					target = fmt.Sprintf("%q %s", ts.Name, l.SpanID)
				} else if t.Omitted > 0 {
					continue // to another job's span, left out of this trace
				}
				r.printf("  linked from: %s <- %s\n", target, describe(other.TraceID, s.SpanID))
			}
		}
	}
}

func sortSpans(ss []Span) {
	sort.SliceStable(ss, func(i, j int) bool {
		if !ss[i].Start.Equal(ss[j].Start) {
			return ss[i].Start.Before(ss[j].Start)
		}
		if ss[i].Name != ss[j].Name {
			return ss[i].Name < ss[j].Name
		}
		return ss[i].SpanID < ss[j].SpanID
	})
}

// bar draws s on a width-column timeline of a trace starting at start and lasting total; every span
// gets at least one cell.
func bar(s Span, start time.Time, total time.Duration, width int) string {
	if total <= 0 {
		return strings.Repeat("█", width)
	}
	scale := float64(width) / float64(total)
	from := int(math.Floor(float64(s.Start.Sub(start)) * scale))
	to := int(math.Ceil(float64(s.End().Sub(start)) * scale))
	from = min(max(from, 0), width-1)
	to = min(max(to, from+1), width)
	return strings.Repeat(" ", from) + strings.Repeat("█", to-from) + strings.Repeat(" ", width-to)
}

// formatDuration prints d compactly with a fixed precision per range, so output is stable.
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return strconv.FormatInt(d.Microseconds(), 10) + "µs"
	case d < time.Second:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + "ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
	default:
		return d.Round(time.Second).String()
	}
}

// formatValue truncates v and quotes it when it has spaces, quotes or nothing at all.
func formatValue(v string, n int) string {
	v = truncate(v, n)
	if v == "" || strings.ContainsAny(v, " \t\n\"=") {
		return strconv.Quote(v)
	}
	return v
}

// truncate puts s on one line (statements and messages may span several) and cuts it to n runes.
func truncate(s string, n int) string {
	return cut(strings.Join(strings.Fields(s), " "), n)
}

// cut shortens s to n runes, the last one an ellipsis.
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n <= 1 {
		return "…"
	}
	rs := []rune(s)
	return string(rs[:n-1]) + "…"
}

func pad(s string, n int) string {
	c := utf8.RuneCountInString(s)
	if c > n {
		return cut(s, n)
	}
	return s + strings.Repeat(" ", n-c)
}

func padLeft(s string, n int) string {
	c := utf8.RuneCountInString(s)
	if c >= n {
		return s
	}
	return strings.Repeat(" ", n-c) + s
}
