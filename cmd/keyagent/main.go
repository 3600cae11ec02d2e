// Command keyagent is Keyward's node-local key agent and its operator tool.
package main

import (
	"context"
	"os"

	"github.com/keyward/keyward/cmd/keyagent/cli"
)

func main() { os.Exit(cli.Main(context.Background(), os.Args[1:])) }
