package proxy_test

import (
	"strings"
	"testing"

	"github.com/keyward/keyward/colcrypt/proxy"
	"github.com/keyward/keyward/testenv"
)

func TestPsqlScript(t *testing.T) {
	pg := pgFor(t)
	eachRelay(t, func(t *testing.T, start startFunc) { psqlScript(t, pg, start(t, pg, nil)) })
	t.Run("hooks", func(t *testing.T) {
		ti := &testInterceptor{t: t}
		psqlScript(t, pg, startProxy(t, pg, func(c *proxy.Config) { c.Interceptor = ti }))
		ti.check(t)
	})
}

func psqlScript(t *testing.T, pg *testenv.PG, e *proxyEnv) {
	script := `
CREATE TABLE psql_t (id int primary key, name text, at timestamptz default '2024-01-02 03:04:05+00');
INSERT INTO psql_t (id, name) VALUES (1, 'one'), (2, 'two'), (3, NULL);
SELECT * FROM psql_t ORDER BY id;
SELECT 1 AS a; SELECT 2 AS b;
PREPARE p(int) AS SELECT name FROM psql_t WHERE id = $1;
EXECUTE p(2);
DEALLOCATE p;
BEGIN; UPDATE psql_t SET name = 'uno' WHERE id = 1; SAVEPOINT s; UPDATE psql_t SET name = 'x'; ROLLBACK TO s; COMMIT;
COPY psql_t (id, name) TO STDOUT;
\copy psql_t (id, name) from stdin
10	ten
11	eleven
\.
SELECT count(*) FROM psql_t;
DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$;
SELECT name FROM psql_t WHERE id = $$10$$ \gdesc
SELECT id FROM psql_t WHERE id > 2 ORDER BY id \gset
SELECT :id AS last_id;
SELECT 1/0;
DROP TABLE psql_t;
`
	direct, err := pg.Psql(t, pg.UserDSN(), "-c", "SELECT 1")
	if err != nil {
		t.Fatalf("direct psql: %v %s", err, direct)
	}
	viaProxy := psqlStdin(t, pg, e.DSN(pg, pg.User, pg.Password), script)
	want := psqlStdin(t, pg, pg.UserDSN(), script)
	if viaProxy != want {
		t.Fatalf("psql through the proxy differs from direct:\n--- proxy\n%s\n--- direct\n%s", viaProxy, want)
	}
	if !strings.Contains(viaProxy, "hello 42") || !strings.Contains(viaProxy, "uno") || !strings.Contains(viaProxy, "division by zero") {
		t.Fatalf("unexpected output:\n%s", viaProxy)
	}
}
