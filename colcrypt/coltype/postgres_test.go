package coltype

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/testenv"
)

// pgSessionOIDs connects to a fresh PostgreSQL and returns a function that runs one single-row,
// single-column query with text parameters (of the given type OIDs, nil for unspecified) and returns
// the raw value in the requested format.
func pgSessionOIDs(t *testing.T) (query func(tz, sql string, oids []uint32, format int16, args ...string) ([]byte, error)) {
	pg := testenv.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second) // a few seconds normally; generous for a loaded machine
	t.Cleanup(cancel)
	conn, err := pgx.Connect(ctx, pg.UserDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "SET DateStyle = 'ISO, MDY'"); err != nil {
		t.Fatal(err)
	}
	curTZ := ""
	return func(tz, sql string, oids []uint32, format int16, args ...string) ([]byte, error) {
		if tz == "" {
			tz = "UTC"
		}
		if tz != curTZ {
			set := "SET TimeZone = '" + tz + "'"
			if strings.HasPrefix(tz, "!") { // a SET TIME ZONE argument, verbatim
				set = "SET TIME ZONE " + tz[1:]
			}
			if _, err := conn.Exec(ctx, set); err != nil {
				t.Fatal(err)
			}
			curTZ = tz
		}
		params := make([][]byte, len(args))
		for i, a := range args {
			params[i] = []byte(a)
		}
		res := conn.PgConn().ExecParams(ctx, sql, params, oids, nil, []int16{format}).Read()
		if res.Err != nil {
			return nil, res.Err
		}
		if len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
			return nil, fmt.Errorf("%d rows", len(res.Rows))
		}
		return bytes.Clone(res.Rows[0][0]), nil
	}
}

// TestAgainstPostgres checks every case of the table against a real PostgreSQL: its text output must
// be ours, its binary output must be our canonical form (for numeric, after trim_scale), its binary
// output read back as binary input must give the same canonical form, and what it rejects we reject.
func TestAgainstPostgres(t *testing.T) {
	queryOIDs := pgSessionOIDs(t)
	query := func(tz, sql string, format int16, args ...string) ([]byte, error) {
		return queryOIDs(tz, sql, nil, format, args...)
	}
	t.Run("literals", func(t *testing.T) { literalsAgainstPostgres(t, queryOIDs) })
	t.Run("time zones", func(t *testing.T) { timeZonesAgainstPostgres(t, query) })
	t.Run("date styles", func(t *testing.T) { dateStylesAgainstPostgres(t, query) })
	t.Run("catalog", func(t *testing.T) {
		for _, ty := range Types() {
			got, err := query("", "SELECT oid::text || ' ' || typlen::text FROM pg_type WHERE oid = $1::regtype", TextFormat, ty.String())
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("%d %d", ty.OID(), ty.Size()); string(got) != want {
				t.Errorf("%s: pg_type says %q, we say %q", ty, got, want)
			}
		}
	})
	t.Run("random", func(t *testing.T) { randomAgainstPostgres(t, query) })
	t.Run("random date/time strings", func(t *testing.T) { dateTimesAgainstPostgres(t, query, 1, 400) })
	t.Run("random scalar strings", func(t *testing.T) { scalarsAgainstPostgres(t, query, 1, 800) })
	for _, c := range textCases {
		if c.unsupported {
			continue
		}
		t.Run(caseName(c), func(t *testing.T) {
			expr := fmt.Sprintf("CAST($1::text AS %s)", c.t)
			pgText, err := query(c.tz, "SELECT "+expr, TextFormat, c.in)
			if c.err {
				if err == nil {
					t.Fatalf("PostgreSQL accepts the input (%q); the case says it is invalid", pgText)
				}
				return
			}
			if err != nil {
				t.Fatalf("PostgreSQL rejects the input: %v", err)
			}
			s := session(t, c.tz)
			canon, err := Canonical(c.t, TextFormat, []byte(c.in), s)
			if err != nil {
				t.Fatal(err)
			}
			ours, _ := Render(c.t, TextFormat, canon, s)
			norm := expr
			if c.t == Numeric {
				norm = "trim_scale(" + expr + ")"
				if pgText, err = query(c.tz, "SELECT "+norm, TextFormat, c.in); err != nil {
					t.Fatal(err)
				}
			}
			if !c.normalized || c.t == Numeric {
				if string(ours) != string(pgText) {
					t.Errorf("text output: ours %q, PostgreSQL %q", ours, pgText)
				}
			}
			pgBin, err := query(c.tz, "SELECT "+norm, BinaryFormat, c.in)
			if err != nil {
				t.Fatal(err)
			}
			if !c.normalized && !bytes.Equal(pgBin, canon) {
				t.Errorf("canonical %x, PostgreSQL binary %x", canon, pgBin)
			}
			// PostgreSQL's own binary output (not normalized) is binary input for us.
			raw, err := query(c.tz, "SELECT "+expr, BinaryFormat, c.in)
			if err != nil {
				t.Fatal(err)
			}
			fromBin, err := Canonical(c.t, BinaryFormat, raw, s)
			if err != nil || !bytes.Equal(fromBin, canon) {
				t.Errorf("PostgreSQL's binary %x read as %x (%v), want %x", raw, fromBin, err, canon)
			}
		})
	}

	// Equality: equal canonical forms exactly when PostgreSQL's = says the values are equal.
	for _, p := range equalityPairs {
		t.Run("equal/"+p.t.String()+"/"+p.a+"="+p.b, func(t *testing.T) {
			got, err := query(p.tz, fmt.Sprintf("SELECT CAST($1::text AS %[1]s) = CAST($2::text AS %[1]s)", p.t), TextFormat, p.a, p.b)
			if err != nil {
				t.Fatal(err)
			}
			pgEqual := string(got) == "t"
			s := session(t, p.tz)
			ca, err1 := Canonical(p.t, TextFormat, []byte(p.a), s)
			cb, err2 := Canonical(p.t, TextFormat, []byte(p.b), s)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			if bytes.Equal(ca, cb) != pgEqual {
				t.Errorf("canonical equal = %t, PostgreSQL = says %t", bytes.Equal(ca, cb), pgEqual)
			}
			if pgEqual != p.equal {
				t.Errorf("the table says equal=%t, PostgreSQL says %t", p.equal, pgEqual)
			}
		})
	}
}

