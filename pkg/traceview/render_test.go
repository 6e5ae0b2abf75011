package traceview

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func loadFixture(t *testing.T, name string) []*Trace {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	traces, err := DecodeJaeger(f)
	if err != nil {
		t.Fatal(err)
	}
	return traces
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (go test -update rewrites it; review the diff):\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

func TestRenderGolden(t *testing.T) {
	traces := loadFixture(t, "job_retry.json")
	var buf bytes.Buffer
	if err := Render(&buf, traces, RenderOptions{}); err != nil {
		t.Fatal(err)
	}
	golden(t, "job_retry.golden", buf.Bytes())
}

// TestRenderStructure checks the properties the golden file shows, so a careless -update cannot bless
// a broken rendering.
func TestRenderStructure(t *testing.T) {
	traces := loadFixture(t, "job_retry.json")
	var buf bytes.Buffer
	if err := Render(&buf, traces, RenderOptions{BarWidth: 20}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	lines := strings.Split(out, "\n")
	find := func(substr string) (int, string) {
		for i, l := range lines {
			if strings.Contains(l, substr) {
				return i, l
			}
		}
		t.Fatalf("no line contains %q:\n%s", substr, out)
		return -1, ""
	}

	// Traces in start order (the fixture lists them out of order), with their offsets.
	header := func(prefix string) (int, string) {
		for i, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return i, l
			}
		}
		t.Fatalf("no header %q:\n%s", prefix, out)
		return -1, ""
	}
	i1, h1 := header("trace 1/3 ")
	i2, h2 := header("trace 2/3 ")
	i3, h3 := header("trace 3/3 ")
	if !(i1 < i2 && i2 < i3) || !strings.Contains(h1, "4bf92f3577b34da6a3ce929d0e0e4736") ||
		!strings.Contains(h2, "a3c1e5f7092b4d6e8f1a2b3c4d5e6f70") || !strings.Contains(h3, "0af7651916cd43dd8448eb211c80319c") {
		t.Errorf("trace headers out of order:\n%s\n%s\n%s", h1, h2, h3)
	}
	if !strings.Contains(h1, "2026-11-18 11:06:40.000 UTC") || !strings.Contains(h1, "183.0ms") ||
		!strings.Contains(h1, "6 spans") || !strings.Contains(h1, "2 errors") {
		t.Errorf("trace 1 header = %q", h1)
	}
	if !strings.Contains(h3, "(+4.30s after trace 1)") || strings.Contains(h3, "error") {
		t.Errorf("trace 3 header = %q", h3)
	}

	// The tree: children under their parent, in start order, with connectors.
	iRoot, root := find("POST /v1/jobs")
	iCreate, create := find("└─ pubq-critical create")
	iInsert, insert := find("   ├─ INSERT pubq_outbox")
	iProc, proc := find("   └─ pubq-critical-worker process")
	iSend, send := find("      ├─ email.send")
	if !(iRoot < iCreate && iCreate < iInsert && iInsert < iProc && iProc < iSend) {
		t.Errorf("tree order wrong:\n%s", out)
	}
	if !strings.Contains(root, "pubq-producer") || !strings.Contains(proc, "pubq-worker") {
		t.Errorf("service column missing:\n%s\n%s", root, proc)
	}
	// ERROR with the message on failed spans only.
	if !strings.Contains(proc, `ERROR "handler: smtp: 421 try again later"`) || !strings.Contains(send, "ERROR") {
		t.Errorf("failed spans not marked:\n%s\n%s", proc, send)
	}
	if strings.Contains(create, "ERROR") || strings.Contains(insert, "ERROR") {
		t.Errorf("healthy span marked ERROR:\n%s\n%s", create, insert)
	}
	// Key attributes, not repeated under a parent that shows the same value; statements cut to one line.
	if !strings.Contains(create, "key=order-42 kind=email.send queue=critical") || !strings.Contains(proc, "attempt=1") {
		t.Errorf("job attributes missing:\n%s\n%s", create, proc)
	}
	if strings.Contains(proc, "key=") || strings.Contains(send, "attempt=") {
		t.Errorf("inherited attributes repeated:\n%s\n%s", proc, send)
	}
	if !strings.Contains(insert, `db="INSERT INTO pubq_outbox (id, queue, kind, key, …"`) {
		t.Errorf("db.statement not truncated to one line: %s", insert)
	}
	if !strings.Contains(send, "events=lease.renewed,exception") {
		t.Errorf("events missing: %s", send)
	}
	// A span whose parent is not in the trace is printed as a root, flagged.
	if _, l := find("lease.renew [parent ffffffffffffffff missing]"); strings.HasPrefix(strings.TrimSpace(l), "└") {
		t.Errorf("orphan printed as a child: %s", l)
	}
	find("warning: invalid parent span IDs=ffffffffffffffff")

	// Bars: the 20-column bar of the root of trace 3 is full; its 2.5 ms child sits near the end.
	_, proc3 := find("pubq-critical-worker process  pubq-worker     40.0ms")
	if !strings.Contains(proc3, "|"+strings.Repeat("█", 20)+"|") {
		t.Errorf("root bar not full: %s", proc3)
	}
	_, upd3 := find("UPDATE pubq_jobs           pubq-worker      2.5ms")
	bar3 := upd3[strings.Index(upd3, "|")+1 : strings.LastIndex(upd3, "|")]
	if n := strings.Count(bar3, "█"); n < 1 || n > 3 || !strings.HasPrefix(bar3, strings.Repeat(" ", 15)) {
		t.Errorf("2.5ms span at 34ms of 40ms drawn as %q", bar3)
	}

	// Links both ways between the retry traces, and to a trace not shown.
	find(`link: "pubq-critical-worker process" b200000000000001 -> trace 1/3 span a100000000000004 "pubq-critical-worker process"`)
	find(`linked from: "pubq-critical-worker process" a100000000000004 <- trace 2/3 span b200000000000001`)
	find(`-> trace 7d2e4f6a8b0c1d3e5f7a9b1c3d5e7f90 span d400000000000001 (not shown)`)
}

