package migrate

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/colcrypt/colkeys"
	"github.com/keyward/keyward/colcrypt/envelope"
)

// Rewrap moves every value of the protected column o.Column that is not sealed with the newest
// key version (and the configured mode and scope) to it, online and in batches. It is idempotent
// and resumable. Result.Remaining is the number of values still not at the newest header after the
// final check (0 unless others wrote old-version values meanwhile); a value that does not open
// stops the run with an error wrapping envelope.ErrOpen.
func Rewrap(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	t, unlock, err := begin(ctx, &o, func(t *target) error {
		if t.colType != "bytea" {
			return fmt.Errorf("%w: %s is %s (encrypt-column converts a plaintext column first)", ErrNotBytea, t.name(), t.colType)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer unlock()

	res := &Result{Column: t.name()}
	sealer, err := o.Keys.Sealer(ctx, o.Identity, t.ck)
	if err != nil {
		return nil, fmt.Errorf("migrate: key for %s: %w", t.name(), err)
	}
	header, err := targetHeader(t.ck, sealer.Version())
	if err != nil {
		return nil, err
	}
	res.Version = sealer.Version()

	if err := t.ensureProgressTable(ctx, o.Conn); err != nil {
		return nil, err
	}
	p, err := t.readProgress(ctx, o.Conn, kindRewrap)
	if err != nil {
		return nil, err
	}
	var last []string
	if p != nil && p.state == stateRunning {
		last = p.lastKey
		res.Resumed = true
	}
	_, err = o.Conn.Exec(ctx, `INSERT INTO `+t.qprogress+` (table_name, column_name, kind, state, mode, scope, declared_type)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (table_name, column_name, kind) DO UPDATE SET state = EXCLUDED.state, mode = EXCLUDED.mode,
			scope = EXCLUDED.scope, declared_type = EXCLUDED.declared_type, updated_at = now(),
			last_key = CASE WHEN `+t.qprogress+`.state = 'done' THEN NULL ELSE `+t.qprogress+`.last_key END,
			rows_done = CASE WHEN `+t.qprogress+`.state = 'done' THEN 0 ELSE `+t.qprogress+`.rows_done END`,
		t.schema+"."+t.table, t.col, kindRewrap, stateRunning, o.Column.Mode, o.Column.Scope, t.declared.String())
	if err != nil {
		return nil, fmt.Errorf("migrate: progress row: %w", err)
	}

	r := &runner{o: o, t: t, res: res, pace: pacer{rate: o.Rate, start: time.Now()}}
	hexHeader := `\x` + hex.EncodeToString(header)
	if err := o.Conn.QueryRow(ctx, `SELECT count(*) FROM `+t.qtable+` WHERE `+t.qcol+` IS NOT NULL AND `+t.notAtHeader(1), hexHeader).Scan(&r.total); err != nil {
		return nil, fmt.Errorf("migrate: count old values: %w", err)
	}
	r.report(PhaseRewrap, 0, r.total)
	// The first pass resumes; later passes start over, for rows that were locked or written with
	// an old version meanwhile. A pass that rewraps nothing ends it.
	for pass := 0; pass < maxCatchUpPasses; pass++ {
		n, err := r.rewrapPass(ctx, last, hexHeader, header)
		if err != nil {
			return res, err
		}
		last = nil
		if n == 0 {
			break
		}
	}
	if _, err := o.Conn.Exec(ctx, `UPDATE `+t.qprogress+` SET state = $1, updated_at = now() WHERE table_name = $2 AND column_name = $3 AND kind = $4`,
		stateDone, t.schema+"."+t.table, t.col, kindRewrap); err != nil {
		return res, fmt.Errorf("migrate: progress: %w", err)
	}
	if err := r.verifyOpens(ctx, header); err != nil {
		return res, err
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// targetHeader is the header every value has once rewrapped.
func targetHeader(col colkeys.Column, version uint32) ([]byte, error) {
	alg, err := colkeys.AlgFor(col.Mode)
	if err != nil {
		return nil, err
	}
	return envelope.Header{Alg: alg, KeyVersion: version, Fingerprint: envelope.Fingerprint(col.Scope)}.AppendBinary(nil)
}

// notAtHeader is the predicate "the value's header is not parameter $n" (a bytea in hex text form).
func (t *target) notAtHeader(n int) string {
	return fmt.Sprintf(`substr(%s, 1, %d) <> $%d::bytea`, t.qcol, envelope.HeaderSize, n)
}

// rewrapPass walks the table once in key order from last (nil: the start).
func (r *runner) rewrapPass(ctx context.Context, last []string, hexHeader string, header []byte) (int64, error) {
	t := r.t
	order, keyText, after := t.keyset(1)
	var total int64
	for {
		var n int
		err := withTx(ctx, r.o.Conn, func(tx pgx.Tx) error {
			where := ""
			params := append(append([]string(nil), last...), hexHeader)
			if last != nil {
				where = after + " AND "
			}
			sql := `SELECT ctid::text, ` + keyText + `, ` + t.qcol + ` FROM ` + t.qtable + ` WHERE ` + where + t.qcol + ` IS NOT NULL AND ` +
				t.notAtHeader(len(params)) + ` ORDER BY ` + order +
				fmt.Sprintf(` LIMIT %d FOR UPDATE SKIP LOCKED`, r.o.BatchSize)
			rows, err := rawQuery(ctx, tx, sql, params, textFormats(1+len(t.pk), 1))
			if err != nil {
				return fmt.Errorf("migrate: read batch: %w", err)
			}
			if len(rows) == 0 {
				return nil
			}
			sealer, err := r.o.Keys.Sealer(ctx, r.o.Identity, t.ck)
			if err != nil {
				return fmt.Errorf("migrate: key for %s: %w", t.name(), err)
			}
			if sealer.Version() != r.res.Version {
				// Rotated during the run: finish this pass at the version we started with; a
				// later rewrap moves on. Mixing would make Remaining meaningless.
				return fmt.Errorf("migrate: key of %s rotated during rewrap (v%d -> v%d); run rewrap again", t.name(), r.res.Version, sealer.Version())
			}
			b := &pgx.Batch{}
			update := `UPDATE ` + t.qtable + ` SET ` + t.qcol + ` = $1 WHERE ctid = $2::text::tid` // once, not per row
			vi := 1 + len(t.pk)
			for _, row := range rows {
				plain, err := r.o.Keys.Open(ctx, r.o.Identity, t.ck, row[vi], nil)
				if err != nil {
					return fmt.Errorf("migrate: open a value of %s: %w", t.name(), err)
				}
				env, err := sealer.Seal(ctx, nil, plain)
				if err != nil {
					return fmt.Errorf("migrate: seal %s: %w", t.name(), err)
				}
				if !bytes.Equal(env[:envelope.HeaderSize], header) {
					return fmt.Errorf("migrate: sealer of %s wrote an unexpected header", t.name())
				}
				if err := r.same(ctx, env, plain); err != nil {
					return err
				}
				b.Queue(update, env, string(row[0]))
			}
			if err := sendExact(ctx, tx, b); err != nil {
				return err
			}
			if last, err = r.advance(ctx, tx, kindRewrap, rows[len(rows)-1], len(rows)); err != nil {
				return err
			}
			n = len(rows)
			return nil
		})
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, nil
		}
		total += int64(n)
		r.res.Batches++
		r.res.Rows += int64(n)
		if r.res.Rows > r.total {
			r.total = r.res.Rows
		}
		r.report(PhaseRewrap, r.res.Rows, r.total)
		if err := r.pace.wait(ctx, n); err != nil {
			return total, err
		}
	}
}

// verifyOpens opens every value (or a sample) and counts those not at the newest header.
func (r *runner) verifyOpens(ctx context.Context, header []byte) error {
	t := r.t
	ve := &VerifyError{Column: t.name()}
	vi := len(t.pk)
	check := func(rows [][][]byte) error {
		for _, row := range rows {
			env := row[vi]
			if env == nil {
				continue
			}
			ve.Checked++
			if len(env) < envelope.HeaderSize || !bytes.Equal(env[:envelope.HeaderSize], header) {
				r.res.Remaining++
			}
			if _, err := r.o.Keys.Open(ctx, r.o.Identity, t.ck, env, nil); err != nil {
				if !errors.Is(err, envelope.ErrOpen) {
					return fmt.Errorf("migrate: verify %s: %w", t.name(), err)
				}
				ve.Mismatches++
				if ve.FirstErr == nil {
					ve.FirstErr = err
				}
			}
		}
		return nil
	}
	if err := r.scan(ctx, []string{t.qcol}, "", 0, check); err != nil {
		return err
	}
	r.res.Verified = ve.Checked
	r.report(PhaseVerify, ve.Checked, ve.Checked)
	if ve.Mismatches > 0 {
		return ve
	}
	return nil
}

// scan reads the key (as text) and exprs (binary, from index len(t.pk)) of every row in key order,
// in snapshots of a few batches, or of a random sample of Options.VerifySample rows that match
// sampleWhere (if not empty), and hands the rows to fn. Progress is reported against total.
func (r *runner) scan(ctx context.Context, exprs []string, sampleWhere string, total int64, fn func(rows [][][]byte) error) error {
	t := r.t
	order, keyText, after := t.keyset(1)
	sel := `SELECT ` + keyText + `, ` + strings.Join(exprs, `, `) + ` FROM ` + t.qtable
	formats := make([]int16, len(t.pk)+len(exprs)) // the key in text, exprs in binary
	for i := len(t.pk); i < len(formats); i++ {
		formats[i] = 1
	}
	if r.o.VerifySample > 0 {
		if sampleWhere != "" {
			sel += ` WHERE ` + sampleWhere
		}
		return withTx(ctx, r.o.Conn, func(tx pgx.Tx) error {
			rows, err := rawQuery(ctx, tx, sel+fmt.Sprintf(` ORDER BY random() LIMIT %d`, r.o.VerifySample), nil, formats)
			if err != nil {
				return fmt.Errorf("migrate: read verification sample: %w", err)
			}
			return fn(rows)
		})
	}
	var last []string
	var seen int64
	for {
		var rows [][][]byte
		err := withTx(ctx, r.o.Conn, func(tx pgx.Tx) error {
			where := ""
			if last != nil {
				where = ` WHERE ` + after
			}
			var err error
			rows, err = rawQuery(ctx, tx, sel+where+` ORDER BY `+order+fmt.Sprintf(` LIMIT %d`, r.o.BatchSize*4), last, formats)
			if err != nil {
				return fmt.Errorf("migrate: read verification batch: %w", err)
			}
			return fn(rows)
		})
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		seen += int64(len(rows))
		r.report(PhaseVerify, seen, total)
		last = t.keyOf(rows[len(rows)-1], 0)
	}
}
