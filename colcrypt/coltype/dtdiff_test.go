package coltype

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// randomDateTime assembles date/time strings from the pieces drivers and people write, valid or not.
func randomDateTime(r *rand.Rand) string {
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	var b strings.Builder
	b.WriteString(pick("", " ", "\t"))
	b.WriteString(pick("2024", "1999", "0001", "0044", "2000", "10000", "1", "24", "294276", "4713"))
	b.WriteString("-")
	b.WriteString(pick("01", "1", "02", "12", "13", "00", "2"))
	b.WriteString("-")
	b.WriteString(pick("01", "1", "29", "30", "31", "32", "00", "15"))
	if r.IntN(5) > 0 {
		b.WriteString(pick(" ", "T", "t", "  "))
		b.WriteString(pick("00", "0", "03", "12", "23", "24", "25"))
		b.WriteString(":")
		b.WriteString(pick("00", "04", "59", "60", "5"))
		if r.IntN(3) > 0 {
			b.WriteString(":")
			b.WriteString(pick("00", "05", "59", "60", "61", "5"))
			if r.IntN(2) > 0 {
				b.WriteString(pick(".", ".1", ".123456", ".1234565", ".9999995", ".0000005", ".5"))
			}
		}
	}
	if r.IntN(2) > 0 {
		b.WriteString(pick("", " "))
		b.WriteString(pick("Z", "z", "+00", "+01", "-05", "+0530", "+05:30", "-03:30", "+02:00:30", "+14", "+15", "+15:59", "+16", "-1", "+1:00",
			"UTC", "utc", "GMT", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Mars/Olympus"))
	}
	if r.IntN(6) == 0 {
		b.WriteString(pick(" BC", " AD", " bc", "BC"))
	}
	b.WriteString(pick("", " ", "\n"))
	return b.String()
}

// dateTimesAgainstPostgres: random date/time strings are accepted or refused as PostgreSQL does, and
// accepted ones give PostgreSQL's value (we may refuse on purpose, with ErrUnsupported).
func dateTimesAgainstPostgres(t *testing.T, query func(tz, sql string, format int16, args ...string) ([]byte, error), seed uint64, n int) {
	r := rand.New(rand.NewPCG(seed, 3))
	for range n {
		in := randomDateTime(r)
		ty := []Type{Date, Timestamp, Timestamptz}[r.IntN(3)]
		tz := []string{"", "America/New_York", "Asia/Kolkata"}[r.IntN(3)]
		ours, err := Canonical(ty, TextFormat, []byte(in), session(t, tz))
		pg, pgErr := query(tz, fmt.Sprintf("SELECT $1::%s", ty), BinaryFormat, in)
		agreeWithPostgres(t, fmt.Sprintf("%s %q (tz %q)", ty, in, tz), ours, err, pg, pgErr)
	}
}

// agreeWithPostgres reports where our reading of one input (ours, err) differs from PostgreSQL's
// (pg, pgErr): we accept what it refuses, refuse what it accepts (unless on purpose, ErrUnsupported),
// or read another value.
func agreeWithPostgres(t *testing.T, what string, ours []byte, err error, pg []byte, pgErr error) {
	t.Helper()
	switch {
	case err == nil && pgErr != nil:
		t.Errorf("%s: we accept, PostgreSQL refuses: %v", what, pgErr)
	case err != nil && pgErr == nil && !errors.Is(err, ErrUnsupported):
		t.Errorf("%s: we refuse (%v), PostgreSQL accepts", what, err)
	case err == nil && !bytes.Equal(ours, pg):
		t.Errorf("%s: ours %x, PostgreSQL %x", what, ours, pg)
	}
}
