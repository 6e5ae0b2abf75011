package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/pubq/pubq/pkg/job"
)

// Logging logs each attempt's end with its outcome and duration (never the payload). The job's key,
// kind, queue and attempt, and the trace and span ids, come from the context the worker prepared.
func Logging(log *slog.Logger) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, j *job.Job) error {
			start := time.Now()
			err := next.Work(ctx, j)
			outcome, delay := job.Classify(err)
			attrs := []slog.Attr{slog.String("outcome", outcome.String()), slog.Duration("duration", time.Since(start))}
			if delay > 0 {
				attrs = append(attrs, slog.Duration("delay", delay))
			}
			level := slog.LevelInfo
			if err != nil {
				attrs = append(attrs, slog.String("error", err.Error()))
				level = slog.LevelWarn
			}
			log.LogAttrs(ctx, level, "job attempt finished", attrs...)
			return err
		})
	}
}
