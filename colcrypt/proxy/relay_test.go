package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/keyward/keyward/testenv"
)

var execModes = []struct {
	name string
	mode pgx.QueryExecMode
}{
	{"cache_statement", pgx.QueryExecModeCacheStatement},
	{"cache_describe", pgx.QueryExecModeCacheDescribe},
	{"describe_exec", pgx.QueryExecModeDescribeExec},
	{"exec", pgx.QueryExecModeExec},
	{"simple_protocol", pgx.QueryExecModeSimpleProtocol},
}

// typedRow is a row of many types, read in binary in the extended modes and in text in simple mode.
type typedRow struct {
	I4   int32
	I8   int64
	T    string
	N    pgtype.Numeric
	F    float64
	B    bool
	D    time.Time
	TS   time.Time
	U    [16]byte
	BY   []byte
	J    map[string]any
	Arr  []int32
	Null *string
}

const typedQuery = `SELECT $1::int4, $2::int8, $3::text, 12345.678::numeric, $4::float8, true, '2024-02-29'::date,
	'2024-01-02 03:04:05.123456+00'::timestamptz, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, $5::bytea,
	'{"k": [1, "x"]}'::jsonb, ARRAY[1,2,3]::int4[], NULL::text`

func queryTyped(ctx context.Context, c *pgx.Conn, mode pgx.QueryExecMode) (typedRow, error) {
	var r typedRow
	err := c.QueryRow(ctx, typedQuery, mode, int32(-7), int64(1)<<40, "héllo\x01", 2.5, []byte{0, 1, 0xff}).
		Scan(&r.I4, &r.I8, &r.T, &r.N, &r.F, &r.B, &r.D, &r.TS, &r.U, &r.BY, &r.J, &r.Arr, &r.Null)
	return r, err
}

// batchOutcome runs a pipeline with an error in the middle and reports what the client saw.
func batchOutcome(ctx context.Context, c *pgx.Conn, table string) (string, error) {
	if _, err := c.Exec(ctx, "CREATE TEMP TABLE IF NOT EXISTS "+table+" (v int)"); err != nil {
		return "", err
	}
	if _, err := c.Exec(ctx, "TRUNCATE "+table); err != nil {
		return "", err
	}
	b := &pgx.Batch{}
	b.Queue("INSERT INTO " + table + " VALUES (1)")
	b.Queue("SELECT 42")
	b.Queue("SELECT 1/0")
	b.Queue("INSERT INTO " + table + " VALUES (2)")
	br := c.SendBatch(ctx, b)
	var out []string
	for i := 0; i < 4; i++ {
		var v any
		var err error
		if i == 1 {
			err = br.QueryRow().Scan(&v)
		} else {
			_, err = br.Exec()
		}
		out = append(out, fmt.Sprintf("%v/%v", v, errCode(err)))
	}
	if err := br.Close(); err != nil {
		out = append(out, "close:"+errCode(err))
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		return "", err
	}
	return fmt.Sprintf("%v rows=%d", out, n), nil
}

