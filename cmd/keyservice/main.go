// Command keyservice is Keyward's HSM-backed key service and its operator tool.
package main

import (
	"context"
	"os"

	"github.com/keyward/keyward/cmd/keyservice/cli"
)

func main() { os.Exit(cli.Main(context.Background(), os.Args[1:])) }
