package e2e

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// An HTTP enqueue reaches the worker process through the emulator, and the handler runs with the exact
// payload: nested values, unicode, numbers and an empty object survive the trip (the demo handler stores
// what it was given, in the job's own transaction).
func TestHTTPEnqueueRunsHandlerWithExactPayload(t *testing.T) {
	s := newStack(t)
	s.startWorker(t, nil)
	p := s.startProducer(t, nil)
	const payload = `{"note": "Ünïcødé ✓ \"quoted\"", "student": {"id": 42, "tags": ["a", "b"], "gpa": 3.75},
		"empty": {}, "none": null, "big": 9007199254740993}`
	r := p.enqueue(t, "demo.record", "exact-payload-1", payload, "")
	if r.Duplicate || r.Queue != "default" {
		t.Fatalf("enqueue: %+v", r)
	}
	ctx := ctxT(t)
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var got []byte
	var attempt int
	deadline := time.Now().Add(60 * time.Second)
	for {
		err = conn.QueryRow(ctx, `SELECT payload::text, attempt FROM demo_effects WHERE job_key = 'exact-payload-1'`).Scan(&got, &attempt)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("the handler never ran: %v", err)
	}
	// JSON equality with numbers kept as written (a float64 round trip would hide a lost digit).
	want, have := decode(t, []byte(payload)), decode(t, got)
	if !reflect.DeepEqual(want, have) || attempt != 1 {
		t.Fatalf("handler payload %s (attempt %d)\nwant %s", got, attempt, payload)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM demo_effects WHERE job_key = 'exact-payload-1'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("effects %d %v", n, err)
	}
}

func decode(t *testing.T, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}
