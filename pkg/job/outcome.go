package job

import (
	"errors"
	"fmt"
	"time"
)

// Outcome is what happens to a job after an attempt.
type Outcome int

const (
	OutcomeSucceeded Outcome = iota // done; its effects are committed
	OutcomeRetry                    // failed; retried after the backoff (dead-lettered after the last attempt)
	OutcomeSnooze                   // not ready; run again after a given delay without using an attempt
	OutcomePermanent                // can never succeed; dead-lettered now
	OutcomeCancel                   // no longer wanted; stops without dead-lettering
)

func (o Outcome) String() string {
	switch o {
	case OutcomeSucceeded:
		return "succeeded"
	case OutcomeRetry:
		return "retry"
	case OutcomeSnooze:
		return "snooze"
	case OutcomePermanent:
		return "permanent"
	case OutcomeCancel:
		return "cancel"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// OutcomeError is an error that carries the outcome the handler wants. Plain errors mean OutcomeRetry.
type OutcomeError struct {
	Outcome Outcome
	Delay   time.Duration // OutcomeRetry: overrides the backoff when > 0; OutcomeSnooze: required
	Err     error
}

func (e *OutcomeError) Error() string {
	switch {
	case e.Outcome == OutcomeSnooze:
		return fmt.Sprintf("pubq: snoozed for %s", e.Delay)
	case e.Err == nil:
		return "pubq: " + e.Outcome.String()
	}
	return e.Err.Error()
}

func (e *OutcomeError) Unwrap() error { return e.Err }

// RetryAfter fails this attempt and asks for the next one after d instead of the backoff's delay.
func RetryAfter(d time.Duration, err error) error {
	return &OutcomeError{Outcome: OutcomeRetry, Delay: d, Err: err}
}

// Snooze puts the job back for d without using an attempt (e.g. a rate limit or a resource not ready).
func Snooze(d time.Duration) error { return &OutcomeError{Outcome: OutcomeSnooze, Delay: d} }

// Permanent fails the job for good: it is dead-lettered without further attempts.
func Permanent(err error) error { return &OutcomeError{Outcome: OutcomePermanent, Err: err} }

// Cancel stops the job without dead-lettering it (it is no longer wanted).
func Cancel(err error) error { return &OutcomeError{Outcome: OutcomeCancel, Err: err} }

// Classify maps a handler's return value to its outcome and delay (0 = use the backoff).
func Classify(err error) (Outcome, time.Duration) {
	if err == nil {
		return OutcomeSucceeded, 0
	}
	var oe *OutcomeError
	if errors.As(err, &oe) {
		return oe.Outcome, oe.Delay
	}
	return OutcomeRetry, 0
}
