// Package inspect is pubq's on-call surface, the one place both pubqctl and the web dashboard use
// (modelled on Asynq's Inspector): find any job by its idempotency key and see why it failed, list
// jobs by queue, kind, state and time with keyset pagination, summarise queues, and act on jobs.
//
// Reads:
//
//   - Job: one job with every attempt (pubq.attempts plus the current or final one from pubq.jobs),
//     its next retry time, trace id, operator history, and its payload only when asked for.
//   - List: a page of jobs matching a Filter; Page.Next is the cursor of the next page.
//   - Stats: per queue, counts by state, stuck jobs (running with an expired lease), what finished
//     in a window, the oldest waiting job and throughput.
//
// Actions (RetryNow, CancelRetry, Replay, Purge) take the operator's name (the actor), run each
// change in one transaction together with its pubq.audit row, are idempotent — acting on a job that is
// no longer in the state the action needs changes nothing and says so — and return what they did.
// A replayed dead job keeps its key, starts again at attempt 0 with a bumped fence, and is republished
// through the outbox with its stored payload and a pubq_prev_traceparent attribute that links the new
// trace to the dead attempt's.
//
// Rescuer runs store.Rescue periodically: running jobs whose worker vanished (lease expired more than
// a grace period ago, and no redelivery took them over) are rescheduled through the outbox.
package inspect
