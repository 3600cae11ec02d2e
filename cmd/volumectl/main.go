// Command volumectl binds LUKS2 volumes to Keyward keys: enroll, unlock, lock, status, rotate.
// It is built with CGO_ENABLED=0 so that one static binary fits an initramfs.
package main

import (
	"context"
	"os"

	"github.com/keyward/keyward/cmd/volumectl/cli"
)

func main() { os.Exit(cli.Main(context.Background(), os.Args[1:])) }