var equalityPairs = []struct {
	t     Type
	a, b  string
	tz    string
	equal bool
}{
	{t: Numeric, a: "1.0", b: "1", equal: true},
	{t: Numeric, a: "-0.00", b: "0", equal: true},
	{t: Numeric, a: "1e3", b: "1000.000", equal: true},
	{t: Numeric, a: "1.01", b: "1.1", equal: false},
	{t: Numeric, a: "NaN", b: "nan", equal: true},
	{t: Float8, a: "-0", b: "0", equal: true},
	{t: Float8, a: "NaN", b: "nan", equal: true},
	{t: Float8, a: "0.1", b: "0.10000000000000001", equal: true},
	{t: Float8, a: "1e2", b: "100", equal: true},
	{t: Int4, a: " 42", b: "+42", equal: true},
	{t: Bool, a: "yes", b: "on", equal: true},
	{t: Bool, a: "yes", b: "0", equal: false},
	{t: Date, a: "2024-01-02", b: "2024-1-2 12:00", equal: true},
	{t: Timestamptz, a: "2024-01-02 03:04:05+01", b: "2024-01-02 02:04:05Z", equal: true},
	{t: Timestamptz, a: "2024-01-02 03:04:05", b: "2024-01-02 08:04:05+00", tz: "America/New_York", equal: true},
	{t: Timestamp, a: "2024-01-02 03:04:05+01", b: "2024-01-02 03:04:05-07", equal: true},
	{t: Timestamp, a: "2024-01-02 03:04:05.0000001", b: "2024-01-02 03:04:05", equal: true},
	{t: UUID, a: "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", b: "{a0eebc999c0b4ef8bb6d6bb9bd380a11}", equal: true},
	{t: JSONB, a: `{"a": 1.0, "b": [1, 2]}`, b: `{"b":[1,2],"a":1}`, equal: true},
	{t: JSONB, a: `{"a": 1, "a": 2}`, b: `{"a": 2}`, equal: true},
	{t: JSONB, a: `[1, 2]`, b: `[2, 1]`, equal: false},
	{t: JSONB, a: `"\u00e9"`, b: `"é"`, equal: true},
	{t: Bytea, a: `\x616263`, b: `abc`, equal: true},
	{t: Text, a: "abc", b: "abc ", equal: false},
}

