package cli

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/keyward/keyward/memsafe"
	"github.com/keyward/keyward/volume/bind"
)

// DefaultBackupDir is where header backups go unless --backup-dir says otherwise.
const DefaultBackupDir = "/var/backups/keyward"

func enrollCmd(e *env) *cobra.Command {
	var scope, keyFile, backupDir string
	var version uint32
	cmd := &cobra.Command{
		Use:   "enroll DEVICE --scope SCOPE [--unlock-key-file FILE]",
		Short: "Add a keyslot that opens with the agent's key for SCOPE (the existing passphrase stays for recovery)",
		Long: `enroll fetches the data key for SCOPE from the agent, derives a keyslot passphrase from it and the
volume's UUID, and adds a PBKDF2 keyslot and a "keyward" token naming it. The existing passphrase (from
--unlock-key-file, whose whole content is the passphrase as with cryptsetup's --key-file, "-" for stdin;
else one line read from stdin, prompted for on a terminal) opens the volume key and stays as the recovery
path. The header area is copied to a new file in --backup-dir before anything is written.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if scope == "" {
				return usagef("enroll: --scope is required")
			}
			existing, err := readExisting(e, keyFile)
			if err != nil {
				return err
			}
			defer existing.Destroy()
			ctx, cancel := context.WithTimeout(cmd.Context(), e.timeout)
			defer cancel()
			c := e.agent()
			defer c.Close()
			r, err := bind.Enroll(ctx, args[0], c, bind.EnrollOptions{Scope: scope, Version: version, Existing: existing, BackupDir: backupDir})
			if err != nil {
				return explain(err)
			}
			fmt.Fprintf(e.out, "enrolled %s: keyslot %d, token %d, %s version %d (header backup: %s)\n",
				args[0], r.Keyslot, r.Token, r.Scope, r.Version, r.Backup)
			return nil
		},
	}
	cmd.Flags().StringVar(&scope, "scope", "", "the key's scope, e.g. boot:volume/web-7/data (required)")
	cmd.Flags().Uint32Var(&version, "key-version", 0, "key version (default: the newest)")
	cmd.Flags().StringVar(&keyFile, "unlock-key-file", "", "file holding the existing passphrase (\"-\": stdin)")
	cmd.Flags().StringVar(&backupDir, "backup-dir", DefaultBackupDir, "directory for the header backup taken before writing")
	return cmd
}

// readExisting reads the existing passphrase into locked memory.
func readExisting(e *env, keyFile string) (*memsafe.Key, error) {
	const max = 8 << 10 // cryptsetup's default key file limit is 8 MiB; a passphrase is far shorter
	var buf []byte
	var err error
	switch {
	case keyFile == "-":
		buf, err = readAtMost(e.in, max+1)
	case keyFile != "":
		var f *os.File
		if f, err = os.Open(keyFile); err == nil {
			buf, err = readAtMost(f, max+1)
			f.Close()
		}
	default:
		buf, err = promptLine(e)
	}
	if err != nil {
		clear(buf)
		return nil, fmt.Errorf("read the existing passphrase: %w", err)
	}
	if len(buf) == 0 || len(buf) > max {
		clear(buf)
		return nil, usagef("the existing passphrase is empty or longer than %d bytes", max)
	}
	return memsafe.FromBytes(buf)
}

// readAtMost reads up to n bytes into one buffer allocated up front: io.ReadAll would grow its buffer
// and leave copies of the passphrase in the arrays it abandons, where nothing wipes them.
func readAtMost(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, n)
	k, err := io.ReadFull(r, buf)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = nil
	}
	return buf[:k], err
}

// promptLine reads one line from stdin, without echo when stdin is a terminal.
func promptLine(e *env) ([]byte, error) {
	if f, ok := e.in.(*os.File); ok {
		if t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			fmt.Fprint(e.errw, "Existing passphrase: ")
			quiet := *t
			quiet.Lflag &^= unix.ECHO
			quiet.Lflag |= unix.ICANON
			if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, &quiet); err == nil {
				defer func() {
					_ = unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t)
					fmt.Fprintln(e.errw)
				}()
			}
		}
	}
	line, err := bufio.NewReader(e.in).ReadSlice('\n')
	if err != nil && err != io.EOF {
		clear(line) // a line too long for the buffer is still a passphrase
		return nil, err
	}
	out := bytes.Clone(bytes.TrimRight(line, "\r\n"))
	clear(line)
	return out, nil
}
