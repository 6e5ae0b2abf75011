package store

import (
	"testing"
	"time"
)

func TestClassifyState(t *testing.T) {
	for _, c := range []struct {
		state string
		wait  float64
		due   bool
		want  ClaimResult
	}{
		{"succeeded", 0, true, ClaimResult{Status: Done, State: "succeeded"}},
		{"dead", 0, true, ClaimResult{Status: Done, State: "dead"}},
		{"cancelled", 0, false, ClaimResult{Status: Done, State: "cancelled"}},
		{"running", 2.5, true, ClaimResult{Status: Busy, State: "running", Wait: 2500 * time.Millisecond}},
		// Released by its holder between the claim and this read: nothing else will deliver it, so the
		// delivery must ask again rather than ack.
		{"pending", 0, true, ClaimResult{Status: Busy, State: "pending"}},
		{"pending", 0, false, ClaimResult{Status: NotDue, State: "pending"}},
		// A retry or delayed run: the outbox owns its delivery.
		{"scheduled", 0, false, ClaimResult{Status: NotDue, State: "scheduled"}},
		{"scheduled", 0, true, ClaimResult{Status: NotDue, State: "scheduled"}},
	} {
		if got := classifyState(c.state, c.wait, c.due); got != c.want {
			t.Errorf("classifyState(%q, %v, %v) = %+v, want %+v", c.state, c.wait, c.due, got, c.want)
		}
	}
}
