// Package migrate converts a live PostgreSQL column to Keyward envelopes and keeps it current: the
// library behind `colcrypt encrypt-column`, `colcrypt rewrap` and `colcrypt check`.
//
// It talks to PostgreSQL directly (never through the proxy) and gets keys through colcrypt/colkeys on
// behalf of one identity ("db:<role>"), so the key agent's policy decides, as for the proxy.
//
// # encrypt-column
//
// EncryptColumn turns a plaintext column C of table T into the bytea column of envelopes that the
// proxy expects, online, in four phases:
//
//  1. Prepare, one transaction: a progress row in <schema>.keyward_migrations (table, column, kind,
//     state, last primary key, rows done, mode, scope, type), a shadow column C__kw bytea with a
//     CHECK constraint C_kw_envelope (added NOT VALID, so without a scan) that admits only
//     envelopes, and a BEFORE INSERT OR UPDATE trigger (named zz_keyward_… so that it fires after
//     the table's other BEFORE triggers and sees the final row) that sets C__kw to NULL on every
//     INSERT and on every UPDATE that changes C. Writes by anyone else (the application, the
//     proxy, which does not treat C as protected yet) therefore never leave a stale envelope
//     beside a new plaintext: a row is "done" exactly when C__kw is not NULL, and it stays done
//     only while C keeps the value that was sealed.
//  2. Copy: batches in primary-key order, each one short transaction that reads the next rows with
//     FOR UPDATE SKIP LOCKED (C cast to the declared type, in binary), seals the canonical encoding
//     of each value (colcrypt/coltype), writes C__kw by ctid (stable while the row is locked), and
//     advances the progress row, all committed together. A kill at any point loses at most the
//     open batch, which Postgres rolls back; the next run resumes after the last committed key.
//     Rows skipped because they were locked, and rows written behind the cursor, are caught by
//     catch-up passes (sequential scans for C__kw IS NULL AND C IS NOT NULL) that follow.
//  3. Verify: every shadow value (or a random sample, Options.VerifySample) is read back with its
//     original in one snapshot, opened, and compared with the canonical encoding of the original.
//     Any mismatch stops the run before the swap (*VerifyError); the original column is untouched.
//  4. Swap: the envelope constraint is validated first (SHARE UPDATE EXCLUSIVE: others keep
//     reading and writing), then one transaction under ACCESS EXCLUSIVE (bounded by
//     Options.LockTimeout, retried) makes one scan for the rows still to seal (sealing and checking
//     each), drops the trigger and C, renames C__kw to C (the constraint follows), restores NOT
//     NULL (a second scan, only for a NOT NULL column), checks that no index, constraint or view
//     appeared on C meanwhile, and marks the progress row done. Readers and writers wait for this
//     transaction only; nobody ever sees a half-swapped table.
//
// The CHECK constraint is the fail-closed guard of the hand-over: a client that writes to C through
// a proxy still running without C in its configuration (or directly) gets a constraint violation
// instead of storing plaintext in a protected column. Operators configure the column in colcrypt.yaml
// before running encrypt-column (the tool takes mode, scope and type from there) and reload the proxy
// after it finishes; until the reload the proxy must run with a configuration that does not list C,
// since C is not bytea yet.
//
// Refused with a clear error: a table without a primary key (ErrNoPrimaryKey), a column that is part
// of it, a column other objects depend on (indexes, constraints, views, defaults: *DependentsError;
// drop them first, an index on plaintext would keep the plaintext), a run while another
// encrypt-column or rewrap holds the column (ErrBusy, a session advisory lock), and a resumed run
// whose configured mode, scope or type differs from the one it started with (ErrConfigChanged).
//
// Not guaranteed: during the run the table has one more column (SELECT * shows C__kw; INSERT
// without a column list still works, the shadow is last). Afterwards the column is at the end of
// the table's column order (SELECT * and COPY without a column list see it last), and a session
// with a prepared SELECT * gets PostgreSQL's "cached plan must not change result type" once.
// Column-level privileges and comments on C are not carried over. Catch-up passes and the
// verification are full scans (cheap next to the copy, but not free on very large tables); the
// trigger costs every concurrent write of the table a little during the run. A value the declared
// type's cast refuses stops the run with PostgreSQL's error, which may quote the value. Statistics
// are not refreshed (run ANALYZE).
//
// # rewrap
//
// Rewrap moves every value of a protected column whose header differs from the one new values get
// (an older key version, after `keyservice keyring rotate`; or another mode) to the newest version,
// in the same kind of batches: read with FOR UPDATE SKIP LOCKED, open, seal, check that the new
// envelope opens to the same plaintext, write back by ctid. It is idempotent (rows already at the
// newest header are not selected), resumable (progress row kind "rewrap"), and repeats passes until
// no old value is left or a pass makes no progress (then Result.Remaining says how many are left,
// e.g. rows written meanwhile by a proxy that had not yet seen the rotation). A final verification
// opens every value (or a sample).
//
// # check
//
// Check validates a configuration against the live catalog and the key agent: every configured
// column exists and is bytea, holds only envelopes of its scope, and the identity can both seal and
// open with its keys. It never writes.
package migrate