// timeZonesAgainstPostgres sets TimeZone the ways a client can, takes the name PostgreSQL reports,
// and checks that LoadTimeZone of it renders a timestamptz as PostgreSQL does.
func timeZonesAgainstPostgres(t *testing.T, query func(tz, sql string, format int16, args ...string) ([]byte, error)) {
	const instant = "2024-07-01 12:00:00.25+00"
	for _, set := range []string{"'Europe/Paris'", "'UTC'", "'EST5EDT'", "-3", "INTERVAL '+05:30'", "'Asia/Kathmandu'", "'Etc/GMT+2'"} {
		t.Run(set, func(t *testing.T) {
			name, err := query("!"+set, "SELECT current_setting('TimeZone')", TextFormat)
			if err != nil {
				t.Fatal(err)
			}
			pgOut, err := query("!"+set, "SELECT $1::timestamptz", TextFormat, instant)
			if err != nil {
				t.Fatal(err)
			}
			loc, err := LoadTimeZone(string(name))
			if err != nil {
				t.Fatalf("LoadTimeZone(%q): %v", name, err)
			}
			s := &Session{TimeZone: loc}
			canon, err := Canonical(Timestamptz, TextFormat, []byte(instant), s)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := Render(Timestamptz, TextFormat, canon, s)
			if err != nil || string(ours) != string(pgOut) {
				t.Fatalf("TimeZone %q: ours %q (%v), PostgreSQL %q", name, ours, err, pgOut)
			}
		})
	}
}

// dateStylesAgainstPostgres renders dates and timestamps in every DateStyle and compares with
// PostgreSQL's output under the same setting.
func dateStylesAgainstPostgres(t *testing.T, query func(tz, sql string, format int16, args ...string) ([]byte, error)) {
	defer query("", "SELECT set_config('DateStyle', 'ISO, MDY', false)", TextFormat)
	values := []struct {
		t  Type
		in string
	}{
		{Date, "2024-01-02"}, {Date, "0044-03-15 BC"}, {Date, "infinity"}, {Date, "10000-12-31"},
		{Timestamp, "2024-01-02 03:04:05.5"}, {Timestamp, "0044-03-15 12:00:00 BC"}, {Timestamp, "2024-02-29 00:00:00"},
		{Timestamptz, "2024-07-02 03:04:05.123+00"}, {Timestamptz, "2024-01-07 23:59:59+00"}, {Timestamptz, "1850-01-01 00:00:00+00"},
		{Timestamptz, "0044-03-15 12:00:00+00 BC"}, {Timestamptz, "-infinity"},
	}
	for _, style := range []string{"ISO, MDY", "ISO, DMY", "SQL, MDY", "SQL, DMY", "Postgres, MDY", "Postgres, DMY", "German, DMY", "German, MDY"} {
		for _, tz := range []string{"UTC", "America/New_York", "Asia/Kolkata", "Europe/Paris"} {
			reported, err := query(tz, "SELECT set_config('DateStyle', $1, false)", TextFormat, style)
			if err != nil {
				t.Fatal(err)
			}
			loc, _ := LoadTimeZone(tz)
			s := &Session{TimeZone: loc, DateStyle: string(reported)}
			for _, v := range values {
				pg, err := query(tz, fmt.Sprintf("SELECT $1::%s", v.t), TextFormat, v.in)
				if err != nil {
					t.Fatal(err)
				}
				canon, err := Canonical(v.t, TextFormat, []byte(v.in), s)
				if err != nil {
					t.Fatal(err)
				}
				ours, err := Render(v.t, TextFormat, canon, s)
				if err != nil || string(ours) != string(pg) {
					t.Errorf("DateStyle %q, TimeZone %s, %s %q: ours %q (%v), PostgreSQL %q", reported, tz, v.t, v.in, ours, err, pg)
				}
			}
		}
	}
}
