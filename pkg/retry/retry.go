package retry

import (
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Policy is a jittered exponential backoff. The zero value is not usable; build one with New.
type Policy struct {
	Initial       time.Duration
	Multiplier    float64
	Max           time.Duration
	Randomization float64 // 0 disables jitter
	MaxAttempts   int     // attempts in all, including the first

	rand *rand.Rand // over a *LockedSource: Delay runs concurrently
}

// LockedSource is a random source safe for concurrent use. Policies that share one source must share
// it through one LockedSource: each policy locking its own wrapper would still race on the state
// underneath.
type LockedSource struct {
	mu  sync.Mutex
	src rand.Source
}

// NewLockedSource wraps src (a PCG, say) for concurrent use.
func NewLockedSource(src rand.Source) *LockedSource { return &LockedSource{src: src} }

// Uint64 implements rand.Source.
func (l *LockedSource) Uint64() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.src.Uint64()
}

// New returns a policy; src is the random source for jitter (nil: a time-seeded PCG). A source that
// is not a *LockedSource is wrapped in one, so hand several policies one *LockedSource to share it.
func New(initial time.Duration, multiplier float64, max time.Duration, randomization float64, maxAttempts int, src rand.Source) (*Policy, error) {
	p := &Policy{Initial: initial, Multiplier: multiplier, Max: max, Randomization: randomization, MaxAttempts: maxAttempts}
	switch {
	case initial <= 0:
		return nil, errors.New("retry: initial must be positive")
	case multiplier < 1:
		return nil, errors.New("retry: multiplier must be at least 1")
	case max < initial:
		return nil, errors.New("retry: max must be at least initial")
	case randomization < 0 || randomization >= 1:
		return nil, errors.New("retry: randomization must be in [0, 1)")
	case maxAttempts < 1:
		return nil, errors.New("retry: max attempts must be at least 1")
	}
	if src == nil {
		src = rand.NewPCG(uint64(time.Now().UnixNano()), 0x9e3779b97f4a7c15)
	}
	ls, ok := src.(*LockedSource)
	if !ok {
		ls = NewLockedSource(src)
	}
	p.rand = rand.New(ls)
	return p, nil
}

// Base returns the delay before attempt+1 without jitter (attempt is the 1-based attempt that failed).
// It steps backoff/v4's ExponentialBackOff so the growth and capping are the library's.
func (p *Policy) Base(attempt int) time.Duration {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     p.Initial,
		RandomizationFactor: 0, // jitter is ours, from the injected source
		Multiplier:          p.Multiplier,
		MaxInterval:         p.Max,
		MaxElapsedTime:      0,
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}
	b.Reset()
	d := b.NextBackOff()
	for i := 1; i < attempt && d < p.Max; i++ {
		d = b.NextBackOff()
	}
	return d
}

// Delay returns the jittered delay before the attempt after attempt.
func (p *Policy) Delay(attempt int) time.Duration {
	d := p.Base(attempt)
	if p.Randomization == 0 {
		return d
	}
	f := p.rand.Float64()
	delta := p.Randomization * float64(d)
	lo := float64(d) - delta
	return time.Duration(lo + f*2*delta)
}

// Exhausted reports whether attempt was the last one allowed.
func (p *Policy) Exhausted(attempt int) bool { return attempt >= p.MaxAttempts }
