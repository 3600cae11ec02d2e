package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/keyward/keyward/colcrypt/colkeys"
	"github.com/keyward/keyward/colcrypt/coltype"
	"github.com/keyward/keyward/colcrypt/config"
	"github.com/keyward/keyward/colcrypt/migrate"
	"github.com/keyward/keyward/keyagent/client"
)

func init() {
	extraCommands = append(extraCommands, newEncryptColumnCmd, newRewrapCmd, newCheckCmd)
}

// crashEnv names a test hook: the process SIGKILLs itself inside the transaction of the batch
// after this many committed batches, as a crash would (the CLI tests use it to prove resumption).
const crashEnv = "KEYWARD_COLCRYPT_TEST_CRASH_AFTER_BATCHES"

// dbFlags are the flags every migration command shares.
type dbFlags struct {
	configPath, dsn, as string
}

func (f *dbFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.configPath, "config", "", "colcrypt.yaml (or $KEYWARD_COLCRYPT_CONFIG)")
	cmd.Flags().StringVar(&f.dsn, "dsn", "", "PostgreSQL connection string, direct (not through the proxy); default: the config's upstream and catalog sections ($PGUSER, $PGPASSWORD, $PGDATABASE fill in what they leave out)")
	cmd.Flags().StringVar(&f.as, "as", "", "role whose keys to use (identity db:ROLE); default: the connecting user")
}

// migrationEnv is what a migration command runs with.
type migrationEnv struct {
	cfg      *config.Config
	conn     *pgx.Conn
	keys     *colkeys.Keys
	agent    *client.Client
	identity string
}

func (e *migrationEnv) close() {
	if e.keys != nil {
		e.keys.Close()
	}
	if e.agent != nil {
		e.agent.Close()
	}
	if e.conn != nil {
		e.conn.Close(context.Background())
	}
}

// open loads the config, connects to Postgres directly and to the agent.
func (f *dbFlags) open(ctx context.Context, cmd *cobra.Command) (*migrationEnv, error) {
	cfg, err := loadConfig(cmd, &f.configPath)
	if err != nil {
		return nil, err
	}
	pc, err := f.pgConfig(cfg)
	if err != nil {
		return nil, &exitError{ExitConfig, err}
	}
	e := &migrationEnv{cfg: cfg}
	cctx, cancel := context.WithTimeout(ctx, cfg.Upstream.ConnectTimeout+time.Second)
	defer cancel()
	if e.conn, err = pgx.ConnectConfig(cctx, pc); err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	role := f.as
	if role == "" {
		role = pc.User
	}
	e.identity = "db:" + role
	socket := client.SocketPath("")
	if cfg.Agent != nil && cfg.Agent.Socket != "" {
		socket = cfg.Agent.Socket
	}
	e.agent = client.New(socket)
	e.keys = colkeys.New(colkeys.Config{Agent: e.agent})
	return e, nil
}

// pgConfig is --dsn, or the config's upstream (host, port, TLS) and catalog (database, user,
// password file) sections, with libpq's environment variables for what they leave out.
func (f *dbFlags) pgConfig(cfg *config.Config) (*pgx.ConnConfig, error) {
	dsn := f.dsn
	serverName := ""
	if dsn == "" {
		u := cfg.Upstream
		mode := map[string]string{config.TLSDisable: "disable", config.TLSRequire: "require", config.TLSVerifyFull: "verify-full"}[u.TLS]
		if mode == "" {
			mode = "prefer"
		}
		dsn = fmt.Sprintf("host=%s port=%d sslmode=%s", quoteDSN(u.Host), u.Port, mode)
		if u.CA != "" {
			dsn += " sslrootcert=" + quoteDSN(u.CA)
		}
		serverName = u.ServerName
	}
	pc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("connection string: %w", err)
	}
	if serverName != "" && pc.TLSConfig != nil {
		pc.TLSConfig.ServerName = serverName
	}
	if c := cfg.Catalog; f.dsn == "" && c != nil {
		// The proxy's side connection: the database the protected columns live in. The role
		// must own the tables for encrypt-column (it alters them).
		if c.Database != "" {
			pc.Database = c.Database
		}
		if c.User != "" {
			pc.User = c.User
		}
		if c.PasswordFile != "" {
			b, err := os.ReadFile(c.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("catalog.password_file: %w", err)
			}
			pc.Password = strings.TrimRight(string(b), "\r\n")
		}
	}
	pc.RuntimeParams["application_name"] = "colcrypt-migrate"
	return pc, nil
}

