package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/colcrypt/config"
	"github.com/keyward/keyward/colcrypt/envelope"
)

// Finding is one line of a check report.
type Finding struct {
	Column  string // "schema.table.column" as configured, "" for the whole configuration
	Line    int    // line of the entry in colcrypt.yaml, 0 if unknown
	Problem bool   // false: informational
	Message string
}

func (f Finding) String() string {
	mark := "ok  "
	if f.Problem {
		mark = "FAIL"
	}
	where := f.Column
	if where == "" {
		where = "config"
	}
	if f.Line > 0 {
		where += fmt.Sprintf(" (line %d)", f.Line)
	}
	return mark + " " + where + ": " + f.Message
}

// Report is what Check found.
type Report struct{ Findings []Finding }

// Problems counts the findings that are problems.
func (r *Report) Problems() int {
	n := 0
	for _, f := range r.Findings {
		if f.Problem {
			n++
		}
	}
	return n
}

func (r *Report) String() string {
	var b strings.Builder
	for _, f := range r.Findings {
		b.WriteString(f.String())
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "%d column(s), %d problem(s)\n", countColumns(r), r.Problems())
	return b.String()
}

func countColumns(r *Report) int {
	seen := map[string]bool{}
	for _, f := range r.Findings {
		if f.Column != "" {
			seen[f.Column] = true
		}
	}
	return len(seen)
}

// CheckOptions is what Check runs with.
type CheckOptions struct {
	Conn     *pgx.Conn // a direct connection
	Keys     Keys
	Identity string // "db:<role>" whose keys are tried
	// Ping, if set, is called first: an error means the key agent cannot be reached, reported once
	// (instead of once per column) and the key checks are skipped.
	Ping func(context.Context) error
}

// Check validates cfg's columns against the live catalog and the key agent: each column exists,
// is bytea, holds only envelopes of its scope, has no unfinished encrypt-column run, and the
// identity can seal and open with its keys. It only reads. The error is for a failure of the check
// itself (the database went away); problems are in the report.
func Check(ctx context.Context, cfg *config.Config, o CheckOptions) (*Report, error) {
	rep := &Report{}
	keys := o.Keys
	if o.Ping != nil {
		if err := o.Ping(ctx); err != nil {
			rep.Findings = append(rep.Findings, Finding{Problem: true, Message: fmt.Sprintf("key agent unreachable: %v", err)})
			keys = nil
		} else {
			rep.Findings = append(rep.Findings, Finding{Message: "key agent reachable"})
		}
	}
	if len(cfg.Columns) == 0 {
		rep.Findings = append(rep.Findings, Finding{Message: "no columns configured"})
	}
	seen := map[string]bool{}
	for _, c := range cfg.Columns {
		name := NormalizeTable(c.Table) + "." + c.Column
		add := func(problem bool, format string, args ...any) {
			rep.Findings = append(rep.Findings, Finding{Column: name, Line: c.Line, Problem: problem, Message: fmt.Sprintf(format, args...)})
		}
		if seen[name] {
			add(true, "configured twice")
			continue
		}
		seen[name] = true
		if err := checkColumn(ctx, o.Conn, keys, o.Identity, c, add); err != nil {
			if o.Conn.IsClosed() || ctx.Err() != nil {
				return rep, err
			}
			add(true, "%v", err)
		}
	}
	return rep, nil
}

func checkColumn(ctx context.Context, conn *pgx.Conn, keys Keys, identity string, c config.Column, add func(bool, string, ...any)) error {
	if !strings.Contains(c.Scope, ":") {
		add(true, "scope %q is not keyring:name", c.Scope)
	}
	t, err := resolve(ctx, conn, c)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			add(true, "%v", err)
			return nil
		}
		return err
	}
	if p, err := t.readProgress(ctx, conn, kindEncrypt); err != nil {
		return err
	} else if p != nil && p.state != stateDone {
		add(true, "encrypt-column has not finished (%d rows done; run it again to resume)", p.done)
	}
	if t.colType != "bytea" {
		add(true, "column is %s, not bytea (plaintext: convert it with colcrypt encrypt-column)", t.colType)
		return nil
	}
	add(false, "bytea column, declared %s, mode %s, scope %s", t.declared, c.Mode, c.Scope)

	// What is stored: only envelopes, of this scope; which key versions.
	var values, plain, otherScope int64
	var versions []int64
	fp := envelope.Fingerprint(c.Scope)
	err = conn.QueryRow(ctx, `SELECT count(*),
			count(*) FILTER (WHERE substr(`+t.qcol+`, 1, 3) <> `+envelopePrefix+` OR length(`+t.qcol+`) < 12),
			count(*) FILTER (WHERE substr(`+t.qcol+`, 9, 4) <> $1::bytea),
			coalesce(array_agg(DISTINCT ('x' || encode(substr(`+t.qcol+`, 5, 4), 'hex'))::bit(32)::bigint)
				FILTER (WHERE substr(`+t.qcol+`, 1, 3) = `+envelopePrefix+`), '{}')
		FROM `+t.qtable+` WHERE `+t.qcol+` IS NOT NULL`, fp[:]).Scan(&values, &plain, &otherScope, &versions)
	if err != nil {
		return fmt.Errorf("read values: %w", err)
	}
	if plain > 0 {
		add(true, "%d of %d values are not envelopes (plaintext in a protected column)", plain, values)
	}
	if otherScope > plain {
		add(true, "%d values were sealed for another scope", otherScope-plain)
	}
	var constraint bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = $1 AND conname = $2)`,
		t.oid, EnvelopeConstraint(t.col)).Scan(&constraint); err != nil {
		return err
	}
	guard := "no envelope CHECK constraint"
	if constraint {
		guard = "envelope CHECK constraint present"
	}
	add(false, "%d values, key versions %v, %s", values, versions, guard)

	// Keys: seal and open a probe, then open one stored value (its version must still be live).
	if keys == nil {
		return nil
	}
	sealer, err := keys.Sealer(ctx, identity, t.ck)
	if err != nil {
		add(true, "no encryption key for %s: %v", identity, err)
		return nil
	}
	probe := []byte("keyward check")
	env, err := sealer.Seal(ctx, nil, probe)
	if err != nil {
		add(true, "seal with key version %d for %s: %v", sealer.Version(), identity, err)
		return nil
	}
	got, err := keys.Open(ctx, identity, t.ck, env, nil)
	if err != nil || !bytes.Equal(got, probe) {
		add(true, "open with key version %d for %s: %v", sealer.Version(), identity, err)
		return nil
	}
	add(false, "%s can seal and open (newest key version %d)", identity, sealer.Version())
	if values > plain {
		var stored []byte
		err := conn.QueryRow(ctx, `SELECT `+t.qcol+` FROM `+t.qtable+` WHERE substr(`+t.qcol+`, 1, 3) = `+envelopePrefix+
			` ORDER BY substr(`+t.qcol+`, 5, 4) LIMIT 1`).Scan(&stored)
		if err != nil {
			return fmt.Errorf("read a value: %w", err)
		}
		if _, err := keys.Open(ctx, identity, t.ck, stored, nil); err != nil {
			add(true, "a stored value with the oldest key version does not open: %v", err)
		}
	}
	return nil
}
