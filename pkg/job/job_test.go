package job_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pubq/pubq/pkg/job"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 123, time.UTC)
	in := &job.Job{ID: "j1", Kind: "email.send", Key: "welcome:42", Payload: []byte(`{"to":"a@b.c"}`),
		EnqueuedAt: at, Attempt: 3, Attributes: map[string]string{"traceparent": "00-abc-def-01", "team": "x"}}
	data, attrs, err := in.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if attrs[job.AttrKind] != "email.send" || attrs[job.AttrKey] != "welcome:42" || attrs[job.AttrVersion] != "1" || attrs[job.AttrAttempt] != "3" {
		t.Fatalf("attrs: %v", attrs)
	}
	out, err := job.Decode(data, attrs, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if out.ID != "j1" || out.Kind != in.Kind || out.Key != in.Key || string(out.Payload) != string(in.Payload) ||
		!out.EnqueuedAt.Equal(at) || out.Attempt != 3 || out.Attributes["team"] != "x" || out.Attributes["traceparent"] != "00-abc-def-01" {
		t.Fatalf("round trip: %+v", out)
	}
	if _, leaked := out.Attributes[job.AttrKey]; leaked {
		t.Error("envelope attributes must not be repeated in Attributes")
	}
}

// A minimal message as a Node.js or Python publisher sends it: only kind, key and JSON data.
func TestDecodeMinimal(t *testing.T) {
	pub := time.Now()
	j, err := job.Decode([]byte(`{"n":1}`), map[string]string{"pubq_kind": "demo.record", "pubq_key": "k"}, pub)
	if err != nil {
		t.Fatal(err)
	}
	if j.Attempt != 1 || !j.EnqueuedAt.Equal(pub) || j.ID != "" {
		t.Fatalf("defaults: %+v", j)
	}
}

