package coltype

import (
	"bytes"
	"fmt"
	"math"
	"math/big"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// What pgx sends in binary for a Go value must have the canonical form of the same value in text.
func TestPgxBinaryParameters(t *testing.T) {
	m := pgtype.NewMap()
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		t    Type
		v    any
		text string
	}{
		{"int2", Int2, int16(-7), "-7"},
		{"int4", Int4, int32(42), "42"},
		{"int8", Int8, int64(-9223372036854775808), "-9223372036854775808"},
		{"numeric scale kept by driver", Numeric, pgtype.Numeric{Int: big.NewInt(1250), Exp: -2, Valid: true}, "12.5"},
		{"numeric large exponent", Numeric, pgtype.Numeric{Int: big.NewInt(3), Exp: 25, Valid: true}, "3e25"},
		{"numeric negative fraction", Numeric, pgtype.Numeric{Int: big.NewInt(-5), Exp: -10, Valid: true}, "-0.0000000005"},
		{"numeric zero with scale", Numeric, pgtype.Numeric{Int: big.NewInt(0), Exp: -3, Valid: true}, "0"},
		{"numeric NaN", Numeric, pgtype.Numeric{NaN: true, Valid: true}, "NaN"},
		{"numeric infinity", Numeric, pgtype.Numeric{InfinityModifier: pgtype.Infinity, Valid: true}, "Infinity"},
		{"float8", Float8, 0.1, "0.1"},
		{"float8 negative zero", Float8, pgtype.Float8{Float64: negZero(), Valid: true}, "0"},
		{"bool", Bool, true, "yes"},
		{"date", Date, time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), "2024-02-29"},
		{"timestamp", Timestamp, time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC), "2024-01-02 03:04:05.123456"},
		{"timestamptz", Timestamptz, time.Date(2024, 7, 2, 3, 4, 5, 500000000, paris), "2024-07-02 01:04:05.5Z"},
		{"uuid", UUID, [16]byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{"jsonb", JSONB, map[string]any{"b": 1, "a": []any{true, nil}}, `{"a":[true,null],"b":1}`},
		{"bytea", Bytea, []byte{0, 0xff}, `\x00ff`},
		{"text", Text, "héllo", "héllo"},
		{"varchar", Varchar, "v", "v"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bin, err := m.Encode(c.t.OID(), pgtype.BinaryFormatCode, c.v, nil)
			if err != nil {
				t.Fatal(err)
			}
			fromBin, err := Canonical(c.t, BinaryFormat, bin, nil)
			if err != nil {
				t.Fatalf("binary %x: %v", bin, err)
			}
			fromText, err := Canonical(c.t, TextFormat, []byte(c.text), nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(fromBin, fromText) {
				t.Fatalf("binary %x -> %x, text %q -> %x", bin, fromBin, c.text, fromText)
			}
			// And pgx decodes what we render in binary back to the same text.
			out, err := Render(c.t, BinaryFormat, fromBin, nil)
			if err != nil {
				t.Fatal(err)
			}
			var ours, theirs any
			if err := m.Scan(c.t.OID(), pgtype.BinaryFormatCode, out, &ours); err != nil {
				t.Fatalf("pgx cannot scan our binary output: %v", err)
			}
			if err := m.Scan(c.t.OID(), pgtype.BinaryFormatCode, bin, &theirs); err != nil {
				t.Fatal(err)
			}
			switch o := ours.(type) {
			case time.Time:
				if !o.Equal(theirs.(time.Time)) {
					t.Fatalf("pgx reads our output as %v, its own input as %v", o, theirs)
				}
			case pgtype.Numeric: // scale may differ; the value may not
				a, _ := o.Float64Value()
				b, _ := theirs.(pgtype.Numeric).Float64Value()
				if a != b && !(math.IsNaN(a.Float64) && math.IsNaN(b.Float64)) {
					t.Fatalf("pgx reads our output as %v, its own input as %v", a, b)
				}
			case float64: // -0 is stored as 0: equal as numbers
				if o != theirs.(float64) && !(math.IsNaN(o) && math.IsNaN(theirs.(float64))) {
					t.Fatalf("pgx reads our output as %v, its own input as %v", o, theirs)
				}
			default:
				if fmt.Sprint(ours) != fmt.Sprint(theirs) {
					t.Fatalf("pgx reads our output as %v, its own input as %v", ours, theirs)
				}
			}
		})
	}
}

