package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/worker"
)

var errRateLimited = errors.New("mailer: rate limited")

func sendMail(context.Context, string, string) error { return nil }

// Handlers are registered per kind, like http.HandleFunc; their error picks the outcome.
func ExampleMux() {
	mux := worker.NewMux()
	mux.HandleFunc("email.send", func(ctx context.Context, j *job.Job) error {
		var m struct{ To string }
		if err := j.Unmarshal(&m); err != nil {
			return err // a payload that does not fit: permanent, dead-lettered at once
		}
		// j.Key is stable across attempts: the mail provider deduplicates on it.
		if err := sendMail(ctx, m.To, j.Key); errors.Is(err, errRateLimited) {
			return job.Snooze(time.Minute) // later, without using an attempt
		} else if err != nil {
			return err // retried with the kind's jittered backoff
		}
		return nil
	})
	// Database work that must happen exactly once commits with the job's completion.
	mux.HandleTx("account.close", worker.TxHandlerFunc(func(ctx context.Context, tx pgx.Tx, j *job.Job) error {
		_, err := tx.Exec(ctx, `UPDATE accounts SET closed = true WHERE id = $1`, j.Key)
		return err
	}))
	// Middleware sees every job, net/http style.
	mux.Use(func(next worker.Handler) worker.Handler {
		return worker.HandlerFunc(func(ctx context.Context, j *job.Job) error {
			slog.DebugContext(ctx, "job starting", "kind", j.Kind)
			return next.Work(ctx, j)
		})
	})
	fmt.Println(mux.Kinds())
	// Output: [account.close email.send]
}