func TestRenderEdgeCases(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	traces := []*Trace{
		{TraceID: strings.Repeat("1", 32)},
		{TraceID: strings.Repeat("2", 32), Spans: []Span{
			// A parent cycle: neither span is a root, both must still be printed once.
			{SpanID: "00000000000000a1", ParentSpanID: "00000000000000a2", Name: "a", Start: t0},
			{SpanID: "00000000000000a2", ParentSpanID: "00000000000000a1", Name: "b", Start: t0},
			// Zero-length trace otherwise: every bar is full.
		}},
	}
	var buf bytes.Buffer
	if err := Render(&buf, traces, RenderOptions{BarWidth: 8, Location: time.FixedZone("X", 3600)}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "(no spans)") {
		t.Errorf("empty trace not reported:\n%s", out)
	}
	var spanLines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "|") {
			spanLines = append(spanLines, l)
		}
	}
	if len(spanLines) != 2 || !strings.HasPrefix(spanLines[0], "  a ") || !strings.HasPrefix(spanLines[1], "  └─ b ") {
		t.Errorf("parent cycle: want a then └─ b, each once:\n%s", out)
	}
	if strings.Count(out, "|████████|") != 2 {
		t.Errorf("zero-length trace should draw full bars:\n%s", out)
	}
	if !strings.Contains(out, "2026-01-02 04:04:05.000 X") {
		t.Errorf("Location not applied:\n%s", out)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestRenderWriteError(t *testing.T) {
	err := Render(failWriter{}, loadFixture(t, "job_retry.json"), RenderOptions{})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Render to a failing writer = %v", err)
	}
}

func TestFormatting(t *testing.T) {
	for d, want := range map[time.Duration]string{
		800 * time.Microsecond: "800µs", 4500 * time.Microsecond: "4.5ms", 1250 * time.Millisecond: "1.25s",
		90 * time.Second: "1m30s", 0: "0µs",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
	if got := formatValue("a b", 10); got != `"a b"` {
		t.Errorf("formatValue quotes spaces: %s", got)
	}
	if got := formatValue("", 10); got != `""` {
		t.Errorf("formatValue empty: %s", got)
	}
	if got := truncate("héllo\n  wörld", 8); got != "héllo w…" {
		t.Errorf("truncate = %q", got)
	}
}
