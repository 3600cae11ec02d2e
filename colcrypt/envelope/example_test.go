package envelope_test

import (
	"bytes"
	"fmt"

	"github.com/keyward/keyward/colcrypt/coltype"
	"github.com/keyward/keyward/colcrypt/envelope"
	"github.com/keyward/keyward/memsafe"
)

// A deterministic column: the same value sent as text by one driver and in binary by another gives
// one envelope, so WHERE col = $1 finds it; reading it back renders PostgreSQL's text output.
func Example() {
	key, _ := memsafe.FromBytes(bytes.Repeat([]byte{7}, envelope.DeterministicKeySize)) // from the agent in real use
	defer key.Destroy()
	c, err := envelope.NewDeterministic(key, 1, "payroll:employees.ssn")
	if err != nil {
		panic(err)
	}
	defer c.Destroy()
	const column = "public.employees.badge"

	fromText, _ := coltype.Canonical(coltype.Int4, coltype.TextFormat, []byte(" -42"), nil)
	fromBinary, _ := coltype.Canonical(coltype.Int4, coltype.BinaryFormat, []byte{0xff, 0xff, 0xff, 0xd6}, nil)
	a, _ := c.Seal(nil, fromText, column)
	b, _ := c.Seal(nil, fromBinary, column)
	fmt.Println("same envelope:", bytes.Equal(a, b), "overhead:", len(a)-len(fromText))

	h, _ := envelope.ParseHeader(a) // the proxy picks the key version from the header
	canon, err := c.Open(nil, a, column)
	if err != nil {
		panic(err)
	}
	text, _ := coltype.Render(coltype.Int4, coltype.TextFormat, canon, nil)
	fmt.Printf("%s v%d: %s\n", h.Alg, h.KeyVersion, text)

	_, err = c.Open(nil, a, "public.employees.other")
	fmt.Println(err != nil)
	// Output:
	// same envelope: true overhead: 28
	// deterministic v1: -42
	// true
}
