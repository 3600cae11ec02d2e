package coltype

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// randomScalar assembles input strings for the non-date types from valid and invalid pieces.
func randomScalar(r *rand.Rand, t Type) string {
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	var b strings.Builder
	rep := func(n int, f func()) {
		for range n {
			f()
		}
	}
	b.WriteString(pick("", "", " ", "\t", "\n "))
	switch t {
	case Int2, Int4, Int8, Numeric, Float8:
		b.WriteString(pick("", "", "-", "+", "--", "+-"))
		rep(r.IntN(22), func() { b.WriteString(pick("0", "1", "9", "3", "7", "5")) })
		if r.IntN(2) == 0 {
			b.WriteString(pick(".", ".", ".."))
			rep(r.IntN(6), func() { b.WriteString(pick("0", "1", "5", "9")) })
		}
		if r.IntN(4) == 0 {
			b.WriteString(pick("e", "E", "e+", "e-", "E-"))
			rep(r.IntN(4), func() { b.WriteString(pick("0", "1", "3", "9")) })
		}
		if r.IntN(8) == 0 {
			b.WriteString(pick("NaN", "nan", "Infinity", "inf", "-inf", "infinity", "x", "_", "0x1p3", " 1", "1_000"))
		}
	case Bool:
		b.WriteString(pick("t", "tr", "tru", "true", "truex", "T", "TRUE", "y", "ye", "yes", "Yes", "on", "o", "ON", "of", "off", "offf",
			"f", "fa", "fals", "false", "n", "no", "nope", "1", "0", "2", "10", "", "t rue"))
	case UUID:
		if r.IntN(5) == 0 {
			b.WriteString("{")
		}
		for i := range 32 + r.IntN(3) - 1 {
			b.WriteString(pick("a", "0", "F", "9", "e", "g"[:r.IntN(20)/19]))
			if i%4 == 3 && r.IntN(3) == 0 {
				b.WriteString("-")
			}
		}
		if r.IntN(5) == 0 {
			b.WriteString("}")
		}
	case Bytea:
		if r.IntN(2) == 0 {
			b.WriteString(`\x`)
			rep(r.IntN(10), func() { b.WriteString(pick("0", "a", "F", "9", " ", "g", "\n")) })
		} else {
			rep(r.IntN(8), func() { b.WriteString(pick("a", `\\`, `\`, `\001`, `\377`, `\400`, `\18`, "z", `\x`, "'")) })
		}
	}
	b.WriteString(pick("", "", " ", "\n"))
	return b.String()
}

// scalarsAgainstPostgres: random inputs are accepted or refused as PostgreSQL does, and accepted ones
// have PostgreSQL's value.
func scalarsAgainstPostgres(t *testing.T, query func(tz, sql string, format int16, args ...string) ([]byte, error), seed uint64, n int) {
	r := rand.New(rand.NewPCG(seed, 5))
	types := []Type{Int2, Int4, Int8, Numeric, Float8, Bool, UUID, Bytea}
	for range n {
		ty := types[r.IntN(len(types))]
		in := randomScalar(r, ty)
		ours, err := Canonical(ty, TextFormat, []byte(in), nil)
		sql := fmt.Sprintf("SELECT $1::%s", ty)
		if ty == Numeric {
			sql = "SELECT trim_scale($1::numeric)"
		}
		pg, pgErr := query("", sql, BinaryFormat, in)
		if ty == Float8 && pgErr == nil && len(pg) == 8 {
			pg = appendFloat8(nil, math.Float64frombits(uint64(pg[0])<<56|uint64(pg[1])<<48|uint64(pg[2])<<40|uint64(pg[3])<<32|uint64(pg[4])<<24|uint64(pg[5])<<16|uint64(pg[6])<<8|uint64(pg[7])))
		}
		if ty == Numeric && pgErr == nil && len(pg) == 8 && pg[4]&0xC0 == 0xC0 {
			pg[6], pg[7] = 0, 0 // PostgreSQL sends a dscale with NaN and infinities; we store 0
		}
		agreeWithPostgres(t, fmt.Sprintf("%s %q", ty, in), ours, err, pg, pgErr)
	}
}
