// Package coltype gives each declared column type one canonical byte encoding, and converts between
// it and the text and binary wire formats clients use.
//
// A protected column is bytea in PostgreSQL; the proxy presents it to clients as its declared type
// (text, varchar, int2, int4, int8, numeric, float8, bool, date, timestamp, timestamptz, uuid, jsonb,
// bytea) and encrypts [Canonical] of each value. Deterministic encryption finds equal values only if
// equal values have equal bytes, whatever format a driver used, so the canonical encoding is chosen
// to make "equal canonical bytes" mean exactly "equal according to PostgreSQL's = operator". The
// tests check that against a real PostgreSQL, value by value.
//
// The canonical encoding of every type is PostgreSQL's binary send format of the value, normalized:
//
//	text, varchar  the UTF-8 bytes (valid UTF-8, no NUL: what PostgreSQL accepts in a UTF8 database)
//	int2/4/8       big-endian two's complement, 2/4/8 bytes
//	numeric        numeric_send with no leading or trailing zero digit words and the minimal display
//	               scale: 12.50 and 12.5 are one value (PostgreSQL: 12.50 = 12.5), so 12.50 reads
//	               back as 12.5. This is the one visible normalization; equality search needs it.
//	               NaN and +/-Infinity are kept.
//	float8         IEEE 754 big-endian; -0 is stored as 0 and every NaN as one NaN (PostgreSQL: -0 = 0,
//	               NaN = NaN), so -0 reads back as 0
//	bool           one byte, 0 or 1
//	date           int32 days since 2000-01-01, +/-infinity as PostgreSQL's int32 limits
//	timestamp      int64 microseconds since 2000-01-01 (wall clock), infinities as int64 limits
//	timestamptz    int64 microseconds since 2000-01-01 UTC: the instant, not the offset it was
//	               written with; it is displayed in the session's TimeZone, as PostgreSQL does
//	uuid           the 16 bytes
//	jsonb          jsonb_send: version byte 1, then the document exactly as PostgreSQL prints a
//	               jsonb (keys ordered by length then bytes, the last duplicate key kept, ", " and
//	               ": " separators, strings re-escaped), with numbers at numeric's minimal scale
//	               ({"a": 1.50} reads back as {"a": 1.5}, because jsonb equality compares numbers
//	               numerically)
//	bytea          the bytes
//
// These encodings are part of the stored format: changing one would make existing deterministic
// values unfindable. They are not versioned separately from the envelope.
//
// Input follows PostgreSQL 15's input functions (surrounding white space, signs, "t"/"yes"/"on",
// NaN and Infinity spellings, uuid with or without hyphens and braces, bytea hex and escape formats,
// ISO 8601 dates and times with any numeric offset or a tz database zone name, BC years).
// Deliberately not accepted, with an error wrapping [ErrUnsupported]: date orders that depend on
// DateStyle ("01/02/2024", whatever the DateStyle), time zone abbreviations ("CET": PostgreSQL's
// abbreviation table and the tz database disagree on them), and relative values ("now", "today"),
// which would freeze the proxy's clock into the stored value. Timestamptz input without an offset
// is read in the session's TimeZone with PostgreSQL's rules for skipped and repeated local times.
// The tests hold this to PostgreSQL itself: tables of cases, and hundreds of random and mutated
// inputs per run (tens of thousands with other seeds while it was written), must be accepted or
// refused exactly as PostgreSQL does and give its value. Inputs that only PostgreSQL 16 and later
// accept (digit separators "1_000", non-decimal integers "0x1F") are refused.
//
// Text output ([Render]) is PostgreSQL's own output for the type: dates and timestamps in the
// session's DateStyle (ISO, SQL, Postgres or German, with its day/month order; time zone
// abbreviations come from the tz database, as PostgreSQL's do), timestamptz in the session TimeZone
// ([LoadTimeZone] reads the name PostgreSQL reports), float8 in the shortest
// exact form (extra_float_digits >= 1, the default since PostgreSQL 12; extra_float_digits is not
// reported to clients, so a session that lowers it is not followed) and bytea in hex (bytea_output is
// not reported either). Binary output is the canonical encoding itself.
//
// [ParseLiteral] types SQL constants as PostgreSQL's parser does and [Convert] and
// [CanonicalFromOID] apply PostgreSQL's assignment casts, so INSERT ... VALUES (42) into a numeric
// column, a float8 literal into an int4 column (rounded half to even) or a pgjdbc varchar parameter
// into a text column store what PostgreSQL would have stored; what PostgreSQL would refuse is refused
// with a [*ConversionError].
//
// Errors ([*ValueError], [*ConversionError], [*CorruptError]) name the type and the reason and never
// contain the value: values are user data, and errors end up in logs. The proxy can repeat them to the
// client as they are.
//
// Type modifiers: a column's declared type has none (the column is bytea, so PostgreSQL applies none
// either); in an explicit cast of a literal, varchar(n), numeric(p,s) and timestamp[tz](p) are applied
// as PostgreSQL applies them (truncation, rounding, overflow errors), and other modifiers are refused.
//
// Not guaranteed: client encodings other than UTF8 are the proxy's to refuse; numeric limits are
// PostgreSQL's (131072 digits before the point, 16383 after).
package coltype
