package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
)

// RunPruner deletes finished jobs older than each queue's key_retention every interval until ctx is
// done. key_retention exceeds the subscription's message retention (the config enforces it), so no
// message that could still be delivered loses the key that makes it a duplicate.
func RunPruner(ctx context.Context, st *store.Store, cfg *queue.Config, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, q := range cfg.Queues {
			var from time.Time // each pass walks the queue's jobs once, oldest first
			for ctx.Err() == nil {
				n, last, err := st.Prune(ctx, q.Name, q.KeyRetention, 500, from)
				from = last
				if err != nil {
					if ctx.Err() == nil {
						log.Warn("pruning failed", "queue", q.Name, "error", err)
					}
					break
				}
				if n > 0 {
					log.Info("pruned finished jobs", "queue", q.Name, "count", n)
				}
				if n < 500 {
					break
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
