// Package analyze decides, for one SQL statement text, what the column-encryption proxy must do
// with it: pass it through untouched, rewrite it (encrypt the constants and parameters written to or
// searched in protected columns), or refuse it because the database could not compute it on
// ciphertext.
//
// The text is parsed by PostgreSQL's own parser (pg_query_go), and constants are located with
// PostgreSQL's own scanner, so string escapes (E'a\'b'), dollar quoting, string continuation,
// comments, typed literals (DATE '2024-01-02', '1'::int8, CAST(x AS date)) and signs folded into
// numbers (" -42") are read exactly as the server reads them. Names are resolved as PostgreSQL
// resolves them: tables through the search path and CTEs, columns through aliases, joins,
// subqueries, CTEs (a column of a subquery that is a protected column stays protected), correlated
// outer levels, ORDER BY output names and positions, and * in catalog order.
//
// What is allowed on a protected column (everything else touching one is refused, naming the column
// and the reason; when in doubt, the analyzer refuses):
//
//   - Output: a bare column in a select list or RETURNING (qualified, aliased, or through *), which
//     the proxy decrypts from RowDescription; count(col); col IS [NOT] NULL anywhere.
//   - Search, deterministic columns only, in WHERE, JOIN ON, HAVING and FILTER: col = v, v = col,
//     col <> v, col [NOT] IN (v, ...), col IS [NOT] DISTINCT FROM v, where v is a constant or $n
//     (possibly cast to a declared type). GROUP BY, DISTINCT, DISTINCT ON, PARTITION BY,
//     count(DISTINCT col) and ON CONFLICT (col) likewise need a deterministic column.
//   - Write: INSERT ... VALUES (one or many rows, with or without a column list) and UPDATE SET /
//     ON CONFLICT DO UPDATE SET with a constant, $n, NULL or DEFAULT; SET col = col and
//     SET col = EXCLUDED.col (the ciphertext stays in its own column, where it opens).
//   - COPY t [(cols)] FROM STDIN and TO STDOUT, COPY (query) TO STDOUT, in text or csv format: the
//     plan lists the protected fields by position, with the format options.
//   - PREPARE / EXECUTE / DEALLOCATE at the SQL level, EXPLAIN [ANALYZE], DECLARE CURSOR, and
//     statements on protected tables that neither read nor write values (TRUNCATE, DROP, VACUUM,
//     GRANT, plain indexes, ALTER TABLE commands that do not change a protected column).
//
// Refused, among others: ORDER BY, ranges, LIKE, functions, casts and operators on a protected
// column; comparing two columns (each column's ciphertext is bound to its name, so even equal
// plaintexts never compare equal across columns); INSERT ... SELECT into a protected column;
// set operations (UNION ...) returning one, since PostgreSQL then reports no column origin and the
// proxy could not decrypt; whole-row references; views, materialized views, CREATE TABLE AS and
// SELECT INTO over protected columns; binary COPY, COPY FROM a server file; ALTER of a protected
// column's type or default, renaming it or its table or moving the table to another schema (the
// envelope binds schema.table.column); MERGE and any other statement kind not listed above that names
// a protected table. A $n bound to a protected column must not also be used elsewhere in the
// statement, nor bound to two columns or roles.
//
// Searches match every live key version. A constant comparison is rewritten as a whole, e.g.
// `ssn = 'x'` becomes `(ssn IN (<envelope v1>, <envelope v2>))`, and a parameter one becomes
// `(ssn = ANY($1::bytea[]))` with the proxy binding the array of envelopes (see compare in expr.go
// for every form). Writes use the newest version: a constant becomes `'\x...'::bytea` and a
// parameter `$1::bytea`.
//
// Text the parser rejects passes through: PostgreSQL answers with its own error and runs nothing.
//
// Guarantees: the plan's edits lie within the text, do not overlap, and produce text PostgreSQL
// parses (FuzzAnalyze checks this); every constant and parameter that reaches a protected column,
// or is compared with one, through the SQL text of the statement is covered by an edit or a
// parameter binding, or the statement is refused.
//
// Non-guarantees (the proxy cannot see these through SQL text): writes made by server-side code
// (functions, procedures, DO blocks, triggers, rules) and through views or partitions/child tables
// addressed by their own names, which the Catalog does not report as protected; temporary tables that
// shadow a protected table (treated as the protected one); a schema renamed with ALTER SCHEMA.
// The analyzer assumes standard_conforming_strings = on, as the parser does: the proxy must refuse
// sessions that turn it off. Analysis does not convert values: the proxy passes each Value's Literal
// to coltype.ParseLiteral, which applies PostgreSQL's typing and assignment casts.
package analyze
