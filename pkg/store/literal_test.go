package store

import (
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
