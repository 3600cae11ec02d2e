package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyward/keyward/colcrypt/coltype"
	"github.com/keyward/keyward/colcrypt/envelope"
)

const (
	kindEncrypt = "encrypt"
	kindRewrap  = "rewrap"

	stateCopying = "copying"
	stateRunning = "running"
	stateDone    = "done"

	// envelopePrefix is the magic and format version every envelope starts with, as a bytea literal
	// (standard_conforming_strings is on by default since PostgreSQL 9.1 and we set it anyway).
	envelopePrefix = `'\x4b5701'::bytea`
)

// EncryptColumn converts the plaintext column o.Column into envelopes online. See the package
// documentation for the phases and what each guarantees. It is safe to call again after a kill, a
// cancellation or an error: it resumes.
func EncryptColumn(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	t, unlock, err := begin(ctx, &o, func(t *target) error {
		for _, p := range t.pk {
			if p.name == t.col {
				return fmt.Errorf("%w: %s is part of the primary key", ErrUnsupported, t.name())
			}
		}
		if len(t.shadowName()) > 63 {
			return fmt.Errorf("%w: column name %q too long for a shadow column (63 bytes)", ErrUnsupported, t.col)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer unlock()

	res := &Result{Column: t.name()}
	p, err := t.readProgress(ctx, o.Conn, kindEncrypt)
	if err != nil {
		return nil, err
	}
	if p != nil && p.state == stateDone && t.colType != "bytea" {
		// Finished once, but the column is plaintext again (dropped and re-created, or
		// decrypted by hand): the old row describes another column's history.
		if _, err := o.Conn.Exec(ctx, `DELETE FROM `+t.qprogress+` WHERE table_name = $1 AND column_name = $2 AND kind = $3`,
			t.schema+"."+t.table, t.col, kindEncrypt); err != nil {
			return nil, fmt.Errorf("migrate: progress: %w", err)
		}
		p = nil
	}
	switch {
	case p != nil && p.state == stateDone:
		return res, fmt.Errorf("%w: %s (encrypt-column finished earlier; rewrap moves values to a new key version)", ErrAlreadyDone, t.name())
	case p != nil:
		if p.mode != o.Column.Mode || p.scope != o.Column.Scope || p.typ != t.declared.String() {
			return nil, fmt.Errorf("%w: %s started as %s/%s/%s, configured now as %s/%s/%s",
				ErrConfigChanged, t.name(), p.mode, p.scope, p.typ, o.Column.Mode, o.Column.Scope, t.declared)
		}
		res.Resumed = true
	default:
		if err := t.freshStartChecks(ctx, o.Conn); err != nil {
			return nil, err
		}
	}
	if err := t.prepare(ctx, o); err != nil {
		return nil, err
	}
	if p == nil {
		p = &progressRow{state: stateCopying}
	}

	r := &runner{o: o, t: t, res: res, pace: pacer{rate: o.Rate, start: time.Now()}}
	if err := r.copy(ctx, p); err != nil {
		return res, err
	}
	if err := r.catchUp(ctx); err != nil {
		return res, err
	}
	if err := r.verifyEncrypted(ctx); err != nil {
		return res, err
	}
	if err := r.swap(ctx); err != nil {
		return res, err
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// begin is how EncryptColumn and Rewrap start: it applies the defaults, resolves the column,
// requires a primary key after check (the command's own refusals), sets the session up and takes
// the column's advisory lock, then resolves the column again under the lock (a run that held it
// until a moment ago may have swapped the column). The caller must call unlock.
func begin(ctx context.Context, o *Options, check func(*target) error) (t *target, unlock func(), err error) {
	if err := o.defaults(); err != nil {
		return nil, nil, err
	}
	if t, err = resolve(ctx, o.Conn, o.Column); err != nil {
		return nil, nil, err
	}
	if err := check(t); err != nil {
		return nil, nil, err
	}
	if err := t.requirePK(); err != nil {
		return nil, nil, err
	}
	if err := session(ctx, o.Conn); err != nil {
		return nil, nil, err
	}
	if unlock, err = t.lock(ctx, o.Conn); err != nil {
		return nil, nil, err
	}
	if t, err = resolve(ctx, o.Conn, o.Column); err != nil {
		unlock()
		return nil, nil, err
	}
	return t, unlock, nil
}

// session sets what every migration connection relies on.
func session(ctx context.Context, conn *pgx.Conn) error {
	// Batches are short, but the verification and catch-up scans are not: no statement timeout
	// inherited from the role's settings should cut them. standard_conforming_strings for the
	// bytea literals.
	_, err := conn.Exec(ctx, `SET statement_timeout = 0; SET standard_conforming_strings = on`)
	if err != nil {
		return fmt.Errorf("migrate: session settings: %w", err)
	}
	return nil
}

func (t *target) shadowName() string  { return t.col + "__kw" }
func (t *target) triggerName() string { return fmt.Sprintf("zz_keyward_encrypt_%d", t.attnum) }
func (t *target) functionName() string {
	return ident(t.schema, fmt.Sprintf("keyward_encrypt_%d_%d", t.oid, t.attnum))
}

// freshStartChecks refuses what a first run cannot convert.
func (t *target) freshStartChecks(ctx context.Context, conn *pgx.Conn) error {
	var shadow bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = $1 AND attname = $2 AND NOT attisdropped)`,
		t.oid, t.shadowName()).Scan(&shadow); err != nil {
		return fmt.Errorf("migrate: look up shadow column: %w", err)
	}
	if shadow {
		return fmt.Errorf("%w: %s already has a column %q that no encrypt-column run owns", ErrUnsupported, t.schema+"."+t.table, t.shadowName())
	}
	if t.colType == "bytea" {
		// A bytea column may hold plaintext bytes (declared type bytea) or envelopes already.
		var env bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+t.qtable+` WHERE substr(`+t.qcol+`, 1, 3) = `+envelopePrefix+`)`).Scan(&env)
		if err != nil {
			return fmt.Errorf("migrate: look for envelopes: %w", err)
		}
		if env {
			return fmt.Errorf("%w: %s holds envelopes already", ErrAlreadyDone, t.name())
		}
	}
	return nil
}

// dependents lists the objects that depend on the column (which DROP COLUMN would drop or refuse).
func (t *target) dependents(ctx context.Context, q pgx.Tx) error {
	rows, err := q.Query(ctx, `SELECT pg_describe_object(classid, objid, objsubid) FROM pg_depend
		WHERE refclassid = 'pg_class'::regclass AND refobjid = $1 AND refobjsubid = $2 AND deptype IN ('n', 'a')
		ORDER BY 1`, t.oid, t.attnum)
	if err != nil {
		return fmt.Errorf("migrate: look up dependent objects: %w", err)
	}
	objs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("migrate: look up dependent objects: %w", err)
	}
	if len(objs) > 0 {
		return &DependentsError{Column: t.name(), Objects: objs}
	}
	return nil
}

// prepare creates (or, on resume, re-creates idempotently) the progress row, the shadow column and
// the trigger, in one transaction.
func (t *target) prepare(ctx context.Context, o Options) error {
	return retryLock(ctx, o, func(tx pgx.Tx) error {
		if err := t.ensureProgressTable(ctx, tx); err != nil {
			return err
		}
		if err := t.dependents(ctx, tx); err != nil {
			return err
		}
		// The value compared is the text form under the C collation: a byte-wise comparison, so
		// any change a canonical encoding could see nulls the shadow (a spurious re-seal at worst).
		fn := fmt.Sprintf(`CREATE OR REPLACE FUNCTION %[1]s() RETURNS trigger LANGUAGE plpgsql AS $kw$
BEGIN
	-- keyward encrypt-column: a row whose plaintext changes loses its envelope, to be sealed again.
	IF TG_OP = 'INSERT' OR NEW.%[2]s::text COLLATE "C" IS DISTINCT FROM OLD.%[2]s::text COLLATE "C" THEN
		NEW.%[3]s := NULL;
	END IF;
	RETURN NEW;
END
$kw$`, t.functionName(), t.qcol, t.qshadow)
		stmts := []string{
			`ALTER TABLE ` + t.qtable + ` ADD COLUMN IF NOT EXISTS ` + t.qshadow + ` bytea`,
			fn,
			`DROP TRIGGER IF EXISTS ` + ident(t.triggerName()) + ` ON ` + t.qtable,
			`CREATE TRIGGER ` + ident(t.triggerName()) + ` BEFORE INSERT OR UPDATE ON ` + t.qtable +
				` FOR EACH ROW EXECUTE FUNCTION ` + t.functionName() + `()`,
		}
		var guarded bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = $1 AND conname = $2)`,
			t.oid, EnvelopeConstraint(t.col)).Scan(&guarded); err != nil {
			return fmt.Errorf("migrate: look up constraints: %w", err)
		}
		if !guarded {
			// NOT VALID: added without a scan. It follows the shadow column through the rename
			// and keeps plaintext out of the protected column for good; validated before the swap.
			stmts = append(stmts, `ALTER TABLE `+t.qtable+` ADD CONSTRAINT `+ident(EnvelopeConstraint(t.col))+
				` CHECK (`+t.qshadow+` IS NULL OR substr(`+t.qshadow+`, 1, 3) = `+envelopePrefix+`) NOT VALID`)
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("migrate: prepare %s: %w", t.name(), err)
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+t.qprogress+` (table_name, column_name, kind, state, mode, scope, declared_type)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
			t.schema+"."+t.table, t.col, kindEncrypt, stateCopying, o.Column.Mode, o.Column.Scope, t.declared.String())
		if err != nil {
			return fmt.Errorf("migrate: progress row: %w", err)
		}
		return nil
	})
}

func withTx(ctx context.Context, conn *pgx.Conn, fn func(pgx.Tx) error) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}

// runner carries one run's state.
type runner struct {
	o     Options
	t     *target
	res   *Result
	pace  pacer
	total int64
}

func (r *runner) report(phase string, done, total int64) {
	if r.o.Progress != nil {
		r.o.Progress(Progress{Phase: phase, Done: done, Total: total, Batches: r.res.Batches})
	}
}

// rawQuery runs sql with text parameters and the given result formats, returning all rows (copied
// out of the connection's buffers by pgconn).
func rawQuery(ctx context.Context, tx pgx.Tx, sql string, params []string, formats []int16) ([][][]byte, error) {
	vals := make([][]byte, len(params))
	for i, p := range params {
		vals[i] = []byte(p)
	}
	res := tx.Conn().PgConn().ExecParams(ctx, sql, vals, nil, nil, formats).Read()
	return res.Rows, res.Err
}

func textFormats(n int, tail ...int16) []int16 {
	f := make([]int16, n, n+len(tail))
	return append(f, tail...)
}

// sealRows seals the values of rows (ctid as text at index 0, the value in binary at index vi) and
// writes them to the shadow column by ctid. check re-opens each envelope before writing it (for
// values the verification pass will not see). It returns how many rows were written.
func (r *runner) sealRows(ctx context.Context, tx pgx.Tx, rows [][][]byte, vi int, check bool) (int, error) {
	t := r.t
	sealer, err := r.o.Keys.Sealer(ctx, r.o.Identity, t.ck)
	if err != nil {
		return 0, fmt.Errorf("migrate: key for %s: %w", t.name(), err)
	}
	r.res.Version = sealer.Version()
	b := &pgx.Batch{}
	update := `UPDATE ` + t.qtable + ` SET ` + t.qshadow + ` = $1 WHERE ctid = $2::text::tid` // once, not per row
	for _, row := range rows {
		canon, err := coltype.Canonical(t.declared, coltype.BinaryFormat, row[vi], nil)
		if err != nil {
			return 0, fmt.Errorf("migrate: a value of %s is not a valid %s: %w", t.name(), t.declared, err)
		}
		env, err := sealer.Seal(ctx, nil, canon)
		if err != nil {
			return 0, fmt.Errorf("migrate: seal %s: %w", t.name(), err)
		}
		if check {
			if err := r.same(ctx, env, canon); err != nil {
				return 0, err
			}
		}
		b.Queue(update, env, string(row[0]))
	}
	if err := sendExact(ctx, tx, b); err != nil {
		return 0, err
	}
	return len(rows), nil
}

// advance records a committed-to-be batch in the progress row, inside the batch's transaction:
// its last key (at index 1 of lastRow, after the ctid) and n more rows done. It then runs the
// BeforeCommit hook, and returns the key to continue after.
func (r *runner) advance(ctx context.Context, tx pgx.Tx, kind string, lastRow [][]byte, n int) ([]string, error) {
	t := r.t
	next := t.keyOf(lastRow, 1)
	if _, err := tx.Exec(ctx, `UPDATE `+t.qprogress+` SET last_key = $1, rows_done = rows_done + $2, updated_at = now()
		WHERE table_name = $3 AND column_name = $4 AND kind = $5`, next, n, t.schema+"."+t.table, t.col, kind); err != nil {
		return nil, fmt.Errorf("migrate: progress: %w", err)
	}
	if r.o.BeforeCommit != nil {
		if err := r.o.BeforeCommit(r.res.Batches); err != nil {
			return nil, err
		}
	}
	return next, nil
}

// same checks that env opens to want.
func (r *runner) same(ctx context.Context, env, want []byte) error {
	got, err := r.o.Keys.Open(ctx, r.o.Identity, r.t.ck, env, nil)
	if err != nil {
		return &VerifyError{Column: r.t.name(), Checked: 1, Mismatches: 1, FirstErr: err}
	}
	if !bytes.Equal(got, want) {
		return &VerifyError{Column: r.t.name(), Checked: 1, Mismatches: 1}
	}
	return nil
}

// sendExact sends b and requires every statement to affect exactly one row: the rows are locked,
// so anything else is a bug we must not commit.
func sendExact(ctx context.Context, tx pgx.Tx, b *pgx.Batch) error {
	br := tx.SendBatch(ctx, b)
	for i := 0; i < b.Len(); i++ {
		tag, err := br.Exec()
		if err != nil {
			br.Close()
			return fmt.Errorf("migrate: write batch: %w", err)
		}
		if tag.RowsAffected() != 1 {
			br.Close()
			return fmt.Errorf("migrate: write batch: a locked row was not found by ctid (%d rows)", tag.RowsAffected())
		}
	}
	return br.Close()
}

// copy is phase 2: batches in primary key order from the last committed position.
func (r *runner) copy(ctx context.Context, p *progressRow) error {
	t := r.t
	order, keyText, after := t.keyset(1)
	if err := r.o.Conn.QueryRow(ctx, `SELECT count(*) FROM `+t.qtable+` WHERE `+t.qcol+` IS NOT NULL AND `+t.qshadow+` IS NULL`).Scan(&r.total); err != nil {
		return fmt.Errorf("migrate: count rows: %w", err)
	}
	total := r.total + p.done
	r.total = total
	done := p.done
	last := p.lastKey
	r.report(PhaseCopy, done, total)
	formats := textFormats(1+len(t.pk), 1)
	for {
		var n int
		err := withTx(ctx, r.o.Conn, func(tx pgx.Tx) error {
			where := ""
			if last != nil {
				where = after + " AND "
			}
			sql := `SELECT ctid::text, ` + keyText + `, ` + t.qcol + `::` + t.declared.SQLName() + ` FROM ` + t.qtable +
				` WHERE ` + where + t.qcol + ` IS NOT NULL AND ` + t.qshadow + ` IS NULL ORDER BY ` + order +
				fmt.Sprintf(` LIMIT %d FOR UPDATE SKIP LOCKED`, r.o.BatchSize)
			rows, err := rawQuery(ctx, tx, sql, last, formats)
			if err != nil {
				return fmt.Errorf("migrate: read batch: %w", err)
			}
			if len(rows) == 0 {
				return nil
			}
			if n, err = r.sealRows(ctx, tx, rows, 1+len(t.pk), false); err != nil {
				return err
			}
			last, err = r.advance(ctx, tx, kindEncrypt, rows[len(rows)-1], n)
			return err // on an error the run stops: last no longer matters
		})
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		r.res.Batches++
		r.res.Rows += int64(n)
		done += int64(n)
		if done > total {
			total = done
		}
		r.total = total
		r.report(PhaseCopy, done, total)
		if err := r.pace.wait(ctx, n); err != nil {
			return err
		}
	}
}

// catchUp is the rest of phase 2: rows written behind the cursor or skipped while locked.
// It stops when a pass finds less than a batch: the swap seals the remainder under its lock.
func (r *runner) catchUp(ctx context.Context) error {
	t := r.t
	var done int64
	for pass := 0; pass < maxCatchUpPasses*1000; pass++ {
		var n int
		err := withTx(ctx, r.o.Conn, func(tx pgx.Tx) error {
			rows, err := rawQuery(ctx, tx, `SELECT ctid::text, `+t.qcol+`::`+t.declared.SQLName()+` FROM `+t.qtable+
				` WHERE `+t.qcol+` IS NOT NULL AND `+t.qshadow+` IS NULL`+
				fmt.Sprintf(` LIMIT %d FOR UPDATE SKIP LOCKED`, r.o.BatchSize), nil, []int16{0, 1})
			if err != nil {
				return fmt.Errorf("migrate: read catch-up batch: %w", err)
			}
			n, err = r.sealRows(ctx, tx, rows, 1, false)
			return err
		})
		if err != nil {
			return err
		}
		if n > 0 {
			r.res.Batches++
			r.res.Rows += int64(n)
			done += int64(n)
			r.report(PhaseCatchUp, done, 0)
			if err := r.pace.wait(ctx, n); err != nil {
				return err
			}
		}
		if n < r.o.BatchSize {
			return nil
		}
	}
	return nil
}

// verifyEncrypted is phase 3: every sealed shadow value (or a sample) must open to the canonical
// encoding of the value beside it, read in the same snapshot. Mismatching rows get their shadow
// reset to NULL ("to do") before the error is returned, so that a re-run seals them again and
// verifies them again; the original column is never touched.
func (r *runner) verifyEncrypted(ctx context.Context) error {
	t := r.t
	ve := &VerifyError{Column: t.name()}
	var bad [][]string // primary keys of mismatching rows
	vi := len(t.pk)
	check := func(rows [][][]byte) error {
		for _, row := range rows {
			orig, env := row[vi], row[vi+1]
			mismatch := false
			switch {
			case orig == nil && env != nil:
				ve.Checked++
				mismatch = true
			case env == nil:
				// Not sealed yet (written meanwhile): the swap seals it under its lock.
			default:
				ve.Checked++
				canon, err := coltype.Canonical(t.declared, coltype.BinaryFormat, orig, nil)
				if err != nil {
					return fmt.Errorf("migrate: a value of %s is not a valid %s: %w", t.name(), t.declared, err)
				}
				got, err := r.o.Keys.Open(ctx, r.o.Identity, t.ck, env, nil)
				if err != nil && !errors.Is(err, envelope.ErrOpen) {
					return fmt.Errorf("migrate: verify %s: %w", t.name(), err)
				}
				if err != nil || !bytes.Equal(got, canon) {
					mismatch = true
					if ve.FirstErr == nil && err != nil {
						ve.FirstErr = err
					}
				}
			}
			if mismatch {
				ve.Mismatches++
				bad = append(bad, t.keyOf(row, 0))
			}
		}
		return nil
	}
	exprs := []string{t.qcol + `::` + t.declared.SQLName(), t.qshadow}
	if err := r.scan(ctx, exprs, t.qshadow+` IS NOT NULL OR `+t.qcol+` IS NULL`, r.total, check); err != nil {
		return err
	}
	r.res.Verified += ve.Checked
	r.report(PhaseVerify, ve.Checked, ve.Checked)
	if ve.Mismatches == 0 {
		return nil
	}
	// By primary key, not ctid: the row may have moved since it was read.
	keyEq := t.keyCompare("=", 1)
	err := withTx(ctx, r.o.Conn, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, key := range bad {
			args := make([]any, len(key))
			for i, k := range key {
				args[i] = k
			}
			b.Queue(`UPDATE `+t.qtable+` SET `+t.qshadow+` = NULL WHERE `+keyEq, args...)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("%w (and resetting the mismatching rows failed: %v)", ve, err)
	}
	return ve
}

// swap is phase 4, one transaction under ACCESS EXCLUSIVE.
func (r *runner) swap(ctx context.Context) error {
	if err := retryLock(ctx, r.o, func(tx pgx.Tx) error {
		// SHARE UPDATE EXCLUSIVE: others keep reading and writing while the shadow column's
		// envelope constraint is checked, so the swap does not have to scan for it under its lock.
		_, err := tx.Exec(ctx, `ALTER TABLE `+r.t.qtable+` VALIDATE CONSTRAINT `+ident(EnvelopeConstraint(r.t.col)))
		return err
	}); err != nil {
		return fmt.Errorf("migrate: validate the envelope constraint of %s: %w", r.t.name(), err)
	}
	r.report(PhaseSwap, 0, 1)
	if err := retryLock(ctx, r.o, r.swapTx(ctx)); err != nil {
		return fmt.Errorf("migrate: swap %s: %w", r.t.name(), err)
	}
	r.report(PhaseSwap, 1, 1)
	return nil
}

// retryLock runs fn in a transaction with lock_timeout set, again (with a growing pause) when a
// lock was not granted in time: DDL waiting in the lock queue blocks every later reader of the
// table, so it must not wait long, and a busy moment passes.
func retryLock(ctx context.Context, o Options, fn func(pgx.Tx) error) error {
	var err error
	for attempt := 0; attempt < lockAttempts; attempt++ {
		err = withTx(ctx, o.Conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, o.LockTimeout.Milliseconds())); err != nil {
				return err
			}
			return fn(tx)
		})
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "55P03" { // lock_not_available
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt+1) * time.Second):
		}
	}
	return err
}

func (r *runner) swapTx(ctx context.Context) func(pgx.Tx) error {
	t := r.t
	return func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE `+t.qtable+` IN ACCESS EXCLUSIVE MODE`); err != nil {
			return err
		}
		// Nobody else can write now. One scan finds the rows still to seal and any row whose
		// shadow is set where the original is NULL (which the trigger makes impossible: if it
		// happens, something we do not understand wrote the table, and we stop). The rows found
		// are sealed and each envelope checked as we go (the verification pass did not see them);
		// after that, shadow and original are NULL in exactly the same rows.
		rows, err := rawQuery(ctx, tx, `SELECT ctid::text, `+t.qcol+`::`+t.declared.SQLName()+`, `+t.qshadow+` IS NOT NULL FROM `+t.qtable+
			` WHERE (`+t.qcol+` IS NULL) <> (`+t.qshadow+` IS NULL)`, nil, []int16{0, 1, 0})
		if err != nil {
			return fmt.Errorf("read the last rows: %w", err)
		}
		pending := rows[:0]
		for _, row := range rows {
			if string(row[2]) == "t" {
				return fmt.Errorf("%w: a row has an envelope but a NULL original", ErrSwapIncomplete)
			}
			pending = append(pending, row)
		}
		for len(pending) > 0 {
			n := min(len(pending), r.o.BatchSize)
			if _, err := r.sealRows(ctx, tx, pending[:n], 1, true); err != nil {
				return err
			}
			r.res.Rows += int64(n)
			r.res.Verified += int64(n)
			pending = pending[n:]
		}
		if err := t.dependents(ctx, tx); err != nil {
			return err
		}
		stmts := []string{
			`DROP TRIGGER ` + ident(t.triggerName()) + ` ON ` + t.qtable,
			`DROP FUNCTION ` + t.functionName() + `()`,
			`ALTER TABLE ` + t.qtable + ` DROP COLUMN ` + t.qcol,
			`ALTER TABLE ` + t.qtable + ` RENAME COLUMN ` + t.qshadow + ` TO ` + t.qcol,
		}
		if t.notNull {
			stmts = append(stmts, `ALTER TABLE `+t.qtable+` ALTER COLUMN `+t.qcol+` SET NOT NULL`)
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE `+t.qprogress+` SET state = $1, updated_at = now() WHERE table_name = $2 AND column_name = $3 AND kind = $4`,
			stateDone, t.schema+"."+t.table, t.col, kindEncrypt)
		return err
	}
}

// EnvelopeConstraint is the name of the CHECK constraint encrypt-column leaves on a column: only
// envelopes (or NULL) may be stored in it.
func EnvelopeConstraint(column string) string { return column + "_kw_envelope" }
