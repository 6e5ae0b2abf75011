package main

import "testing"

func TestSentOf(t *testing.T) {
	for in, want := range map[string]int64{
		`{"sent":1732560000123456789}`: 1732560000123456789, // the shape the bench writes
		`{"sent": 42, "x": true}`:      42,                  // other JSON: encoding/json
		`{"sent":12x}`:                 0,                   // malformed: no time
		`{}`:                           0,
		``:                             0,
	} {
		if got := sentOf([]byte(in)); got != want {
			t.Errorf("sentOf(%q) = %d, want %d", in, got, want)
		}
	}
}
