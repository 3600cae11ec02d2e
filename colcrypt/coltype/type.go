package coltype

import (
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"
)

// Type is a declared column type: what clients see in place of the bytea that Postgres stores.
type Type uint8

// The declared types. The zero Type is invalid so a forgotten field is caught.
const (
	Text Type = iota + 1
	Varchar
	Int2
	Int4
	Int8
	Numeric
	Float8
	Bool
	Date
	Timestamp
	Timestamptz
	UUID
	JSONB
	Bytea
)

// Wire formats, as in the PostgreSQL protocol's format codes.
const (
	TextFormat   int16 = 0
	BinaryFormat int16 = 1
)

var typeInfo = [...]struct {
	name string // canonical PostgreSQL name (format_type without typmod)
	sql  string // name PostgreSQL uses in error messages
	oid  uint32
	size int16 // pg_type.typlen: the RowDescription data type size
}{
	Text:        {"text", "text", pgtype.TextOID, -1},
	Varchar:     {"varchar", "character varying", pgtype.VarcharOID, -1},
	Int2:        {"int2", "smallint", pgtype.Int2OID, 2},
	Int4:        {"int4", "integer", pgtype.Int4OID, 4},
	Int8:        {"int8", "bigint", pgtype.Int8OID, 8},
	Numeric:     {"numeric", "numeric", pgtype.NumericOID, -1},
	Float8:      {"float8", "double precision", pgtype.Float8OID, 8},
	Bool:        {"bool", "boolean", pgtype.BoolOID, 1},
	Date:        {"date", "date", pgtype.DateOID, 4},
	Timestamp:   {"timestamp", "timestamp without time zone", pgtype.TimestampOID, 8},
	Timestamptz: {"timestamptz", "timestamp with time zone", pgtype.TimestamptzOID, 8},
	UUID:        {"uuid", "uuid", pgtype.UUIDOID, 16},
	JSONB:       {"jsonb", "jsonb", pgtype.JSONBOID, -1},
	Bytea:       {"bytea", "bytea", pgtype.ByteaOID, -1},
}

var allTypes = [...]Type{Text, Varchar, Int2, Int4, Int8, Numeric, Float8, Bool, Date, Timestamp, Timestamptz, UUID, JSONB, Bytea}

// Types lists every declared type, in a stable order.
func Types() []Type { return slices.Clone(allTypes[:]) }

func (t Type) valid() bool { return t >= Text && t <= Bytea }

// String is the short PostgreSQL name ("int4", "timestamptz").
func (t Type) String() string {
	if !t.valid() {
		return fmt.Sprintf("coltype(%d)", uint8(t))
	}
	return typeInfo[t].name
}

// SQLName is the name PostgreSQL uses in messages ("integer", "timestamp with time zone").
func (t Type) SQLName() string {
	if !t.valid() {
		return t.String()
	}
	return typeInfo[t].sql
}

// OID is the PostgreSQL type OID, for RowDescription and ParameterDescription.
func (t Type) OID() uint32 {
	if !t.valid() {
		return 0
	}
	return typeInfo[t].oid
}

// Size is the type's length as PostgreSQL reports it in RowDescription (pg_type.typlen): the fixed
// size in bytes, or -1 for variable-length types. The type modifier to report is always -1.
func (t Type) Size() int16 {
	if !t.valid() {
		return 0
	}
	return typeInfo[t].size
}

// TypeForOID returns the declared type with that OID.
func TypeForOID(oid uint32) (Type, bool) {
	for _, t := range allTypes {
		if typeInfo[t].oid == oid {
			return t, true
		}
	}
	return 0, false
}

// aliases maps every spelling PostgreSQL accepts for a declared type (in a cast or a config file) to
// the type. Keys are lower case with single spaces.
var aliases = map[string]Type{
	"text":    Text,
	"varchar": Varchar, "character varying": Varchar,
	"int2": Int2, "smallint": Int2,
	"int4": Int4, "integer": Int4, "int": Int4,
	"int8": Int8, "bigint": Int8,
	"numeric": Numeric, "decimal": Numeric,
	"float8": Float8, "double precision": Float8, "float": Float8,
	"bool": Bool, "boolean": Bool,
	"date":      Date,
	"timestamp": Timestamp, "timestamp without time zone": Timestamp,
	"timestamptz": Timestamptz, "timestamp with time zone": Timestamptz,
	"uuid":  UUID,
	"jsonb": JSONB,
	"bytea": Bytea,
}

// ParseType parses a type name as written in a config file or a cast: any PostgreSQL spelling
// ("integer", "int4", "pg_catalog.int4", "double precision", "TIMESTAMPTZ"), without a type modifier.
// Type modifiers ("varchar(20)", "numeric(10,2)") are rejected: they change values (rounding,
// truncation) and are not applied by this package.
func ParseType(name string) (Type, error) {
	// The spellings the parser produces ("pg_catalog.int4", "text") without allocating: the proxy
	// reads a cast parameter's type with this at every Bind.
	if t, ok := aliases[strings.TrimPrefix(name, "pg_catalog.")]; ok {
		return t, nil
	}
	n := strings.ToLower(strings.Join(strings.Fields(name), " "))
	n = strings.TrimPrefix(n, "pg_catalog.")
	n = strings.Trim(n, `"`)
	if t, ok := aliases[n]; ok {
		return t, nil
	}
	if strings.ContainsRune(n, '(') {
		return 0, fmt.Errorf("coltype: type %q: type modifiers are not supported", name)
	}
	return 0, fmt.Errorf("coltype: type %q is not a supported column type (text, varchar, int2, int4, int8, numeric, float8, bool, date, timestamp, timestamptz, uuid, jsonb, bytea)", name)
}
