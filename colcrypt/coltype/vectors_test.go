package coltype

import (
	"bufio"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/canonical.txt from the case table")

const vectorsFile = "testdata/canonical.txt"

// TestCanonicalVectors pins the canonical encodings, which are part of the stored format: a change
// would make existing deterministic values unfindable. The file was generated from the case table
// (go test -run CanonicalVectors -update) after TestAgainstPostgres checked each encoding against
// PostgreSQL's binary output; a diff here must be deliberate.
func TestCanonicalVectors(t *testing.T) {
	var lines []string
	for _, c := range textCases {
		if c.err {
			continue
		}
		canon, err := Canonical(c.t, TextFormat, []byte(c.in), session(t, c.tz))
		if err != nil {
			t.Fatal(err)
		}
		if len(canon) > 256 {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s\t%s\t%s\t%s", c.t, strconv.Quote(c.in), c.tz, hex.EncodeToString(canon)))
	}
	if *update {
		body := "# type\tinput (Go-quoted)\tsession TimeZone\tcanonical hex\n" + strings.Join(lines, "\n") + "\n"
		if err := os.WriteFile(vectorsFile, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.Open(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) != 4 {
			t.Fatalf("bad line %q", line)
		}
		ty, err := ParseType(fields[0])
		if err != nil {
			t.Fatal(err)
		}
		in, err := strconv.Unquote(fields[1])
		if err != nil {
			t.Fatal(err)
		}
		canon, err := Canonical(ty, TextFormat, []byte(in), session(t, fields[2]))
		if err != nil {
			t.Fatalf("%s %s: %v", fields[0], fields[1], err)
		}
		if got := hex.EncodeToString(canon); got != fields[3] {
			t.Errorf("%s %s: canonical %s, pinned %s", fields[0], fields[1], got, fields[3])
		}
		n++
	}
	if n < 100 {
		t.Fatalf("only %d vectors", n)
	}
}
