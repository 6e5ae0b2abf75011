// Package retry computes the delay before a job's next attempt: exponential backoff with jitter, from
// cenkalti/backoff/v4's ExponentialBackOff, with the random source injected so schedules are testable.
//
// Jitter matters: when a dependency fails for many jobs at once, undithered delays bring every retry back
// in the same instant and knock the dependency over again. Each delay is drawn uniformly from
// [d·(1−r), d·(1+r)] where d = min(initial·multiplier^(attempt−1), max) and r is the randomization factor.
package retry
