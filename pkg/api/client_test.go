package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/pubq/pubq/pkg/publish"
)

// fastBackOff retries quickly, with jitter, at most n times.
func fastBackOff(n uint64) ClientOption {
	return WithBackOff(func() backoff.BackOff {
		return backoff.WithMaxRetries(backoff.NewExponentialBackOff(
			backoff.WithInitialInterval(time.Millisecond), backoff.WithMaxInterval(5*time.Millisecond)), n)
	})
}

type seen struct {
	mu       sync.Mutex
	bodies   []string
	keys     []string
	auths    []string
	attempts atomic.Int32
}

func (s *seen) record(r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bodies = append(s.bodies, string(b))
	s.keys = append(s.keys, r.Header.Get("Idempotency-Key"))
	s.auths = append(s.auths, r.Header.Get("Authorization"))
	s.attempts.Add(1)
}

func problemAnswer(w http.ResponseWriter, p *Problem) { writeProblem(w, p) }

func newTestClient(t *testing.T, url string, opts ...ClientOption) *Client {
	t.Helper()
	c, err := NewClient(url, testToken, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientRetriesTransientFailures(t *testing.T) {
	for _, failure := range []int{http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout, http.StatusTooManyRequests} {
		t.Run(http.StatusText(failure), func(t *testing.T) {
			var s seen
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				s.record(r)
				if s.attempts.Load() <= 2 {
					if failure == http.StatusServiceUnavailable {
						problemAnswer(w, newProblem(TypeUnavailable, failure, "database down"))
					} else {
						http.Error(w, "upstream trouble", failure) // a proxy's plain-text answer
					}
					return
				}
				writeJSON(w, http.StatusAccepted, publish.Result{ID: "j1", Key: "k1", Kind: "email.send", Queue: "bulk", State: "pending"})
			}))
			defer srv.Close()
			c := newTestClient(t, srv.URL+"/", fastBackOff(5))
			res, err := c.Enqueue(context.Background(), publish.Request{Kind: "email.send", Key: "k1", Payload: json.RawMessage(`{"to":"a@b.c"}`)})
			if err != nil {
				t.Fatal(err)
			}
			if res.ID != "j1" || res.Queue != "bulk" || res.Duplicate {
				t.Fatalf("result = %+v", res)
			}
			if n := s.attempts.Load(); n != 3 {
				t.Fatalf("%d attempts, want 3", n)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			for i := range s.bodies {
				if s.bodies[i] != s.bodies[0] || s.keys[i] != "k1" || s.auths[i] != "Bearer "+testToken {
					t.Fatalf("attempt %d differs: body %q key %q auth %q", i, s.bodies[i], s.keys[i], s.auths[i])
				}
			}
		})
	}
}

func TestClientRetriesNetworkErrors(t *testing.T) {
	var attempts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if attempts.Add(1) <= 2 {
			// The connection drops before any answer: did the job get in? The key makes asking again safe.
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		writeJSON(w, http.StatusOK, publish.Result{ID: "j1", Key: "k1", Duplicate: true})
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, fastBackOff(5))
	res, err := c.Enqueue(context.Background(), publish.Request{Kind: "email.send", Key: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Duplicate || attempts.Load() != 3 {
		t.Fatalf("result %+v after %d attempts", res, attempts.Load())
	}
}

func TestClientDoesNotRetryRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    *Problem
		is   error
	}{
		{"409 key conflict", &Problem{Type: TypeKeyConflict, Title: titles[TypeKeyConflict], Status: http.StatusConflict,
			Detail: `key "k1" is already used by job j0`, Field: "key", JobID: "j0"}, publish.ErrKeyConflict},
		{"400 invalid", invalid("kind", `"kind" is required`), publish.ErrInvalid},
		{"422 unknown kind", newProblem(TypeUnknownKind, http.StatusUnprocessableEntity, "no queue accepts kind"), publish.ErrUnknownKind},
		{"401", newProblem(TypeUnauthorized, http.StatusUnauthorized, "not valid"), nil},
		{"500", newProblem(TypeInternal, http.StatusInternalServerError, "see the log"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var attempts atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				attempts.Add(1)
				problemAnswer(w, tc.p)
			}))
			defer srv.Close()
			c := newTestClient(t, srv.URL, fastBackOff(5))
			_, err := c.Enqueue(context.Background(), publish.Request{Kind: "email.send", Key: "k1"})
			var p *Problem
			if !errors.As(err, &p) {
				t.Fatalf("err = %v, want a *Problem", err)
			}
			if p.Status != tc.p.Status || p.Detail != tc.p.Detail || p.JobID != tc.p.JobID {
				t.Fatalf("problem = %+v, want %+v", p, tc.p)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("errors.Is(err, %v) = false", tc.is)
			}
			if n := attempts.Load(); n != 1 {
				t.Fatalf("%d attempts; a refusal must not be retried", n)
			}
		})
	}
}

func TestClientGivesUp(t *testing.T) {
	var attempts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		problemAnswer(w, newProblem(TypeUnavailable, http.StatusServiceUnavailable, "database down"))
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, fastBackOff(3))
	_, err := c.Enqueue(context.Background(), publish.Request{Kind: "email.send", Key: "k1"})
	var p *Problem
	if !errors.As(err, &p) || p.Status != http.StatusServiceUnavailable {
		t.Fatalf("err = %v, want the last 503 problem", err)
	}
	if !strings.Contains(err.Error(), "giving up after 4 attempts") || !strings.HasPrefix(err.Error(), "pubq: ") {
		t.Fatalf("err = %v", err)
	}
	if n := attempts.Load(); n != 4 {
		t.Fatalf("%d attempts, want 1 + 3 retries", n)
	}
}

