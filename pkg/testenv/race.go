//go:build race

package testenv

// raceEnabled reports whether this test binary was built with -race, so that
// the binaries it builds match it.
const raceEnabled = true