func errCode(err error) string {
	if err == nil {
		return "ok"
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return "error"
}

func TestPgxExecModes(t *testing.T) {
	eachRelay(t, func(t *testing.T, start startFunc) {
		pg := pgFor(t)
		e := start(t, pg, nil)
		ctx := ctxT(t, 60*time.Second)
		for _, m := range execModes {
			t.Run(m.name, func(t *testing.T) {
				c := connect(t, e.DSN(pg, pg.User, pg.Password, "default_query_exec_mode", m.name))
				direct := connect(t, pg.UserDSN()+"&default_query_exec_mode="+m.name)
				for i := 0; i < 3; i++ { // statement caches kick in from the second run
					got, err := queryTyped(ctx, c, m.mode)
					if err != nil {
						t.Fatalf("through proxy: %v", err)
					}
					want, err := queryTyped(ctx, direct, m.mode)
					if err != nil {
						t.Fatalf("direct: %v", err)
					}
					if !reflect.DeepEqual(got, want) {
						t.Fatalf("run %d: proxy %+v != direct %+v", i, got, want)
					}
				}
				gotB, err := batchOutcome(ctx, c, "batch_"+m.name)
				if err != nil {
					t.Fatal(err)
				}
				wantB, err := batchOutcome(ctx, direct, "batch_"+m.name)
				if err != nil {
					t.Fatal(err)
				}
				if gotB != wantB || !strings.Contains(gotB, "22012") {
					t.Fatalf("pipeline with an error: proxy %s, direct %s", gotB, wantB)
				}
				// Named statements and portals via SQL, and ParameterStatus.
				if _, err := c.Exec(ctx, "SET application_name = 'colcrypt-test'", pgx.QueryExecModeSimpleProtocol); err != nil {
					t.Fatal(err)
				}
				if got := c.PgConn().ParameterStatus("application_name"); got != "colcrypt-test" {
					t.Fatalf("ParameterStatus application_name = %q", got)
				}
			})
		}
	})
}

func TestPgbench(t *testing.T) {
	eachRelay(t, func(t *testing.T, start startFunc) {
		pg := pgFor(t)
		e := start(t, pg, nil)
		runPgbenchModes(t, pg, e.DSN(pg, pg.User, pg.Password))
	})
}

func runPgbenchModes(t *testing.T, pg *testenv.PG, dsn string) {
	pgbench := filepath.Join(pg.BinDir, "pgbench")
	if out, err := exec.Command(pgbench, "-i", "-q", "-s", "1", "--foreign-keys", dsn).CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	for _, mode := range []string{"simple", "extended", "prepared"} {
		t.Run(mode, func(t *testing.T) {
			out, err := exec.Command(pgbench, "-M", mode, "-c", "4", "-j", "2", "-t", "50", dsn).CombinedOutput()
			if err != nil {
				t.Fatalf("pgbench: %v\n%s", err, out)
			}
			if !bytes.Contains(out, []byte("actually processed: 200/200")) ||
				(bytes.Contains(out, []byte("failed transactions")) && !bytes.Contains(out, []byte("failed transactions: 0 "))) {
				t.Fatalf("pgbench output:\n%s", out)
			}
		})
	}
}

func TestLogins(t *testing.T) {
	pg := pgFor(t)
	e := startProxy(t, pg, nil)
	ctx := ctxT(t, 30*time.Second)
	cases := []struct {
		name, user, password string
		wantCode             string
	}{
		{"scram", pg.User, pg.Password, ""},
		{"scram wrong password", pg.User, "nope", "28P01"},
		{"md5", md5User, md5Password, ""},
		{"md5 wrong password", md5User, "nope", "28P01"},
		{"unknown role", "nobody_here", "x", "28P01"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := pgx.Connect(ctx, e.DSN(pg, tc.user, tc.password))
			if err == nil {
				defer c.Close(ctx)
				var who string
				if err := c.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != tc.user {
					t.Fatalf("current_user = %q, %v", who, err)
				}
			}
			if got := errCode(err); tc.wantCode == "" && err != nil || tc.wantCode != "" && got != tc.wantCode {
				t.Fatalf("error %v (code %s), want code %q", err, got, tc.wantCode)
			}
			if err != nil {
				// The client gets PostgreSQL's own message.
				_, derr := pgx.Connect(ctx, strings.Replace(e.DSN(pg, tc.user, tc.password), e.Addr, fmt.Sprintf("%s:%d", pg.Host, pg.Port), 1))
				var a, b *pgconn.PgError
				if !errors.As(err, &a) || !errors.As(derr, &b) || a.Message != b.Message {
					t.Fatalf("proxy error %v != direct error %v", err, derr)
				}
			}
		})
	}
}

func TestCancel(t *testing.T) {
	eachRelay(t, func(t *testing.T, start startFunc) {
		pg := pgFor(t)
		e := start(t, pg, nil)
		c := connect(t, e.DSN(pg, pg.User, pg.Password))
		ctx := ctxT(t, 20*time.Second)
		time.AfterFunc(300*time.Millisecond, func() {
			// A CancelRequest on a new connection to the proxy, with the key the proxy issued.
			if err := c.PgConn().CancelRequest(ctx); err != nil {
				t.Errorf("cancel request: %v", err)
			}
		})
		began := time.Now()
		_, err := c.Exec(ctx, "SELECT pg_sleep(10)")
		took := time.Since(began)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57014" {
			// 57014 proves the backend was cancelled (not just the client giving up).
			t.Fatalf("want query_canceled (57014), got %v", err)
		}
		if took > time.Second+300*time.Millisecond {
			t.Fatalf("cancel took %v", took)
		}
		if _, err := c.Exec(context.Background(), "SELECT 1"); err != nil {
			t.Fatalf("session unusable after cancel: %v", err)
		}
		// A cancel with a made-up key (here: the real backend's pid, which the client never sees) does
		// nothing.
		var realPID uint32
		if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&realPID); err != nil {
			t.Fatal(err)
		}
		if realPID == c.PgConn().PID() {
			t.Fatalf("client was given the real backend pid %d", realPID)
		}
		other := connect(t, e.DSN(pg, pg.User, pg.Password))
		time.AfterFunc(200*time.Millisecond, func() {
			raw, err := net.Dial("tcp", e.Addr)
			if err != nil {
				return
			}
			defer raw.Close()
			b, _ := (&pgproto3.CancelRequest{ProcessID: other.PgConn().PID(), SecretKey: []byte{1, 2, 3, 4}}).Encode(nil)
			raw.Write(b)
		})
		if _, err := other.Exec(ctx, "SELECT pg_sleep(0.6)"); err != nil {
			t.Fatalf("a cancel with a wrong secret cancelled the query: %v", err)
		}
	})
}

