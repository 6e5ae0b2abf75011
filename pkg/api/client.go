package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/publish"
)

// Client enqueues jobs through a producer's HTTP API. It retries network errors and 502, 503 and 504
// answers with jittered exponential backoff: safe because every job carries an idempotency key, so a
// retried request returns the job the lost answer described. Other refusals are returned at once as a
// *Problem. Safe for concurrent use.
type Client struct {
	endpoint   string
	token      string
	hc         *http.Client
	newBackOff func() backoff.BackOff
}

// ClientOption changes a Client's defaults.
type ClientOption func(*Client)

// WithBackOff sets the retry schedule; each request starts a fresh one. Default: exponential from
// 100ms, doubling to at most 5s, each delay drawn from ±50%, giving up after 1 minute.
func WithBackOff(newBackOff func() backoff.BackOff) ClientOption {
	return func(c *Client) { c.newBackOff = newBackOff }
}

// NewClient returns a client of the producer at baseURL (e.g. "http://producer:8080"), sending token as
// its bearer token ("" sends none, for a server in Insecure mode). A nil hc means an http.Client with
// a 30s timeout whose transport propagates the caller's trace context (otelhttp), so the producer's
// span joins the caller's trace.
func NewClient(baseURL, token string, hc *http.Client, opts ...ClientOption) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("pubq: api: base URL %q is not like http://host:port", baseURL)
	}
	// A token with a stray newline (read from a secret file, say) cannot go into a header: say so now,
	// rather than retrying a request that can never be sent.
	if strings.IndexFunc(token, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return nil, errors.New("pubq: api: the token contains whitespace or a control character")
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second, Transport: otelhttp.NewTransport(http.DefaultTransport)}
	}
	c := &Client{
		endpoint: strings.TrimSuffix(u.String(), "/") + "/v1/jobs",
		token:    token,
		hc:       hc,
		newBackOff: func() backoff.BackOff {
			return backoff.NewExponentialBackOff(
				backoff.WithInitialInterval(100*time.Millisecond),
				backoff.WithMaxInterval(5*time.Second),
				backoff.WithMaxElapsedTime(time.Minute))
		},
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Enqueue enqueues one job; r.Key is required. A repeat of an enqueued key with the same kind and
// payload returns the first job with Duplicate set. r.Attributes cannot be sent over HTTP.
func (c *Client) Enqueue(ctx context.Context, r publish.Request) (publish.Result, error) {
	j, err := toJSON(r)
	if err != nil {
		return publish.Result{}, err
	}
	var res publish.Result
	if err := c.post(ctx, j, r.Key, &res); err != nil {
		return publish.Result{}, err
	}
	return res, nil
}

// EnqueueMany enqueues up to publish.MaxBatch jobs atomically, each with its own key; the results are
// in request order.
func (c *Client) EnqueueMany(ctx context.Context, rs []publish.Request) ([]publish.Result, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	if len(rs) > publish.MaxBatch {
		return nil, fmt.Errorf("%w: %d > %d", publish.ErrTooMany, len(rs), publish.MaxBatch)
	}
	b := batchJSON{Jobs: make([]jobJSON, len(rs))}
	for i, r := range rs {
		j, err := toJSON(r)
		if err != nil {
			return nil, fmt.Errorf("job %d: %w", i, err)
		}
		b.Jobs[i] = j
	}
	var res batchResultJSON
	if err := c.post(ctx, b, "", &res); err != nil {
		return nil, err
	}
	if len(res.Jobs) != len(rs) {
		return nil, fmt.Errorf("pubq: api: the producer answered %d results for %d jobs", len(res.Jobs), len(rs))
	}
	return res.Jobs, nil
}

func toJSON(r publish.Request) (jobJSON, error) {
	if len(r.Attributes) > 0 {
		return jobJSON{}, errors.New("pubq: api: attributes cannot be sent over HTTP")
	}
	// The key travels in a header too: a bad one is the caller's mistake, not something to retry.
	if err := job.ValidateNewKey(r.Key); err != nil {
		return jobJSON{}, fmt.Errorf("pubq: api: %w", err)
	}
	j := jobJSON{Kind: r.Kind, Key: r.Key, Payload: r.Payload}
	if !r.RunAt.IsZero() {
		s := r.RunAt.UTC().Format(time.RFC3339Nano)
		j.RunAt = &s
	}
	if r.RunIn > 0 {
		s := r.RunIn.String()
		j.RunIn = &s
	}
	return j, nil
}

// maxAnswerBytes bounds what is read of an answer: a full batch's results are well under it.
const maxAnswerBytes = 8 << 20

// post sends body until an answer that is not transient, and decodes a 2xx answer into out.
func (c *Client) post(ctx context.Context, body any, key string, out any) error {
	// Without HTML escaping: json.Marshal would send "<" as "\u003c", and the producer, which keeps a
	// payload's bytes, would then see a different payload from the same job sent by curl (a false 409).
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(body); err != nil {
		return fmt.Errorf("pubq: api: encoding the request: %w", err)
	}
	data := bytes.TrimSuffix(buf.Bytes(), []byte("\n")) // Encode ends each value with one
	b := backoff.WithContext(c.newBackOff(), ctx)
	for attempt := 1; ; attempt++ {
		retryAfter, err := c.once(ctx, data, key, out)
		if err == nil {
			return nil
		}
		var perm *backoff.PermanentError
		if errors.As(err, &perm) {
			return perm.Err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("pubq: api: enqueue abandoned after %d attempts: %w (last error: %w)", attempt, ctx.Err(), err)
		}
		wait := b.NextBackOff()
		if wait == backoff.Stop {
			return fmt.Errorf("pubq: api: giving up after %d attempts: %w", attempt, err)
		}
		if retryAfter > wait && retryAfter <= 30*time.Second {
			wait = retryAfter // the server knows best how long it needs, within reason
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("pubq: api: enqueue abandoned after %d attempts: %w (last error: %w)", attempt, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// once makes one attempt. A *backoff.PermanentError must not be retried; any other error may be.
func (c *Client) once(ctx context.Context, data []byte, key string, out any) (retryAfter time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(data))
	if err != nil {
		return 0, backoff.Permanent(fmt.Errorf("pubq: api: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, "+ContentTypeProblem)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var cv *tls.CertificateVerificationError
		if errors.As(err, &cv) {
			return 0, backoff.Permanent(fmt.Errorf("pubq: api: %w", err))
		}
		return 0, fmt.Errorf("pubq: api: %w", err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
		_ = resp.Body.Close()
	}()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		// The job may or may not be enqueued: asking again with the same key tells.
		return 0, fmt.Errorf("pubq: api: reading the answer: %w", err)
	}
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusAccepted {
		if err := json.Unmarshal(answer, out); err != nil {
			return 0, backoff.Permanent(fmt.Errorf("pubq: api: decoding the answer: %w", err))
		}
		return 0, nil
	}
	p := decodeProblem(resp, answer)
	switch resp.StatusCode {
	// 429: every instance busy (Cloud Run's front end says so); the key makes a retry safe.
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return parseRetryAfter(resp.Header.Get("Retry-After")), p
	}
	return 0, backoff.Permanent(p)
}

func decodeProblem(resp *http.Response, answer []byte) *Problem {
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == ContentTypeProblem {
		var p Problem
		if json.Unmarshal(answer, &p) == nil && p.Status != 0 {
			return &p
		}
	}
	// Not ours: a proxy or load balancer answered.
	p := &Problem{Type: "about:blank", Title: http.StatusText(resp.StatusCode), Status: resp.StatusCode}
	if s := strings.TrimSpace(string(answer)); s != "" {
		p.Detail = truncate(s, 200)
	}
	return p
}

func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}
