package main

import (
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/worker"
)

// registerPlatformJobs registers the edtech platform's jobs (account merge, duplicate scan).
func registerPlatformJobs(mux *worker.Mux, st *store.Store) {}
