package coltype

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// randomAgainstPostgres compares random values with PostgreSQL: wall times around every kind of
// transition read in tricky zones, instants rendered in them, float8 bit patterns and decimals.
func randomAgainstPostgres(t *testing.T, query func(tz, sql string, format int16, args ...string) ([]byte, error)) {
	r := rand.New(rand.NewPCG(2024, 1))
	zones := []string{"America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Tehran",
		"America/Sao_Paulo", "Pacific/Apia", "Europe/Moscow", "Africa/Casablanca", "Europe/Dublin", "Asia/Kolkata"}
	t.Run("timestamptz", func(t *testing.T) {
		for range 150 {
			tz := zones[r.IntN(len(zones))]
			loc, err := time.LoadLocation(tz)
			if err != nil {
				t.Fatal(err)
			}
			// A wall time within an hour and a half of a transition, half of the time.
			year := 1900 + r.IntN(140)
			wall := time.Date(year, time.Month(1+r.IntN(12)), 1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(1000000)*1000, time.UTC)
			if r.IntN(2) == 0 {
				if tr, ok := nextTransition(loc, wall); ok {
					wall = tr.Add(time.Duration(r.IntN(180)-90) * time.Minute).In(loc)
					wall = time.Date(wall.Year(), wall.Month(), wall.Day(), wall.Hour(), wall.Minute(), wall.Second(), 0, time.UTC)
				}
			}
			in := wall.Format("2006-01-02 15:04:05.999999")
			s := &Session{TimeZone: loc}
			canon, err := Canonical(Timestamptz, TextFormat, []byte(in), s)
			if err != nil {
				t.Fatal(err)
			}
			pgBin, err := query(tz, "SELECT $1::timestamptz", BinaryFormat, in)
			if err != nil {
				t.Fatal(err)
			}
			pgText, err := query(tz, "SELECT $1::timestamptz", TextFormat, in)
			if err != nil {
				t.Fatal(err)
			}
			ours, _ := Render(Timestamptz, TextFormat, canon, s)
			if !bytes.Equal(canon, pgBin) || string(ours) != string(pgText) {
				t.Errorf("%s in %s: ours %s (%x), PostgreSQL %s (%x)", in, tz, ours, canon, pgText, pgBin)
			}
		}
	})
	t.Run("float8", func(t *testing.T) {
		for i := range 900 {
			var f float64
			switch i % 3 {
			case 0:
				f = math.Float64frombits(r.Uint64())
			case 1:
				f = (r.Float64() - 0.5) * math.Pow(10, float64(r.IntN(40)-20))
			default:
				f = float64(r.Int64N(1<<53)) / math.Pow(10, float64(r.IntN(20)))
			}
			if math.IsNaN(f) || math.IsInf(f, 0) {
				continue
			}
			ours := appendFloat8Text(nil, f)
			pg, err := query("", "SELECT $1::float8", TextFormat, string(ours))
			if err != nil {
				t.Fatalf("%s: %v", ours, err)
			}
			if string(pg) != string(ours) {
				t.Errorf("%b: ours %s, PostgreSQL %s", f, ours, pg)
			}
		}
	})
	t.Run("jsonb", func(t *testing.T) {
		valid := 0
		defer func() {
			if valid < 200 {
				t.Errorf("only %d of 300 random documents were valid", valid)
			}
		}()
		for range 300 {
			var b strings.Builder
			randomJSON(r, &b, 0)
			in := b.String()
			if r.IntN(4) == 0 && len(in) > 0 { // break it somewhere: PostgreSQL must agree it is broken
				at := r.IntN(len(in))
				ins := []string{"", ",", "\\", "\"", "}", "]", "\x00", "\x01", "01", "-", ".", "e", "\\u", "\\ud800", "\xff", "tru", "NaN"}[r.IntN(17)]
				in = in[:at] + ins + in[at+r.IntN(2):]
			}
			canon, err := Canonical(JSONB, TextFormat, []byte(in), nil)
			pg, pgErr := query("", "SELECT $1::jsonb", TextFormat, in)
			if (err == nil) != (pgErr == nil) {
				t.Fatalf("%s: ours %v, PostgreSQL %v", in, err, pgErr)
			}
			if err != nil {
				continue
			}
			valid++
			if string(canon[1:]) != string(pg) {
				// A mutation can make a number with trailing fractional zeros, which we normalize
				// (1.50 -> 1.5) and PostgreSQL prints as written: the values must still be equal.
				if again, err := Canonical(JSONB, TextFormat, pg, nil); err == nil && bytes.Equal(again, canon) {
					continue
				}
				t.Errorf("%s: ours %s, PostgreSQL %s", in, canon[1:], pg)
			}
		}
	})
	t.Run("numeric", func(t *testing.T) {
		for range 200 {
			var b strings.Builder
			if r.IntN(2) == 0 {
				b.WriteByte('-')
			}
			for range r.IntN(25) {
				b.WriteByte(byte('0' + r.IntN(10)))
			}
			if r.IntN(3) > 0 {
				b.WriteByte('.')
				for range 1 + r.IntN(25) {
					b.WriteByte(byte('0' + r.IntN(10)))
				}
			} else {
				b.WriteByte(byte('0' + r.IntN(10)))
			}
			if r.IntN(4) == 0 {
				fmt.Fprintf(&b, "e%d", r.IntN(60)-30)
			}
			in := b.String()
			canon, err := Canonical(Numeric, TextFormat, []byte(in), nil)
			if err != nil {
				t.Fatalf("%s: %v", in, err)
			}
			pgBin, err := query("", "SELECT trim_scale($1::numeric)", BinaryFormat, in)
			if err != nil {
				t.Fatal(err)
			}
			pgText, err := query("", "SELECT trim_scale($1::numeric)", TextFormat, in)
			if err != nil {
				t.Fatal(err)
			}
			ours, _ := Render(Numeric, TextFormat, canon, nil)
			if !bytes.Equal(canon, pgBin) || string(ours) != string(pgText) {
				t.Errorf("%s: ours %s (%x), PostgreSQL %s (%x)", in, ours, canon, pgText, pgBin)
			}
		}
	})
}

