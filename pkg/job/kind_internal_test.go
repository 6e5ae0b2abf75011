package job

import (
	"regexp"
	"testing"
	"unicode"
)

// FuzzKindSyntax checks the hand-written kind check against the documented regular expression.
func FuzzKindSyntax(f *testing.F) {
	for _, s := range []string{"", "a", "email.send", "a.b.c", "a..b", ".a", "a.", "1a", "a1_", "a._b", "A", "a-b", "é", "a.b2_c.d"} {
		f.Add(s)
	}
	re := regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validKindSyntax(s), re.MatchString(s); got != want {
			t.Fatalf("validKindSyntax(%q) = %v, the regexp says %v", s, got, want)
		}
	})
}

// FuzzKeyASCIIFastPath checks that the ASCII fast path of ValidateKey agrees with the rune check.
func FuzzKeyASCIIFastPath(f *testing.F) {
	for _, s := range []string{"a", "welcome:42", " ", "\x7f", "\x1f", "~", "a\tb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !printableASCII(s) {
			return
		}
		for _, r := range s {
			if !unicode.IsPrint(r) {
				t.Fatalf("%q passes the ASCII fast path but %q is not printable", s, r)
			}
		}
	})
}
