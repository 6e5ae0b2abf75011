package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/retry"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
)

// RelayConfig configures a Relay. Zero fields take the documented defaults.
type RelayConfig struct {
	// Batch is the most outbox rows one relay transaction publishes. Default 500.
	Batch int
	// Poll is how often the relay looks for due rows when no NOTIFY wakes it (delayed jobs and
	// retries come due without one). Default 200ms.
	Poll time.Duration
	// PublishTimeout bounds the publish of one batch, retries included. Default 30s.
	PublishTimeout time.Duration
	// Logger. Default slog.Default().
	Logger *slog.Logger
	// Metrics observes the outbox backlog. Default none.
	Metrics *telemetry.Metrics
	// Rand is the jitter source for publish retries. Default time-seeded.
	Rand rand.Source
}

// Relay publishes committed outbox rows to their topics. Several relays may run against one database.
type Relay struct {
	client *pubsub.Client
	st     *store.Store
	cfg    RelayConfig
	log    *slog.Logger
	again  *retry.Policy // delay before a row whose publish failed is tried again

	mu         sync.Mutex
	publishers map[string]*pubsub.Publisher
}

// NewRelay returns a relay publishing through client.
func NewRelay(client *pubsub.Client, st *store.Store, cfg *RelayConfig) (*Relay, error) {
	if client == nil || st == nil {
		return nil, errors.New("pubq: relay: client and store are required")
	}
	c := RelayConfig{}
	if cfg != nil {
		c = *cfg
	}
	if c.Batch <= 0 {
		c.Batch = 500
	}
	if c.Poll <= 0 {
		c.Poll = 200 * time.Millisecond
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	again, err := retry.New(time.Second, 2, 5*time.Minute, 0.5, 1<<20, c.Rand)
	if err != nil {
		return nil, err
	}
	r := &Relay{client: client, st: st, cfg: c, log: c.Logger, again: again, publishers: map[string]*pubsub.Publisher{}}
	if c.Metrics != nil {
		if err := c.Metrics.ObserveOutbox(st.OutboxStats); err != nil {
			return nil, fmt.Errorf("pubq: relay: %w", err)
		}
	}
	return r, nil
}

// Run relays until ctx is done, then flushes its publishers.
func (r *Relay) Run(ctx context.Context) error {
	defer r.stop()
	wake := make(chan struct{}, 1)
	go r.listen(ctx, r.st.Pool(), wake)
	t := time.NewTicker(r.cfg.Poll)
	defer t.Stop()
	for {
		for {
			// A pass that has started finishes (bounded by PublishTimeout): cancelling mid-publish would
			// push its rows back by a retry delay. Its database work gets a bound too, or a stalled
			// database would hold a shutdown for ever.
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*r.cfg.PublishTimeout)
			n, err := r.RelayOnce(pctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				r.log.Warn("relay pass failed", "error", err)
				break
			}
			if n < r.cfg.Batch || ctx.Err() != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-t.C:
		}
	}
}

// RelayOnce publishes one batch of due outbox rows and returns how many were published.
func (r *Relay) RelayOnce(ctx context.Context) (int, error) {
	return r.st.Relay(ctx, r.cfg.Batch, r.publish, r.again.Delay)
}

// listen turns NOTIFY pubq_outbox into wake-ups; on errors the relay still polls.
func (r *Relay) listen(ctx context.Context, pool *pgxpool.Pool, wake chan<- struct{}) {
	for ctx.Err() == nil {
		err := func() error {
			conn, err := pool.Acquire(ctx)
			if err != nil {
				return err
			}
			defer conn.Release()
			if _, err := conn.Exec(ctx, "LISTEN pubq_outbox"); err != nil {
				return err
			}
			for {
				if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
					// The connection may hold a half-read notification: do not return it to the pool.
					_ = conn.Conn().Close(context.WithoutCancel(ctx))
					return err
				}
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}()
		if ctx.Err() != nil {
			return
		}
		r.log.Debug("relay listen interrupted; polling meanwhile", "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (r *Relay) publisher(topic string) *pubsub.Publisher {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.publishers[topic]
	if !ok {
		p = r.client.Publisher(topic)
		r.publishers[topic] = p
	}
	return p
}

func (r *Relay) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.publishers {
		p.Stop()
	}
	r.publishers = map[string]*pubsub.Publisher{}
}

// publish publishes msgs concurrently, retrying transient failures of each with jittered backoff.
func (r *Relay) publish(ctx context.Context, msgs []store.OutboxMessage) []error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	errs := make([]error, len(msgs))
	results := make([]*pubsub.PublishResult, len(msgs))
	send := func(i int) {
		m := msgs[i]
		// The Pub/Sub client's create span becomes a child of the span that wrote the row.
		pctx := telemetry.ContextWithTraceParent(ctx, m.TraceParent)
		results[i] = r.publisher(m.Topic).Publish(pctx, &pubsub.Message{Data: m.Data, Attributes: m.Attributes})
	}
	for i := range msgs {
		send(i)
	}
	var wg sync.WaitGroup
	for i := range msgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := backoff.WithContext(backoff.NewExponentialBackOff(
				backoff.WithInitialInterval(100*time.Millisecond), backoff.WithMaxInterval(5*time.Second),
				backoff.WithMaxElapsedTime(0)), ctx)
			errs[i] = backoff.Retry(func() error {
				if results[i] == nil {
					send(i)
				}
				_, err := results[i].Get(ctx)
				results[i] = nil
				if err != nil && !transient(err) {
					return backoff.Permanent(err)
				}
				return err
			}, b)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			// The line names the job and carries the trace it was published in.
			lctx := telemetry.WithJob(telemetry.ContextWithTraceParent(ctx, msgs[i].TraceParent), outboxJob(msgs[i]))
			r.log.WarnContext(lctx, "publish failed; will retry from the outbox", "topic", msgs[i].Topic, "error", err)
		}
	}
	return errs
}

// outboxJob names the job an outbox message delivers, from its wire attributes. The attempt is left
// out (0) when the attribute is absent or not a positive number.
func outboxJob(m store.OutboxMessage) telemetry.Job {
	j := telemetry.Job{Key: m.JobKey, Kind: m.Attributes[job.AttrKind], ID: m.Attributes[job.AttrID]}
	if n, err := strconv.Atoi(m.Attributes[job.AttrAttempt]); err == nil && n > 0 {
		j.Attempt = n
	}
	return j
}

// transient reports whether a publish error may succeed if tried again.
func transient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Internal, codes.Unknown:
		return true
	}
	return false
}
