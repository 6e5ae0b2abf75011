package store

import (
	"strings"
	"testing"
	"time"
)

func TestArrayLiteral(t *testing.T) {
	a := newArrayLiteral(0)
	for _, s := range []string{"plain", `q"uote`, `back\slash`, "", ",{} NULL"} {
		a.addString(s)
	}
	if got, want := a.String(), `{"plain","q\"uote","back\\slash","",",{} NULL"}`; got != want {
		t.Fatalf("strings: %s, want %s", got, want)
	}
	b := newArrayLiteral(0)
	b.addHex([]byte("{}"))
	b.addHex(nil)
	b.addHex([]byte{})
	b.addInt(-7)
	b.addMicros(time.Unix(1, 2000))
	if got, want := b.String(), `{7b7d,NULL,"",-7,1000002}`; got != want {
		t.Fatalf("mixed: %s, want %s", got, want)
	}
	if got := newArrayLiteral(0).String(); got != "{}" {
		t.Fatalf("empty: %s", got)
	}
}

func TestCompareKey(t *testing.T) {
	for _, c := range [][2]string{{"", ""}, {"a", ""}, {"", "a"}, {"ab", "a"}, {"a", "ab"}, {"abc", "abd"}, {"é", "e"}, {"k-10", "k-9"}, {"x", "x"}} {
		if got, want := compareKey(c[0], []byte(c[1])), strings.Compare(c[0], c[1]); got != want {
			t.Errorf("compareKey(%q, %q) = %d, want %d", c[0], c[1], got, want)
		}
	}
}
