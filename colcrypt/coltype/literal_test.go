package coltype

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

type literalCase struct {
	col  Type
	lit  Literal
	want string // text output of the stored value; "" with err
	tz   string
	err  bool
}

func str(v, cast string) Literal { return Literal{Kind: StringLiteral, Value: v, Cast: cast} }
func num(v, cast string) Literal { return Literal{Kind: NumberLiteral, Value: v, Cast: cast} }

var literalCases = []literalCase{
	{col: Date, lit: str("2024-01-02", "date"), want: "2024-01-02"},
	{col: Date, lit: str("2024-01-02", ""), want: "2024-01-02"},
	{col: Date, lit: str("2024-01-02 23:30", "timestamp"), want: "2024-01-02"},
	{col: Date, lit: str("2024-01-02 23:30+00", "timestamptz"), want: "2024-01-02", tz: "America/New_York"},
	{col: Timestamptz, lit: str("2024-01-02T03:04:05.123456+01:00", "timestamptz"), want: "2024-01-02 02:04:05.123456+00"},
	{col: Timestamptz, lit: str("2024-01-02 03:04:05", "timestamp"), want: "2024-01-02 03:04:05-05", tz: "America/New_York"},
	{col: Timestamptz, lit: str("2024-07-02", "date"), want: "2024-07-02 00:00:00+02", tz: "Europe/Paris"},
	{col: Timestamp, lit: str("2024-01-02 03:04:05+05", "timestamptz"), want: "2024-01-01 17:04:05", tz: "America/New_York"},
	{col: Timestamp, lit: str("2024-01-02T03:04:05.5", "timestamp"), want: "2024-01-02 03:04:05.5"},
	{col: Int4, lit: num(" -42", ""), want: "-42"},
	{col: Int4, lit: num("3000000000", ""), err: true},
	{col: Int4, lit: num("2.5", ""), want: "3"},
	{col: Int4, lit: num("-2.5", ""), want: "-3"},
	{col: Int4, lit: num("1e3", ""), want: "1000"},
	{col: Int4, lit: str("42", ""), want: "42"},
	{col: Int4, lit: str("42", "int8"), want: "42"},
	{col: Int4, lit: str("4.5", "float8"), want: "4"},
	{col: Int4, lit: str("5.5", "double precision"), want: "6"},
	{col: Int4, lit: Literal{Kind: BoolLiteral, Value: "true"}, err: true},
	{col: Int4, lit: str("42", "text"), err: true},
	{col: Int2, lit: num("40000", ""), err: true},
	{col: Int8, lit: num("9223372036854775807", ""), want: "9223372036854775807"},
	{col: Int8, lit: num("9223372036854775808", ""), err: true},
	{col: Numeric, lit: num("12.50", ""), want: "12.5"},
	{col: Numeric, lit: num("42", ""), want: "42"},
	{col: Numeric, lit: num("99999999999999999999", ""), want: "99999999999999999999"},
	{col: Numeric, lit: str("0.1", "float8"), want: "0.1"},
	{col: Numeric, lit: str("1.2345678901234567", "float8"), want: "1.23456789012346"},
	{col: Numeric, lit: str("NaN", "numeric"), want: "NaN"},
	{col: Float8, lit: num("1.5", ""), want: "1.5"},
	{col: Float8, lit: num("42", ""), want: "42"},
	{col: Float8, lit: str("NaN", "float"), want: "NaN"},
	{col: Float8, lit: str("-Infinity", "float8"), want: "-Infinity"},
	{col: Float8, lit: num("1e400", ""), err: true},
	{col: Float8, lit: num("0.1000000000000000055511151231257827", ""), want: "0.1"},
	{col: Text, lit: num("42", ""), want: "42"},
	{col: Text, lit: num("1.50", ""), want: "1.50"},
	{col: Text, lit: num("-0.00", ""), want: "0.00"},
	{col: Text, lit: num("1.5e3", ""), want: "1500"},
	{col: Text, lit: str("it's", ""), want: "it's"},
	{col: Text, lit: str("abc", "varchar"), want: "abc"},
	{col: Text, lit: Literal{Kind: BoolLiteral, Value: "false"}, want: "false"},
	{col: Text, lit: str("2024-01-02 03:04:05+00", "timestamptz"), want: "2024-01-01 22:04:05-05", tz: "America/New_York"},
	{col: Varchar, lit: str("abc", "text"), want: "abc"},
	{col: JSONB, lit: str(`{"b":1,"a":[true,null]}`, ""), want: `{"a": [true, null], "b": 1}`},
	{col: JSONB, lit: str(`{"a":1}`, "json"), want: `{"a": 1}`},
	{col: JSONB, lit: str(`{"a":1}`, "jsonb"), want: `{"a": 1}`},
	{col: JSONB, lit: num("42", ""), err: true},
	{col: UUID, lit: str("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "uuid"), want: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
	{col: Bytea, lit: str(`\x00ff`, "bytea"), want: `\x00ff`},
	{col: Bytea, lit: str(`\x00ff`, ""), want: `\x00ff`},
	{col: Bool, lit: Literal{Kind: BoolLiteral, Value: "true"}, want: "t"},
	{col: Bool, lit: str("yes", ""), want: "t"},
	{col: Bool, lit: num("1", ""), err: true},
	{col: Bool, lit: num("1", "bool"), want: "t"},
	{col: Bool, lit: num("0", "boolean"), want: "f"},
	{col: Int4, lit: Literal{Kind: BoolLiteral, Value: "true", Cast: "int4"}, want: "1"},
	{col: Int8, lit: Literal{Kind: BoolLiteral, Value: "false", Cast: "integer"}, want: "0"},
	{col: Int8, lit: Literal{Kind: BoolLiteral, Value: "true", Cast: "int8"}, err: true},
	{col: Int4, lit: num("2", "int2"), want: "2"},
	// Type modifiers in casts.
	{col: Text, lit: str("abcdef", "varchar(3)"), want: "abc"},
	{col: Text, lit: str("héllo", "character varying(2)"), want: "hé"},
	{col: Numeric, lit: str("12.345", "numeric(10,2)"), want: "12.35"},
	{col: Numeric, lit: str("-12.345", "decimal(10, 2)"), want: "-12.35"},
	{col: Numeric, lit: str("0.005", "numeric(3,2)"), want: "0.01"},
	{col: Numeric, lit: str("0.0049", "numeric(3,2)"), want: "0"},
	{col: Numeric, lit: str("999.995", "numeric(5,2)"), err: true},
	{col: Numeric, lit: num("12.5", "numeric(2)"), want: "13"},
	{col: Numeric, lit: num("99.5", "numeric(2)"), err: true},
	{col: Numeric, lit: str("Infinity", "numeric(10,2)"), err: true},
	{col: Numeric, lit: str("NaN", "numeric(10,2)"), want: "NaN"},
	{col: Timestamp, lit: str("2024-01-02 03:04:05.123456", "timestamp(0)"), want: "2024-01-02 03:04:05"},
	{col: Timestamp, lit: str("2024-01-02 03:04:05.5", "timestamp(0)"), want: "2024-01-02 03:04:06"},
	// PostgreSQL rounds half away from 2000-01-01, so before it halves round toward the past.
	{col: Timestamp, lit: str("1999-12-31 23:59:59.5", "timestamp(0)"), want: "1999-12-31 23:59:59"},
	{col: Timestamp, lit: str("1999-12-31 23:59:59.25", "timestamp(1) without time zone"), want: "1999-12-31 23:59:59.2"},
	{col: Timestamptz, lit: str("2024-01-02 03:04:05.123456+00", "timestamptz(3)"), want: "2024-01-02 03:04:05.123+00"},
	{col: Timestamptz, lit: str("2024-01-02 03:04:05.12545+00", "timestamp(4) with time zone"), want: "2024-01-02 03:04:05.1255+00"},
	{col: Float8, lit: str("1.5", "float(53)"), want: "1.5"},
	{col: Int4, lit: str("5", "int4(3)"), err: true},
}

func sqlLiteral(l Literal) string {
	var s string
	switch l.Kind {
	case StringLiteral:
		s = "'" + strings.ReplaceAll(l.Value, "'", "''") + "'"
	case NumberLiteral:
		s = "(" + l.Value + ")"
	case BoolLiteral:
		s = strings.ToUpper(l.Value)
	}
	if l.Cast != "" {
		s += "::" + l.Cast
	}
	return s
}

func TestParseLiteral(t *testing.T) {
	for _, c := range literalCases {
		t.Run(c.col.String()+"/"+sqlLiteral(c.lit), func(t *testing.T) {
			s := session(t, c.tz)
			canon, err := ParseLiteral(c.col, c.lit, s)
			if c.err {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			out, err := Render(c.col, TextFormat, canon, s)
			if err != nil || string(out) != c.want {
				t.Fatalf("stored %q (%v), want %q", out, err, c.want)
			}
		})
	}
}

func TestParseLiteralRefusals(t *testing.T) {
	cases := map[string]struct {
		col Type
		lit Literal
	}{
		"float(p) is real": {Float8, str("1.5", "float(10)")},
		"unsupported cast": {Float8, str("1.5", "real")},
		"bad modifier":     {Varchar, str("abc", "varchar(x)")},
		"unknown kind":     {Text, Literal{Value: "x"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseLiteral(c.col, c.lit, nil); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// literalsAgainstPostgres checks the literal and parameter tables against what PostgreSQL stores for
// INSERT INTO t(c) VALUES (<literal>) and VALUES ($1) with the parameter's declared type. (Run from
// TestAgainstPostgres, to share one server.)
func literalsAgainstPostgres(t *testing.T, query func(tz, sql string, oids []uint32, format int16, args ...string) ([]byte, error)) {
	for _, ty := range Types() {
		if _, err := query("", fmt.Sprintf("CREATE TEMP TABLE c_%s (c %s) ON COMMIT DELETE ROWS", ty, ty), nil, TextFormat); err != nil && !strings.Contains(err.Error(), "rows") {
			t.Fatal(err)
		}
	}
	for _, c := range literalCases {
		t.Run(c.col.String()+"/"+sqlLiteral(c.lit), func(t *testing.T) {
			got, err := query(c.tz, fmt.Sprintf("INSERT INTO c_%s VALUES (%s) RETURNING c", c.col, sqlLiteral(c.lit)), nil, TextFormat)
			if c.err {
				if err == nil {
					t.Fatalf("PostgreSQL stores %q; the case says it is refused", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("PostgreSQL: %v", err)
			}
			want := c.want
			if c.col == Numeric { // PostgreSQL keeps the constant's scale; we keep the minimal one
				d, _ := parseDecimal(got)
				d.normalize()
				got = d.appendText(nil)
			}
			if string(got) != want {
				t.Fatalf("PostgreSQL stores %q, the case says %q", got, want)
			}
		})
	}
	t.Run("random numbers", func(t *testing.T) { randomNumbersAgainstPostgres(t, query, 250) })
	for _, c := range paramCases {
		t.Run(fmt.Sprintf("param/%s/%d/%s", c.col, c.oid, c.in), func(t *testing.T) {
			got, err := query(c.tz, fmt.Sprintf("INSERT INTO c_%s VALUES ($1) RETURNING c", c.col), []uint32{c.oid}, TextFormat, c.in)
			if c.err {
				if err == nil {
					t.Fatalf("PostgreSQL stores %q; the case says it is refused", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("PostgreSQL: %v", err)
			}
			if string(got) != c.want {
				t.Fatalf("PostgreSQL stores %q, the case says %q", got, c.want)
			}
		})
	}
}

type paramCase struct {
	col  Type
	oid  uint32
	in   string // text format
	want string
	tz   string
	err  bool
}

var paramCases = []paramCase{
	{col: Text, oid: pgtype.VarcharOID, in: "abc", want: "abc"},
	{col: Text, oid: pgtype.BPCharOID, in: "ab  ", want: "ab"},
	{col: Text, oid: pgtype.NumericOID, in: "1.50", want: "1.50"},
	{col: Text, oid: pgtype.Int4OID, in: "42", want: "42"},
	{col: Numeric, oid: pgtype.Int4OID, in: "42", want: "42"},
	{col: Int4, oid: pgtype.Int8OID, in: "3000000000", err: true},
	{col: Int4, oid: pgtype.NumericOID, in: "2.5", want: "3"},
	{col: Int4, oid: pgtype.TextOID, in: "42", err: true},
	{col: Int8, oid: pgtype.Int2OID, in: "-7", want: "-7"},
	{col: Timestamptz, oid: pgtype.TimestampOID, in: "2024-07-01 12:00:00", want: "2024-07-01 12:00:00+02", tz: "Europe/Paris"},
	{col: Timestamp, oid: pgtype.TimestamptzOID, in: "2024-07-01 12:00:00+00", want: "2024-07-01 14:00:00", tz: "Europe/Paris"},
	{col: Float8, oid: pgtype.Float4OID, in: "0.1", want: "0.10000000149011612"},
	{col: Float8, oid: pgtype.NumericOID, in: "0.1", want: "0.1"},
	{col: JSONB, oid: pgtype.JSONOID, in: `{"b":1,"a":2}`, want: `{"a": 2, "b": 1}`},
	{col: Bool, oid: pgtype.Int4OID, in: "1", err: true},
	{col: Date, oid: pgtype.UnknownOID, in: "2024-01-02", want: "2024-01-02"},
	{col: UUID, oid: 0, in: "a0eebc999c0b4ef8bb6d6bb9bd380a11", want: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
}

func TestCanonicalFromOID(t *testing.T) {
	for _, c := range paramCases {
		t.Run(fmt.Sprintf("%s/%d/%s", c.col, c.oid, c.in), func(t *testing.T) {
			s := session(t, c.tz)
			canon, err := CanonicalFromOID(c.col, c.oid, TextFormat, []byte(c.in), s)
			if c.err {
				var ce *ConversionError
				if !errors.As(err, &ce) {
					t.Fatalf("err = %v, want a *ConversionError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.col == Text && c.oid == pgtype.NumericOID {
				if string(canon) != c.want {
					t.Fatalf("stored %q, want %q", canon, c.want)
				}
				return
			}
			out, err := Render(c.col, TextFormat, canon, s)
			if err != nil || string(out) != c.want {
				t.Fatalf("stored %q (%v), want %q", out, err, c.want)
			}
		})
	}
	if _, err := CanonicalFromOID(Text, 600 /* point */, TextFormat, []byte("(1,2)"), nil); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("point parameter: %v", err)
	}
}

// randomNumbersAgainstPostgres inserts random numeric constants into columns of every numeric type
// and text, and compares what PostgreSQL stores with ParseLiteral (assignment casts, rounding, range
// errors).
func randomNumbersAgainstPostgres(t *testing.T, query func(tz, sql string, oids []uint32, format int16, args ...string) ([]byte, error), n int) {
	r := rand.New(rand.NewPCG(77, 1))
	cols := []Type{Int2, Int4, Int8, Numeric, Float8, Text, Varchar}
	for range n {
		var b strings.Builder
		if r.IntN(3) == 0 {
			b.WriteByte('-')
		}
		for range 1 + r.IntN([]int{3, 6, 12, 21}[r.IntN(4)]) {
			b.WriteByte(byte('0' + r.IntN(10)))
		}
		if r.IntN(2) == 0 {
			b.WriteByte('.')
			for range 1 + r.IntN(5) {
				b.WriteByte([]byte("0559")[r.IntN(4)])
			}
		}
		if r.IntN(6) == 0 {
			fmt.Fprintf(&b, "e%d", r.IntN(40)-20)
		}
		col := cols[r.IntN(len(cols))]
		lit := num(b.String(), "")
		if r.IntN(4) == 0 {
			lit.Cast = []string{"numeric", "float8", "int8", "int4", "numeric(8,2)"}[r.IntN(5)]
		}
		ours, err := ParseLiteral(col, lit, nil)
		pg, pgErr := query("", fmt.Sprintf("INSERT INTO c_%s VALUES (%s) RETURNING c", col, sqlLiteral(lit)), nil, BinaryFormat)
		if col == Numeric && pgErr == nil {
			// PostgreSQL keeps the constant's scale; compare canonical forms.
			pg, _ = Canonical(Numeric, BinaryFormat, pg, nil)
		}
		if col == Float8 && pgErr == nil {
			pg, _ = Canonical(Float8, BinaryFormat, pg, nil) // -0 -> 0
		}
		switch {
		case err == nil && pgErr != nil:
			t.Errorf("%s %s: we store it, PostgreSQL refuses: %v", col, sqlLiteral(lit), pgErr)
		case err != nil && pgErr == nil:
			t.Errorf("%s %s: we refuse (%v), PostgreSQL stores %x", col, sqlLiteral(lit), err, pg)
		case err == nil && !bytes.Equal(ours, pg):
			t.Errorf("%s %s: ours %x, PostgreSQL %x", col, sqlLiteral(lit), ours, pg)
		}
	}
}