func TestClientStopsWhenContextEnds(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "10") // would wait 10s without the context
		problemAnswer(w, newProblem(TypeUnavailable, http.StatusServiceUnavailable, "database down"))
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, fastBackOff(100))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Enqueue(ctx, publish.Request{Kind: "email.send", Key: "k1"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("returned after %v", d)
	}
}

func TestClientHonoursRetryAfter(t *testing.T) {
	var attempts atomic.Int32
	var first, second time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if attempts.Add(1) == 1 {
			first = time.Now()
			w.Header().Set("Retry-After", "1")
			problemAnswer(w, newProblem(TypeUnavailable, http.StatusServiceUnavailable, "busy"))
			return
		}
		second = time.Now()
		writeJSON(w, http.StatusAccepted, publish.Result{ID: "j1"})
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, fastBackOff(3))
	if _, err := c.Enqueue(context.Background(), publish.Request{Kind: "email.send", Key: "k1"}); err != nil {
		t.Fatal(err)
	}
	if gap := second.Sub(first); gap < 900*time.Millisecond {
		t.Fatalf("retried after %v despite Retry-After: 1", gap)
	}
}

func TestClientBatch(t *testing.T) {
	var s seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.record(r)
		writeJSON(w, http.StatusAccepted, batchResultJSON{Jobs: []publish.Result{{ID: "a1", Key: "a"}, {ID: "b1", Key: "b", Duplicate: true}}})
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, fastBackOff(1))
	at := time.Date(2031, 2, 3, 4, 5, 6, 0, time.FixedZone("x", 3600))
	res, err := c.EnqueueMany(context.Background(), []publish.Request{
		{Kind: "email.send", Key: "a", RunAt: at},
		{Kind: "email.send", Key: "b", RunIn: 90 * time.Second, Payload: json.RawMessage(`{"x":1}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].ID != "a1" || !res[1].Duplicate {
		t.Fatalf("results = %+v", res)
	}
	s.mu.Lock()
	body, key := s.bodies[0], s.keys[0]
	s.mu.Unlock()
	want := `{"jobs":[{"kind":"email.send","key":"a","run_at":"2031-02-03T03:05:06Z"},{"kind":"email.send","key":"b","payload":{"x":1},"run_in":"1m30s"}]}`
	if body != want || key != "" {
		t.Fatalf("body = %s (Idempotency-Key %q), want %s", body, key, want)
	}

	if _, err := c.EnqueueMany(context.Background(), make([]publish.Request, publish.MaxBatch+1)); !errors.Is(err, publish.ErrTooMany) {
		t.Fatalf("oversized batch: err = %v", err)
	}
	if _, err := c.Enqueue(context.Background(), publish.Request{Kind: "email.send", Key: "k", Attributes: map[string]string{"a": "b"}}); err == nil {
		t.Fatal("attributes were accepted")
	}
	if res, err := c.EnqueueMany(context.Background(), nil); err != nil || res != nil {
		t.Fatalf("empty batch: %v, %v", res, err)
	}
}

func TestClientMismatchedBatchAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusAccepted, batchResultJSON{Jobs: []publish.Result{{ID: "a1"}}})
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL)
	_, err := c.EnqueueMany(context.Background(), []publish.Request{{Kind: "email.send", Key: "a"}, {Kind: "email.send", Key: "b"}})
	if err == nil || !strings.Contains(err.Error(), "1 results for 2 jobs") {
		t.Fatalf("err = %v", err)
	}
}

func TestNewClientRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "producer:8080", "ftp://producer", "http://", "://x"} {
		if _, err := NewClient(u, testToken, nil); err == nil || !strings.HasPrefix(err.Error(), "pubq: api: ") {
			t.Errorf("NewClient(%q) err = %v", u, err)
		}
	}
}

// A token or key that cannot go into a header is refused at once, not retried for a minute.
func TestClientRefusesUnsendableHeaders(t *testing.T) {
	for _, tok := range []string{testToken + "\n", "a b", "tab\tbed"} {
		if _, err := NewClient("http://producer:8080", tok, nil); err == nil || !strings.Contains(err.Error(), "token") {
			t.Errorf("NewClient with token %q: %v", tok, err)
		}
	}
	var s seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.record(r) }))
	defer srv.Close()
	c := newTestClient(t, srv.URL)
	start := time.Now()
	for _, key := range []string{"order-1\n", " order-1", ""} {
		_, err := c.Enqueue(context.Background(), publish.Request{Kind: "email.send", Key: key, Payload: json.RawMessage(`{}`)})
		if err == nil || !strings.Contains(err.Error(), "pubq_key") {
			t.Errorf("key %q: %v", key, err)
		}
		if _, err := c.EnqueueMany(context.Background(), []publish.Request{{Kind: "email.send", Key: key}}); err == nil {
			t.Errorf("batch with key %q: no error", key)
		}
	}
	if n := s.attempts.Load(); n != 0 || time.Since(start) > 5*time.Second {
		t.Errorf("%d requests sent in %s; want none, at once", n, time.Since(start))
	}
}
