package retry_test

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pubq/pubq/pkg/retry"
)

func TestBaseSchedule(t *testing.T) {
	p, err := retry.New(time.Second, 2, 10*time.Second, 0, 6, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{1, 2, 4, 8, 10, 10, 10}
	for i, w := range want {
		if got := p.Delay(i + 1); got != w*time.Second {
			t.Errorf("attempt %d: delay %s, want %s", i+1, got, w*time.Second)
		}
	}
	if p.Exhausted(5) || !p.Exhausted(6) {
		t.Error("Exhausted must be true from the last attempt on")
	}
}

// fixed is a rand.Source returning a chosen value, so jitter is deterministic.
type fixed uint64

func (f fixed) Uint64() uint64 { return uint64(f) }

func TestJitterBoundsAndDeterminism(t *testing.T) {
	lo, _ := retry.New(4*time.Second, 2, time.Hour, 0.5, 10, fixed(0))
	hi, _ := retry.New(4*time.Second, 2, time.Hour, 0.5, 10, fixed(^uint64(0)))
	if d := lo.Delay(1); d != 2*time.Second {
		t.Errorf("lowest draw: %s, want 2s", d)
	}
	if d := hi.Delay(1); d < 5999*time.Millisecond || d > 6*time.Second {
		t.Errorf("highest draw: %s, want ~6s", d)
	}
	a, _ := retry.New(time.Second, 2, time.Minute, 0.5, 10, rand.NewPCG(1, 2))
	b, _ := retry.New(time.Second, 2, time.Minute, 0.5, 10, rand.NewPCG(1, 2))
	for i := 1; i < 20; i++ {
		if a.Delay(i) != b.Delay(i) {
			t.Fatal("same seed must give the same schedule")
		}
	}
}

// Jitter must spread retries: 1000 draws of one attempt land in many distinct 100 ms buckets and
// stay within [d(1-r), d(1+r)].
func TestJitterSpreads(t *testing.T) {
	p, _ := retry.New(10*time.Second, 2, time.Hour, 0.5, 10, rand.NewPCG(7, 7))
	buckets := map[time.Duration]int{}
	for range 1000 {
		d := p.Delay(1)
		if d < 5*time.Second || d > 15*time.Second {
			t.Fatalf("delay %s outside [5s, 15s]", d)
		}
		buckets[d/(100*time.Millisecond)]++
	}
	peak := 0
	for _, n := range buckets {
		peak = max(peak, n)
	}
	if len(buckets) < 80 || peak > 30 {
		t.Fatalf("jitter does not spread: %d buckets, peak %d", len(buckets), peak)
	}
}

func TestNewValidates(t *testing.T) {
	bad := []func() (*retry.Policy, error){
		func() (*retry.Policy, error) { return retry.New(0, 2, time.Second, 0, 1, nil) },
		func() (*retry.Policy, error) { return retry.New(time.Second, 0.5, time.Second, 0, 1, nil) },
		func() (*retry.Policy, error) { return retry.New(time.Second, 2, time.Millisecond, 0, 1, nil) },
		func() (*retry.Policy, error) { return retry.New(time.Second, 2, time.Second, 1, 1, nil) },
		func() (*retry.Policy, error) { return retry.New(time.Second, 2, time.Second, 0, 0, nil) },
	}
	for i, f := range bad {
		if _, err := f(); err == nil {
			t.Errorf("case %d: want an error", i)
		}
	}
}

// Policies sharing one source (the worker gives every queue×kind policy the same one) must not race
// on it: run under -race.
func TestSharedSourceIsSafe(t *testing.T) {
	src := retry.NewLockedSource(rand.NewPCG(1, 2))
	a, err := retry.New(time.Second, 2, time.Minute, 0.5, 5, src)
	if err != nil {
		t.Fatal(err)
	}
	b, err := retry.New(time.Second, 2, time.Minute, 0.5, 5, src)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, p := range []*retry.Policy{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				if d := p.Delay(1 + i%4); d <= 0 {
					t.Errorf("delay %s", d)
					return
				}
			}
		}()
	}
	wg.Wait()
}
