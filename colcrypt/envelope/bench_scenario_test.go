package envelope_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/colcrypt/coltype"
	"github.com/keyward/keyward/colcrypt/envelope"
)

// TestBenchEnvelope is the per-value cost behind the colcrypt read and write scenarios: turning one
// 100-byte protected text value into what the client sees (Open + Render) against rendering the same
// plaintext value (the work colcrypt does for an unprotected column), and the reverse on writes.
func TestBenchEnvelope(t *testing.T) {
	if os.Getenv("KEYWARD_BENCH") != "1" {
		t.Skip("set KEYWARD_BENCH=1 (make bench)")
	}
	n := 200000
	if os.Getenv("KEYWARD_BENCH_QUICK") == "1" {
		n = 20000
	}
	value := []byte(strings.Repeat("x", 100))
	perOp := func(f func()) float64 { // best of three runs of n, after a warm-up
		for range n / 10 {
			f()
		}
		best := time.Duration(1<<63 - 1)
		for range 3 {
			start := time.Now()
			for range n {
				f()
			}
			best = min(best, time.Since(start))
		}
		return float64(best.Nanoseconds()) / float64(n)
	}
	for _, alg := range []envelope.Alg{envelope.AlgRandomized, envelope.AlgDeterministic} {
		c := benchCipher(t, alg)
		canon, _ := coltype.Canonical(coltype.Text, coltype.TextFormat, value, nil)
		env, err := c.Seal(nil, canon, benchColumn)
		if err != nil {
			t.Fatal(err)
		}
		dst, out := make([]byte, 0, 256), make([]byte, 0, 256)
		read := perOp(func() {
			pt, _ := c.Open(dst, env, benchColumn)
			_, _ = coltype.AppendRender(out, coltype.Text, coltype.TextFormat, pt, nil)
		})
		readBase := perOp(func() { _, _ = coltype.AppendRender(out, coltype.Text, coltype.TextFormat, canon, nil) })
		write := perOp(func() {
			cv, _ := coltype.AppendCanonical(out, coltype.Text, coltype.TextFormat, value, nil)
			_, _ = c.Seal(dst, cv, benchColumn)
		})
		writeBase := perOp(func() { _, _ = coltype.AppendCanonical(out, coltype.Text, coltype.TextFormat, value, nil) })
		fmt.Printf("BENCH scenario=\"envelope %s read 100B value\" keyward=%.0f baseline=%.0f unit=ns/value ratio=%.1f goal=\"report\" met=true\n", alg, read, readBase, read/readBase)
		fmt.Printf("BENCH scenario=\"envelope %s write 100B value\" keyward=%.0f baseline=%.0f unit=ns/value ratio=%.1f goal=\"report\" met=true\n", alg, write, writeBase, write/writeBase)
		over := len(env) - len(canon)
		fmt.Printf("BENCH scenario=\"envelope %s overhead\" keyward=%d baseline=0 unit=bytes ratio=0 goal=\"<=40\" met=%t\n", alg, over, over <= 40)
	}
}
