package coltype

import (
	"bytes"
	"testing"
	"time"
)

// FuzzCanonical: no input panics, and every accepted value is a fixed point: its text output and its
// binary output read back to the same canonical bytes (the property deterministic equality rests on).
func FuzzCanonical(f *testing.F) {
	for _, c := range textCases {
		f.Add(uint8(c.t), false, []byte(c.in))
		if canon, err := Canonical(c.t, TextFormat, []byte(c.in), nil); err == nil {
			f.Add(uint8(c.t), true, canon)
		}
	}
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		f.Fatal(err)
	}
	s := &Session{TimeZone: ny}
	f.Fuzz(func(t *testing.T, ty uint8, binary bool, in []byte) {
		typ := Types()[int(ty)%len(Types())]
		format := TextFormat
		if binary {
			format = BinaryFormat
		}
		canon, err := Canonical(typ, format, in, s)
		if err != nil {
			return
		}
		text, err := Render(typ, TextFormat, canon, s)
		if err != nil {
			t.Fatalf("%s: accepted value does not render: %v", typ, err)
		}
		again, err := Canonical(typ, TextFormat, text, s)
		if err != nil || !bytes.Equal(again, canon) {
			t.Fatalf("%s: text output %q reads back as %x (%v), want %x", typ, text, again, err, canon)
		}
		bin, err := Render(typ, BinaryFormat, canon, s)
		if err != nil {
			t.Fatalf("%s: binary render: %v", typ, err)
		}
		again, err = Canonical(typ, BinaryFormat, bin, s)
		if err != nil || !bytes.Equal(again, canon) {
			t.Fatalf("%s: binary output reads back as %x (%v), want %x", typ, again, err, canon)
		}
	})
}

// FuzzParseLiteral: no literal, cast or type modifier panics, and what is accepted is a canonical value
// of the column's type (it renders, and the rendering reads back to the same bytes).
func FuzzParseLiteral(f *testing.F) {
	for _, c := range literalCases {
		f.Add(uint8(c.col), uint8(c.lit.Kind), c.lit.Value, c.lit.Cast)
	}
	f.Fuzz(func(t *testing.T, col, kind uint8, value, cast string) {
		typ := Types()[int(col)%len(Types())]
		lit := Literal{Kind: LiteralKind(kind%4 + 0), Value: value, Cast: cast}
		canon, err := ParseLiteral(typ, lit, nil)
		if err != nil {
			return
		}
		text, err := Render(typ, TextFormat, canon, nil)
		if err != nil {
			t.Fatalf("%s: accepted literal does not render: %v", typ, err)
		}
		again, err := Canonical(typ, TextFormat, text, nil)
		if err != nil || !bytes.Equal(again, canon) {
			t.Fatalf("%s: %q reads back as %x (%v), want %x", typ, text, again, err, canon)
		}
	})
}
