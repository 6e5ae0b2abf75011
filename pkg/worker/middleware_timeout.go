package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pubq/pubq/pkg/job"
)

// ErrJobTimeout is the cause of a handler context cancelled by its per-job timeout.
var ErrJobTimeout = errors.New("pubq: job timed out")

// Timeout bounds each job by timeout(kind); a handler still running then sees its context done and the
// attempt fails (and is retried) with ErrJobTimeout.
func Timeout(timeout func(kind string) time.Duration) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, j *job.Job) error {
			d := timeout(j.Kind)
			if d <= 0 {
				return next.Work(ctx, j)
			}
			ctx, cancel := context.WithTimeoutCause(ctx, d, ErrJobTimeout)
			defer cancel()
			err := next.Work(ctx, j)
			if err != nil && errors.Is(context.Cause(ctx), ErrJobTimeout) && !errors.Is(err, ErrJobTimeout) {
				err = fmt.Errorf("%w after %s: %w", ErrJobTimeout, d, err)
			}
			return err
		})
	}
}