func negZero() float64 {
	z := 0.0
	return -z
}

// Inputs PostgreSQL refuses in binary are refused.
func TestBinaryRejects(t *testing.T) {
	cases := []struct {
		name string
		t    Type
		in   []byte
	}{
		{"int4 short", Int4, []byte{0, 0, 1}},
		{"int8 long", Int8, make([]byte, 9)},
		{"float8 short", Float8, make([]byte, 7)},
		{"bool empty", Bool, nil},
		{"bool two bytes", Bool, []byte{1, 0}},
		{"uuid short", UUID, make([]byte, 15)},
		{"date out of range", Date, []byte{0x7f, 0xff, 0xff, 0xf0}},
		{"timestamp out of range", Timestamp, []byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0}},
		{"numeric short", Numeric, []byte{0, 1, 0, 0}},
		{"numeric digit count", Numeric, []byte{0, 2, 0, 0, 0, 0, 0, 0, 0, 1}},
		{"numeric bad digit", Numeric, []byte{0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10}},
		{"numeric bad sign", Numeric, []byte{0, 0, 0, 0, 0x12, 0x34, 0, 0}},
		{"numeric bad dscale", Numeric, []byte{0, 0, 0, 0, 0, 0, 0x40, 0}},
		{"jsonb version 2", JSONB, []byte("\x02{}")},
		{"jsonb empty", JSONB, nil},
		{"text invalid utf8", Text, []byte{0xff}},
		{"text NUL", Text, []byte{'a', 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got, err := Canonical(c.t, BinaryFormat, c.in, nil); err == nil {
				t.Fatalf("accepted as %x", got)
			}
		})
	}
}

// Corrupt canonical bytes are an error, never a panic or a wrong value.
func TestRenderCorrupt(t *testing.T) {
	for _, ty := range Types() {
		for _, b := range [][]byte{nil, {1, 2, 3}, bytes.Repeat([]byte{0xff}, 9)} {
			if ty == Text || ty == Varchar || ty == Bytea || ty == JSONB { // any bytes (after jsonb's version byte) are structurally valid
				continue
			}
			if _, err := Render(ty, TextFormat, b, nil); err == nil && !(ty == Numeric && len(b) == 0) {
				// any length other than the type's own must fail
				if len(b) != 8 || (ty != Float8 && ty != Int8 && ty != Timestamp && ty != Timestamptz) {
					t.Errorf("%s: rendered corrupt bytes %x", ty, b)
				}
			}
		}
	}
}

func TestTypes(t *testing.T) {
	seen := map[uint32]bool{}
	for _, ty := range Types() {
		if ty.OID() == 0 || seen[ty.OID()] {
			t.Fatalf("%s: OID %d", ty, ty.OID())
		}
		seen[ty.OID()] = true
		if back, ok := TypeForOID(ty.OID()); !ok || back != ty {
			t.Fatalf("TypeForOID(%d) = %v", ty.OID(), back)
		}
		for _, name := range []string{ty.String(), ty.SQLName(), "pg_catalog." + ty.String(), "  " + ty.SQLName() + " "} {
			if got, err := ParseType(name); err != nil || got != ty {
				t.Fatalf("ParseType(%q) = %v, %v", name, got, err)
			}
		}
	}
	for _, bad := range []string{"", "varchar(10)", "numeric(10,2)", "real", "json", "int4[]"} {
		if _, err := ParseType(bad); err == nil {
			t.Errorf("ParseType(%q) accepted", bad)
		}
	}
	if Type(0).OID() != 0 || Type(99).String() == "" {
		t.Fatal("invalid types")
	}
	// The proxy reads cast parameter types at every Bind: the parser's spellings cost no allocation.
	for _, name := range []string{"pg_catalog.int4", "pg_catalog.timestamptz", "text"} {
		if n := testing.AllocsPerRun(100, func() { ParseType(name) }); n != 0 {
			t.Errorf("ParseType(%q): %v allocations", name, n)
		}
	}
}
