package worker

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/pubq/pubq/pkg/job"
)

// PanicError is what a recovered handler panic becomes; it is retried like any error.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("pubq: handler panicked: %v", e.Value) }

// Recover turns a handler panic into a *PanicError so one bad job cannot take the worker down.
// The worker installs it innermost, under any middleware added with Mux.Use.
func Recover(next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, j *job.Job) (err error) {
		defer func() {
			if v := recover(); v != nil {
				err = &PanicError{Value: v, Stack: debug.Stack()}
			}
		}()
		return next.Work(ctx, j)
	})
}