func quoteDSN(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// migrateFlags are the flags of encrypt-column and rewrap.
type migrateFlags struct {
	dbFlags
	table, column string
	batch         int
	rate          float64
	verifySample  int
	lockTimeout   time.Duration
	typ           string // encrypt-column --type: must match the config entry's
	bar           *progressBar
}

func (f *migrateFlags) add(cmd *cobra.Command) {
	f.dbFlags.add(cmd)
	cmd.Flags().StringVar(&f.table, "table", "", "table, schema.table (default schema public)")
	cmd.Flags().StringVar(&f.column, "column", "", "column")
	cmd.Flags().IntVar(&f.batch, "batch", migrate.DefaultBatchSize, "rows per transaction")
	cmd.Flags().Float64Var(&f.rate, "rate", 0, "at most this many rows per second (0: no limit)")
	cmd.Flags().IntVar(&f.verifySample, "verify-sample", 0, "verify a random sample of this many rows at the end (0: every row)")
	cmd.Flags().DurationVar(&f.lockTimeout, "lock-timeout", migrate.DefaultLockTimeout, "longest wait for the table lock of a DDL step (retried)")
}

// options builds the library's options for the configured column.
func (f *migrateFlags) options(cmd *cobra.Command, e *migrationEnv) (migrate.Options, error) {
	if f.table == "" || f.column == "" {
		return migrate.Options{}, &exitError{ExitConfig, errors.New("--table and --column are required")}
	}
	c, err := migrate.FindColumn(e.cfg, f.table, f.column)
	if err != nil {
		return migrate.Options{}, &exitError{ExitConfig, fmt.Errorf("%s: %w", e.cfg.Path, err)}
	}
	if f.typ != "" {
		want, err := coltype.ParseType(f.typ)
		if err != nil {
			return migrate.Options{}, &exitError{ExitConfig, fmt.Errorf("--type: %w", err)}
		}
		if got, err := coltype.ParseType(c.Type); err == nil && got != want {
			return migrate.Options{}, &exitError{ExitConfig, fmt.Errorf("--type %s differs from the config's type %s for %s.%s", want, got, c.Table, c.Column)}
		}
	}
	f.bar = newProgressBar(cmd.ErrOrStderr())
	o := migrate.Options{
		Conn: e.conn, Keys: e.keys, Identity: e.identity, Column: c,
		BatchSize: f.batch, Rate: f.rate, VerifySample: f.verifySample, LockTimeout: f.lockTimeout,
		Progress: f.bar.update,
	}
	if v := os.Getenv(crashEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return o, &exitError{ExitConfig, fmt.Errorf("%s: %w", crashEnv, err)}
		}
		o.BeforeCommit = func(done int) error {
			if done >= n {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // never returns: the batch must not commit
			}
			return nil
		}
	}
	return o, nil
}

// run opens the environment and runs fn with the command's options until SIGINT or SIGTERM; an
// interruption becomes the hint to run the command again (both commands resume).
func (f *migrateFlags) run(cmd *cobra.Command, fn func(context.Context, migrate.Options) (*migrate.Result, error)) (*migrate.Result, migrate.Options, error) {
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	e, err := f.open(ctx, cmd)
	if err != nil {
		return nil, migrate.Options{}, err
	}
	defer e.close()
	o, err := f.options(cmd, e)
	if err != nil {
		return nil, o, err
	}
	res, err := fn(ctx, o)
	f.bar.finish()
	if errors.Is(err, context.Canceled) {
		err = fmt.Errorf("interrupted; run the same command again to resume")
	}
	return res, o, err
}