func TestDecodeErrors(t *testing.T) {
	ok := map[string]string{"pubq_kind": "demo.record", "pubq_key": "k"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range ok {
			m[a] = b
		}
		if v == "\x00delete" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	cases := []struct {
		name  string
		data  string
		attrs map[string]string
		field string
	}{
		{"no envelope", `{"hello":1}`, map[string]string{}, job.AttrKind},
		{"no key", `{}`, with(job.AttrKey, "\x00delete"), job.AttrKey},
		{"long key", `{}`, with(job.AttrKey, strings.Repeat("k", 257)), job.AttrKey},
		{"control key", `{}`, with(job.AttrKey, "a\nb"), job.AttrKey},
		// Postgres refuses NUL and invalid UTF-8 in text: such an id would fail a whole claim batch.
		{"NUL in id", `{}`, with(job.AttrID, "a\x00b"), job.AttrID},
		{"invalid UTF-8 id", `{}`, with(job.AttrID, "a\xffb"), job.AttrID},
		{"bad kind", `{}`, with(job.AttrKind, "Send Email"), job.AttrKind},
		{"version", `{}`, with(job.AttrVersion, "2"), job.AttrVersion},
		{"attempt", `{}`, with(job.AttrAttempt, "0"), job.AttrAttempt},
		{"enqueued_at", `{}`, with(job.AttrEnqueuedAt, "yesterday"), job.AttrEnqueuedAt},
		{"not json", `{"a":`, ok, "data"},
		{"empty", ``, ok, "data"},
		{"too big", `"` + strings.Repeat("x", job.MaxPayloadBytes) + `"`, ok, "data"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := job.Decode([]byte(tc.data), tc.attrs, time.Now())
			var de *job.DecodeError
			if !errors.As(err, &de) || de.Field != tc.field || !errors.Is(err, job.ErrInvalid) {
				t.Fatalf("want DecodeError on %s, got %v", tc.field, err)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	plain := errors.New("boom")
	cases := []struct {
		err   error
		want  job.Outcome
		delay time.Duration
	}{
		{nil, job.OutcomeSucceeded, 0},
		{plain, job.OutcomeRetry, 0},
		{job.RetryAfter(time.Minute, plain), job.OutcomeRetry, time.Minute},
		{job.Snooze(5 * time.Second), job.OutcomeSnooze, 5 * time.Second},
		{fmt.Errorf("wrapped: %w", job.Permanent(plain)), job.OutcomePermanent, 0},
		{job.Cancel(nil), job.OutcomeCancel, 0},
	}
	for _, tc := range cases {
		o, d := job.Classify(tc.err)
		if o != tc.want || d != tc.delay {
			t.Errorf("Classify(%v) = %v, %v; want %v, %v", tc.err, o, d, tc.want, tc.delay)
		}
	}
	if !errors.Is(job.Permanent(plain), plain) {
		t.Error("outcome errors must unwrap to the cause")
	}
	var j job.Job
	j.Payload = []byte(`[1]`)
	var v struct{}
	if o, _ := job.Classify(j.Unmarshal(&v)); o != job.OutcomePermanent {
		t.Errorf("a payload that does not fit the handler's type is permanent, got %v", o)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"a":1}`), "demo.record", "k1", "1", "2", "2026-01-02T03:04:05Z")
	f.Add([]byte(``), "", "", "", "", "")
	f.Add([]byte(`"x"`), "a.b", "\xff", "2", "-1", "bad")
	f.Fuzz(func(t *testing.T, data []byte, kind, key, version, attempt, at string) {
		attrs := map[string]string{}
		for k, v := range map[string]string{job.AttrKind: kind, job.AttrKey: key, job.AttrVersion: version, job.AttrAttempt: attempt, job.AttrEnqueuedAt: at} {
			if v != "" {
				attrs[k] = v
			}
		}
		j, err := job.Decode(data, attrs, time.Unix(0, 0))
		if err != nil {
			if !errors.Is(err, job.ErrInvalid) {
				t.Fatalf("error is not a DecodeError: %v", err)
			}
			return
		}
		// Whatever decodes must encode and decode to the same job.
		d2, a2, err := j.Encode()
		if err != nil {
			t.Fatalf("decoded job does not encode: %v", err)
		}
		j2, err := job.Decode(d2, a2, time.Unix(0, 0))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if j2.Kind != j.Kind || j2.Key != j.Key || j2.Attempt != j.Attempt || string(j2.Payload) != string(j.Payload) || !j2.EnqueuedAt.Equal(j.EnqueuedAt) {
			t.Fatalf("round trip changed the job: %+v vs %+v", j, j2)
		}
	})
}

func TestDeadLetterAttributes(t *testing.T) {
	orig := map[string]string{job.AttrKey: "k", job.AttrKind: "a.b", job.AttrDeadReason: "stale"}
	at := time.Date(2026, 11, 25, 21, 0, 0, 5, time.FixedZone("CET", 3600))
	got := job.DeadLetterAttributes(orig, "payments", job.ReasonExhausted, strings.Repeat("é", 600), 4, at)
	if got[job.AttrKey] != "k" || got[job.AttrKind] != "a.b" {
		t.Errorf("original attributes dropped: %v", got)
	}
	if got[job.AttrDeadReason] != job.ReasonExhausted || got[job.AttrDeadAttempts] != "4" || got[job.AttrDeadQueue] != "payments" {
		t.Errorf("dead attributes: %v", got)
	}
	if got[job.AttrDeadAt] != "2026-11-25T20:00:00.000000005Z" {
		t.Errorf("dead at %q, want UTC RFC 3339", got[job.AttrDeadAt])
	}
	if e := got[job.AttrDeadError]; len(e) > 1024 || !utf8.ValidString(e) {
		t.Errorf("error attribute: %d bytes, valid UTF-8 %v", len(e), utf8.ValidString(e))
	}
	if orig[job.AttrDeadReason] != "stale" || len(orig) != 3 {
		t.Errorf("the original map was changed: %v", orig)
	}
	// The delivery's trace context stays behind: the dead letter's publish writes its own.
	traced := map[string]string{job.AttrKey: "k", job.AttrTraceParent: "00-x", job.AttrPubSubTraceParent: "00-y",
		job.AttrPubSubTraceState: "s", job.AttrTraceState: "t", job.AttrPrevTraceParent: "00-z"}
	got = job.DeadLetterAttributes(traced, "q", job.ReasonPermanent, "e", 1, at)
	for _, k := range []string{job.AttrTraceParent, job.AttrPubSubTraceParent, job.AttrPubSubTraceState, job.AttrTraceState} {
		if _, ok := got[k]; ok {
			t.Errorf("%s kept on the dead letter", k)
		}
	}
	if got[job.AttrPrevTraceParent] != "00-z" {
		t.Errorf("the previous attempt's link was dropped: %v", got)
	}
}

func TestTruncate(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijk", 10, "abcdefg…"},
		{"ééééé", 6, "é…"}, // 10 bytes; 6-3 = 3 would split the second é, so the cut moves back to 2
		{"abcdef", 2, "ab"},
		{"éé", 1, ""},
		{"abc", 0, ""},
	} {
		got := job.Truncate(c.s, c.n)
		if got != c.want || len(got) > c.n || !utf8.ValidString(got) {
			t.Errorf("Truncate(%q, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
}

// Keys with outer spaces are refused when enqueued, but a delivery carrying one still decodes: a job
// enqueued before the rule, or by a foreign publisher, must still run or be dead-lettered by key.
func TestOuterSpacesInKeys(t *testing.T) {
	for _, k := range []string{" k", "k ", " "} {
		if err := job.ValidateNewKey(k); err == nil {
			t.Errorf("ValidateNewKey(%q) accepted", k)
		}
		j, err := job.Decode([]byte(`{}`), map[string]string{job.AttrKind: "a.b", job.AttrKey: k}, time.Now())
		if err != nil || j.Key != k {
			t.Errorf("Decode with key %q: %+v %v", k, j, err)
		}
	}
	if err := job.ValidateNewKey("a b"); err != nil {
		t.Errorf("an inner space: %v", err)
	}
}

// A foreign message with nearly 100 attributes of its own still gets a dead letter Pub/Sub accepts,
// once the publish adds its trace context: the last of its own attributes are left off, and counted.
func TestDeadLetterAttributesFitPubSub(t *testing.T) {
	orig := map[string]string{job.AttrKind: "a.b", job.AttrKey: "k"}
	for i := range 97 {
		orig[fmt.Sprintf("attr_%02d", i)] = "v"
	}
	got := job.DeadLetterAttributes(orig, "q", job.ReasonUnknownKind, "e", 0, time.Now())
	if n := len(got) + 2; n > 100 {
		t.Fatalf("%d attributes once published", n)
	}
	if got[job.AttrDeadReason] != job.ReasonUnknownKind || got[job.AttrKey] != "k" || got["attr_00"] != "v" {
		t.Errorf("pubq's attributes or the first own ones were dropped: %v", got)
	}
	// 99 + 5 dead attributes + the count = 105, to 98: the last 7 own ones go (attr_90 .. attr_96).
	if got[job.AttrDeadDropped] != "7" || got["attr_89"] != "v" || got["attr_90"] != "" || len(got) != 98 {
		t.Errorf("dropped %q, %d attributes: %v", got[job.AttrDeadDropped], len(got), got)
	}
	if small := job.DeadLetterAttributes(map[string]string{"a": "b"}, "q", "r", "e", 0, time.Now()); small[job.AttrDeadDropped] != "" {
		t.Errorf("a small message lost attributes: %v", small)
	}
}
