package retry_test

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/pubq/pubq/pkg/retry"
)

// With a seeded source the jittered schedule is reproducible; Base shows the delays before jitter.
func ExamplePolicy_Delay() {
	p, _ := retry.New(time.Second, 2, 30*time.Second, 0.5, 8, rand.NewPCG(1, 2))
	for attempt := 1; attempt <= 6; attempt++ {
		d := p.Delay(attempt)
		fmt.Printf("attempt %d failed: base %s, jittered within [%s, %s]: %v\n", attempt, p.Base(attempt),
			p.Base(attempt)/2, p.Base(attempt)*3/2, d >= p.Base(attempt)/2 && d <= p.Base(attempt)*3/2)
	}
	// Output:
	// attempt 1 failed: base 1s, jittered within [500ms, 1.5s]: true
	// attempt 2 failed: base 2s, jittered within [1s, 3s]: true
	// attempt 3 failed: base 4s, jittered within [2s, 6s]: true
	// attempt 4 failed: base 8s, jittered within [4s, 12s]: true
	// attempt 5 failed: base 16s, jittered within [8s, 24s]: true
	// attempt 6 failed: base 30s, jittered within [15s, 45s]: true
}