func newEncryptColumnCmd() *cobra.Command {
	var f migrateFlags
	cmd := &cobra.Command{
		Use:   "encrypt-column --config FILE --table T --column C [--type TYPE] [--batch N] [--rate ROWS/S] [--as ROLE]",
		Short: "Convert a plaintext column to encrypted envelopes online (resumable)",
		Long: `Converts the plaintext column C of table T to the bytea envelopes the proxy expects, online, in short
batches, with the mode, scope and type of its entry in colcrypt.yaml. It is resumable: run it again after a
kill or an error and it continues where it stopped. Writes by others during the run stay correct. Before the
final swap every value is read back, decrypted and compared with the original. Afterwards the column is bytea
with a CHECK constraint that admits only envelopes: reload the proxy with the column configured.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, o, err := f.run(cmd, migrate.EncryptColumn)
			if errors.Is(err, migrate.ErrAlreadyDone) {
				// Idempotent: a run killed after its swap committed is done, and says so.
				fmt.Fprintf(cmd.OutOrStdout(), "%v; nothing to do\n", err)
				return nil
			}
			if err != nil {
				return err
			}
			resumed := ""
			if res.Resumed {
				resumed = " (resumed)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "encrypted %s%s: %d values sealed with key version %d in %d batches, %d verified, %s\n"+
				"the column is now bytea with CHECK constraint %s; reload the proxy with it configured\n",
				res.Column, resumed, res.Rows, res.Version, res.Batches, res.Verified, res.Elapsed.Round(time.Millisecond),
				migrate.EnvelopeConstraint(o.Column.Column))
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&f.typ, "type", "", "declared type (must match the config entry's)")
	return cmd
}

// progressBar renders migrate.Progress on stderr: a redrawn bar on a terminal, a line every few
// seconds (and at each phase change) otherwise, so logs stay readable.
type progressBar struct {
	w      io.Writer
	tty    bool
	phase  string
	start  time.Time
	last   time.Time
	drawn  bool
	every  time.Duration
	startN int64
	ended  bool // the phase reached its total (others' writes can push Done past it: say so once)
}

func newProgressBar(w io.Writer) *progressBar {
	p := &progressBar{w: w, every: 5 * time.Second}
	if f, ok := w.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			p.tty = true
			p.every = 100 * time.Millisecond
		}
	}
	return p
}

func (p *progressBar) update(pr migrate.Progress) {
	now := time.Now()
	changed := pr.Phase != p.phase
	if changed {
		if p.drawn && p.tty {
			fmt.Fprintln(p.w)
		}
		p.phase, p.start, p.startN, p.ended = pr.Phase, now, pr.Done, false
	}
	finished := pr.Total > 0 && pr.Done >= pr.Total && !p.ended
	if finished {
		p.ended = true
	}
	if !changed && !finished && now.Sub(p.last) < p.every {
		return
	}
	p.last = now
	line := fmt.Sprintf("%-8s %d", pr.Phase, pr.Done)
	if pr.Total > 0 {
		frac := float64(pr.Done) / float64(pr.Total)
		if frac > 1 {
			frac = 1
		}
		const width = 30
		n := int(frac * width)
		line = fmt.Sprintf("%-8s [%s%s] %d/%d %3.0f%%", pr.Phase, strings.Repeat("#", n), strings.Repeat(".", width-n), pr.Done, pr.Total, frac*100)
	}
	if el := now.Sub(p.start).Seconds(); el > 0.5 && pr.Done > p.startN {
		rate := float64(pr.Done-p.startN) / el
		line += fmt.Sprintf(" %.0f rows/s", rate)
		if pr.Total > pr.Done && rate > 0 {
			line += fmt.Sprintf(" ETA %s", (time.Duration(float64(pr.Total-pr.Done)/rate) * time.Second).Round(time.Second))
		}
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.drawn = true
		return
	}
	fmt.Fprintln(p.w, "colcrypt:", line)
}

// finish ends a terminal's bar line.
func (p *progressBar) finish() {
	if p != nil && p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
