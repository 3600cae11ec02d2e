package coltype

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func session(t *testing.T, tz string) *Session {
	t.Helper()
	if tz == "" {
		return &Session{}
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		t.Fatal(err)
	}
	return &Session{TimeZone: loc, DateStyle: "ISO, MDY"}
}

func caseName(c textCase) string {
	n := c.t.String() + "/" + strings.ReplaceAll(c.in, "/", "∕")
	if c.tz != "" {
		n += "@" + c.tz
	}
	return n
}

// Text in, canonical, text and binary out, binary back in: one value, one canonical form.
func TestTextCases(t *testing.T) {
	for _, c := range textCases {
		t.Run(caseName(c), func(t *testing.T) {
			s := session(t, c.tz)
			canon, err := Canonical(c.t, TextFormat, []byte(c.in), s)
			if c.err {
				var ve *ValueError
				if !errors.As(err, &ve) || ve.Type != c.t {
					t.Fatalf("err = %v, want a *ValueError for %s", err, c.t)
				}
				if c.unsupported != errors.Is(err, ErrUnsupported) {
					t.Fatalf("err = %v, ErrUnsupported expected: %t", err, c.unsupported)
				}
				if len(c.in) > 5 && strings.Contains(err.Error(), c.in) {
					t.Fatalf("error %q echoes the value", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Canonical: %v", err)
			}
			out, err := Render(c.t, TextFormat, canon, s)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if string(out) != c.want {
				t.Fatalf("text output %q, want %q", out, c.want)
			}
			// The text output is itself valid input with the same canonical form.
			again, err := Canonical(c.t, TextFormat, out, s)
			if err != nil || !bytes.Equal(again, canon) {
				t.Fatalf("re-reading the output: %x, %v; want %x", again, err, canon)
			}
			// Binary output is accepted as binary input and gives the same canonical form.
			bin, err := Render(c.t, BinaryFormat, canon, s)
			if err != nil {
				t.Fatalf("Render binary: %v", err)
			}
			fromBin, err := Canonical(c.t, BinaryFormat, bin, s)
			if err != nil || !bytes.Equal(fromBin, canon) {
				t.Fatalf("binary round trip: %x, %v; want %x", fromBin, err, canon)
			}
			// Appending keeps the prefix.
			app, err := AppendRender([]byte("p:"), c.t, TextFormat, canon, s)
			if err != nil || string(app) != "p:"+c.want {
				t.Fatalf("AppendRender = %q, %v", app, err)
			}
		})
	}
}

func TestDateStyles(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		style string
		t     Type
		in    string
		want  string
	}{
		{"ISO, MDY", Timestamptz, "2024-01-02 03:04:05.5+00", "2024-01-01 22:04:05.5-05"},
		{"SQL, MDY", Date, "2024-01-02", "01/02/2024"},
		{"SQL, DMY", Date, "2024-01-02", "02/01/2024"},
		{"SQL, DMY", Timestamptz, "2024-07-02 03:04:05.5+00", "01/07/2024 23:04:05.5 EDT"},
		{"Postgres, MDY", Timestamptz, "2024-01-02 03:04:05+00", "Mon Jan 01 22:04:05 2024 EST"},
		{"Postgres, DMY", Timestamp, "2024-01-02 03:04:05", "Tue 02 Jan 03:04:05 2024"},
		{"Postgres, MDY", Date, "0044-03-15 BC", "03-15-0044 BC"},
		{"German, DMY", Timestamp, "2024-01-02 03:04:05.25", "02.01.2024 03:04:05.25"},
	}
	for _, c := range cases {
		s := &Session{TimeZone: ny, DateStyle: c.style}
		canon, err := Canonical(c.t, TextFormat, []byte(c.in), s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Render(c.t, TextFormat, canon, s)
		if err != nil || string(got) != c.want {
			t.Errorf("%s %s %q: %q (%v), want %q", c.style, c.t, c.in, got, err, c.want)
		}
	}
	for _, style := range []string{"Klingon", "ISO, Klingon", "ISO,", "DMY"} {
		if _, err := Render(Date, TextFormat, []byte{0, 0, 0, 0}, &Session{DateStyle: style}); !errors.Is(err, ErrUnsupported) {
			t.Fatalf("DateStyle %q: %v", style, err)
		}
	}
}

// TestRenderDateTimeAllocs: text output of dates and timestamps, once per row in the proxy, does not
// allocate when dst has room (the DateStyle is read without splitting it into a slice).
func TestRenderDateTimeAllocs(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	s := &Session{TimeZone: ny, DateStyle: "Postgres, DMY"}
	for _, typ := range []Type{Date, Timestamp, Timestamptz} {
		canon := make([]byte, typ.Size())
		dst := make([]byte, 0, 128)
		if n := testing.AllocsPerRun(100, func() {
			if _, err := AppendRender(dst, typ, TextFormat, canon, s); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: %v allocations per render", typ, n)
		}
	}
}
