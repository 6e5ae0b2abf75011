package store

import (
	"encoding/hex"
	"strconv"
	"time"
)

// arrayLiteral builds a PostgreSQL array literal in text format, for the batched statements' columns.
// pgx encodes a []string element by element through interface values, one allocation per element; a
// literal costs one buffer per batch, and pgx sends a Go string argument as text, which the server
// parses with array_in.
type arrayLiteral []byte

func newArrayLiteral(capacity int) arrayLiteral { return append(make(arrayLiteral, 0, capacity), '{') }

func (a *arrayLiteral) sep() {
	if len(*a) > 1 {
		*a = append(*a, ',')
	}
}

// addString appends s quoted: inside double quotes only '"' and '\' need a backslash.
func (a *arrayLiteral) addString(s string) {
	a.sep()
	b := append(*a, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	*a = append(b, '"')
}

func (a *arrayLiteral) addInt(n int64) {
	a.sep()
	*a = strconv.AppendInt(*a, n, 10)
}

// addHex appends p as hex digits (decode(x, 'hex') in SQL), or NULL for nil.
func (a *arrayLiteral) addHex(p []byte) {
	a.sep()
	if p == nil {
		*a = append(*a, "NULL"...)
		return
	}
	*a = hex.AppendEncode(*a, p)
	if len(p) == 0 {
		*a = append(*a, `""`...) // an empty, not a missing, element
	}
}

// addMicros appends t as microseconds since the Unix epoch (exact, unlike a float8 of seconds).
func (a *arrayLiteral) addMicros(t time.Time) { a.addInt(t.UnixMicro()) }

func (a arrayLiteral) String() string { return string(append(a, '}')) }
