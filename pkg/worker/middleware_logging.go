package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/pubq/pubq/pkg/job"
)

// Logging logs each attempt's end with its outcome and duration (never the payload): failures at
// warn, successes at debug (at thousands of jobs a second, success lines are noise; the metrics count
// them). The job's key, kind, queue and attempt, and the trace and span ids, come from the context the
// worker prepared.
func Logging(log *slog.Logger) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, j *job.Job) error {
			start := time.Now()
			err := next.Work(ctx, j)
			if err == nil && !log.Enabled(ctx, slog.LevelDebug) {
				return nil
			}
			outcome, delay := job.Classify(err)
			name := outcome.String()
			attrs := []slog.Attr{slog.Duration("duration", time.Since(start))}
			if cause := context.Cause(ctx); err != nil && abandoned(cause, err) {
				// The worker stopped the attempt (lease lost, shutdown): no retry follows from it.
				name, delay = "abandoned", 0
				if cause != nil {
					attrs = append(attrs, slog.String("cause", cause.Error()))
				}
			}
			attrs = append(attrs, slog.String("outcome", name))
			if delay > 0 {
				attrs = append(attrs, slog.Duration("delay", delay))
			}
			level := slog.LevelDebug
			if err != nil {
				attrs = append(attrs, slog.String("error", err.Error()))
				level = slog.LevelWarn
			}
			log.LogAttrs(ctx, level, "job attempt finished", attrs...)
			return err
		})
	}
}
