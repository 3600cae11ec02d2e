package proxy_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/keyward/keyward/colcrypt/proxy"
)

// exchange sends client messages on a hijacked session and returns a transcript of the server's
// answers up to the n-th ReadyForQuery.
func exchange(t *testing.T, dsn string, n int, msgs ...pgproto3.FrontendMessage) string {
	t.Helper()
	conn, _ := rawSession(t, dsn)
	fe := pgproto3.NewFrontend(conn, conn)
	for _, m := range msgs {
		fe.Send(m)
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out []string
	for rfq := 0; rfq < n; {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("after %v: %v", out, err)
		}
		switch m := m.(type) {
		case *pgproto3.ReadyForQuery:
			rfq++
			out = append(out, "Z"+string(m.TxStatus))
		case *pgproto3.DataRow:
			var vals []string
			for _, v := range m.Values {
				vals = append(vals, string(v))
			}
			out = append(out, "D("+strings.Join(vals, ",")+")")
		case *pgproto3.ErrorResponse:
			out = append(out, "E"+m.Code)
		case *pgproto3.CommandComplete:
			out = append(out, "C("+string(m.CommandTag)+")")
		case *pgproto3.RowDescription:
			out = append(out, fmt.Sprintf("T%d", len(m.Fields)))
		case *pgproto3.ParameterStatus, *pgproto3.NoticeResponse:
		default:
			out = append(out, fmt.Sprintf("%T", m)[len("*pgproto3."):])
		}
	}
	return strings.Join(out, " ")
}

// TestPipelines drives the protocol by hand through a proxy with hooks and compares the transcript
// with PostgreSQL's own: several Syncs in flight, named statements and portals, errors and refusals
// mid-pipeline, and an Execute the client never described.
func TestPipelines(t *testing.T) {
	pg := pgFor(t)
	ti := &testInterceptor{t: t}
	hooked := startProxy(t, pg, func(c *proxy.Config) { c.Interceptor = ti })
	plain := startProxy(t, pg, nil)
	cases := []struct {
		name string
		n    int
		msgs []pgproto3.FrontendMessage
		want string // for refusals, where PostgreSQL has no equivalent; "" = same as direct
	}{
		{"named statement across syncs with an error between", 3, []pgproto3.FrontendMessage{
			&pgproto3.Parse{Name: "s1", Query: "SELECT $1::int + 1"},
			&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{[]byte("1")}},
			&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{},
			&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{[]byte("x")}},
			&pgproto3.Execute{}, &pgproto3.Sync{},
			&pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "s1", Parameters: [][]byte{[]byte("41")}},
			&pgproto3.Describe{ObjectType: 'P', Name: "p"}, &pgproto3.Execute{Portal: "p"}, &pgproto3.Sync{},
		}, ""},
		{"execute never described", 2, []pgproto3.FrontendMessage{
			&pgproto3.Parse{Name: "nd", Query: "SELECT 'abc'::text AS secret, 2 AS n"}, &pgproto3.Sync{},
			&pgproto3.Bind{PreparedStatement: "nd"}, &pgproto3.Execute{}, &pgproto3.Sync{},
		}, "ParseComplete ZI BindComplete D(ABC,2) C(SELECT 1) ZI"},
		{"portal suspended, resumed, dropped at commit", 5, []pgproto3.FrontendMessage{
			&pgproto3.Query{String: "BEGIN"},
			&pgproto3.Parse{Query: "SELECT g::text AS secret FROM generate_series(1, 3) g"},
			&pgproto3.Bind{DestinationPortal: "cur"}, &pgproto3.Describe{ObjectType: 'P', Name: "cur"},
			&pgproto3.Execute{Portal: "cur", MaxRows: 2}, &pgproto3.Sync{},
			&pgproto3.Execute{Portal: "cur", MaxRows: 2}, &pgproto3.Sync{},
			&pgproto3.Query{String: "COMMIT"},
			&pgproto3.Execute{Portal: "cur"}, &pgproto3.Sync{},
		}, ""},
		{"refused parse mid-pipeline", 2, []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{},
			&pgproto3.Parse{Name: "bad", Query: "SELECT 'forbidden'"}, &pgproto3.Bind{PreparedStatement: "bad"}, &pgproto3.Execute{},
			&pgproto3.Sync{},
			&pgproto3.Bind{PreparedStatement: "bad"}, &pgproto3.Execute{}, &pgproto3.Sync{},
		}, "ParseComplete BindComplete T1 D(1) C(SELECT 1) E42501 ZI E26000 ZI"},
		{"refused query in a transaction", 4, []pgproto3.FrontendMessage{
			&pgproto3.Query{String: "BEGIN"}, &pgproto3.Query{String: "SELECT 'forbidden'"},
			&pgproto3.Query{String: "SELECT 1"}, &pgproto3.Query{String: "ROLLBACK"},
		}, "C(BEGIN) ZT E42501 ZE E25P02 ZE C(ROLLBACK) ZI"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := exchange(t, hooked.DSN(pg, pg.User, pg.Password), tc.n, tc.msgs...)
			want := tc.want
			if want == "" {
				want = exchange(t, plain.DSN(pg, pg.User, pg.Password), tc.n, tc.msgs...)
			}
			if got != want {
				t.Fatalf("through hooks:\n  %s\nwant:\n  %s", got, want)
			}
		})
	}
	ti.check(t)
}