func TestCopyRoundTrip(t *testing.T) {
	eachRelay(t, func(t *testing.T, start startFunc) {
		pg := pgFor(t)
		e := start(t, pg, nil)
		ctx := ctxT(t, 60*time.Second)
		c := connect(t, e.DSN(pg, pg.User, pg.Password))
		if _, err := c.Exec(ctx, "CREATE TEMP TABLE copy_t (id int, name text, b bytea, ts timestamptz)"); err != nil {
			t.Fatal(err)
		}
		var in bytes.Buffer
		for i := 0; i < 100000; i++ {
			fmt.Fprintf(&in, "%d\tname-%d \\\\ \\t tab\t\\\\x%02x%02x\t2024-01-02 03:04:%02d+00\n", i, i, i%256, (i/256)%256, i%60)
		}
		src := in.Bytes()
		tag, err := c.PgConn().CopyFrom(ctx, bytes.NewReader(src), "COPY copy_t FROM STDIN")
		if err != nil || tag.RowsAffected() != 100000 {
			t.Fatalf("copy from: %v %v", tag, err)
		}
		if _, err := c.Exec(ctx, "SET TimeZone = 'UTC'"); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		tag, err = c.PgConn().CopyTo(ctx, &out, "COPY (SELECT * FROM copy_t ORDER BY id) TO STDOUT")
		if err != nil || tag.RowsAffected() != 100000 {
			t.Fatalf("copy to: %v %v", tag, err)
		}
		if !bytes.Equal(out.Bytes(), src) {
			t.Fatalf("COPY out differs from COPY in (%d vs %d bytes)", out.Len(), len(src))
		}
		// A failing COPY FROM leaves the session usable.
		_, err = c.PgConn().CopyFrom(ctx, strings.NewReader("1\tx\tnot-bytea\tnot-a-time\n"), "COPY copy_t FROM STDIN")
		if errCode(err) != "22007" && errCode(err) != "22P02" {
			t.Fatalf("bad copy: %v", err)
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM copy_t").Scan(&n); err != nil || n != 100000 {
			t.Fatalf("count %d %v", n, err)
		}
	})
}

func TestListenNotify(t *testing.T) {
	eachRelay(t, func(t *testing.T, start startFunc) {
		pg := pgFor(t)
		e := start(t, pg, nil)
		ctx := ctxT(t, 20*time.Second)
		l := connect(t, e.DSN(pg, pg.User, pg.Password))
		n := connect(t, e.DSN(pg, pg.User, pg.Password))
		if _, err := l.Exec(ctx, "LISTEN colcrypt_ch"); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Exec(ctx, "SELECT pg_notify('colcrypt_ch', 'payload-1')"); err != nil {
			t.Fatal(err)
		}
		got, err := l.WaitForNotification(ctx)
		if err != nil || got.Channel != "colcrypt_ch" || got.Payload != "payload-1" {
			t.Fatalf("notification %+v %v", got, err)
		}
		var pid uint32
		if err := n.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil || got.PID != pid {
			t.Fatalf("notification from pid %d, notifier backend is %d (%v)", got.PID, pid, err)
		}
	})
}

func TestConcurrentSessions(t *testing.T) {
	eachRelay(t, func(t *testing.T, start startFunc) {
		pg := pgFor(t)
		e := start(t, pg, nil)
		const n = 300
		ctx := ctxT(t, 50*time.Second)
		conns := make([]*pgx.Conn, n)
		pids := make([]uint32, n)
		errs := make(chan error, n)
		sem := make(chan struct{}, 32)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				c, err := pgx.Connect(ctx, e.DSN(pg, pg.User, pg.Password))
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
				errs <- c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pids[i])
			}()
		}
		wg.Wait()
		close(errs)
		defer func() {
			for _, c := range conns {
				if c != nil {
					c.Close(context.Background())
				}
			}
		}()
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		seen := map[uint32]bool{}
		for _, p := range pids {
			seen[p] = true
		}
		if len(seen) != n {
			t.Fatalf("%d distinct backends for %d sessions", len(seen), n)
		}
		// All at once, each on its own backend.
		var wg2 sync.WaitGroup
		fail := make(chan error, n)
		for i, c := range conns {
			wg2.Add(1)
			go func() {
				defer wg2.Done()
				var v int
				if err := c.QueryRow(ctx, "SELECT $1::int + 1", i).Scan(&v); err != nil || v != i+1 {
					fail <- fmt.Errorf("session %d: %d %v", i, v, err)
				}
			}()
		}
		wg2.Wait()
		close(fail)
		for err := range fail {
			t.Fatal(err)
		}
	})
}