// randomJSON writes a random document: nested objects with short, colliding and non-ASCII keys,
// escapes, and numbers whose scale PostgreSQL keeps the same as ours (no trailing fractional zero).
func randomJSON(r *rand.Rand, b *strings.Builder, depth int) {
	keys := []string{"a", "b", "aa", "ab", "ba", "", "é", "z\u00e9", `\n`, "long key", "a"}
	ws := func() {
		if r.IntN(4) == 0 {
			b.WriteString([]string{" ", "\n", "\t", "  "}[r.IntN(4)])
		}
	}
	ws()
	switch k := r.IntN(9); {
	case k < 2 && depth < 4:
		b.WriteByte('{')
		for i := range r.IntN(5) {
			if i > 0 {
				b.WriteByte(',')
			}
			ws()
			b.WriteString(`"` + keys[r.IntN(len(keys))] + `"`)
			ws()
			b.WriteByte(':')
			randomJSON(r, b, depth+1)
		}
		b.WriteByte('}')
	case k < 4 && depth < 4:
		b.WriteByte('[')
		for i := range r.IntN(4) {
			if i > 0 {
				b.WriteByte(',')
			}
			randomJSON(r, b, depth+1)
		}
		b.WriteByte(']')
	case k < 6:
		if r.IntN(2) == 0 {
			b.WriteByte('-')
		}
		fmt.Fprintf(b, "%d", r.IntN(100000))
		if r.IntN(2) == 0 {
			fmt.Fprintf(b, ".%d%d", r.IntN(1000), 1+r.IntN(9))
		}
		if r.IntN(3) == 0 {
			fmt.Fprintf(b, "e%d", r.IntN(10))
		}
	case k < 8:
		b.WriteString(`"`)
		for range r.IntN(6) {
			b.WriteString([]string{"x", "é", `\"`, `\\`, `\/`, `\u0041`, `\u00e9`, `\ud83d\ude00`, `\b`, `\u001f`, "\u007f"}[r.IntN(11)])
		}
		b.WriteString(`"`)
	default:
		b.WriteString([]string{"true", "false", "null"}[r.IntN(3)])
	}
	ws()
}

// nextTransition finds the first offset change of loc after from, within two years.
func nextTransition(loc *time.Location, from time.Time) (time.Time, bool) {
	_, off := from.In(loc).Zone()
	for d := time.Duration(0); d < 2*365*24*time.Hour; d += 6 * time.Hour {
		if _, o := from.Add(d).In(loc).Zone(); o != off {
			lo, hi := from.Add(d-6*time.Hour), from.Add(d)
			for hi.Sub(lo) > time.Second {
				mid := lo.Add(hi.Sub(lo) / 2)
				if _, o := mid.In(loc).Zone(); o == off {
					lo = mid
				} else {
					hi = mid
				}
			}
			return hi, true
		}
	}
	return time.Time{}, false
}
