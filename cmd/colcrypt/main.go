// Command colcrypt is Keyward's PostgreSQL column-encryption proxy.
package main

import (
	"context"
	"os"

	"github.com/keyward/keyward/cmd/colcrypt/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:]))
}
