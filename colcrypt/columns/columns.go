// Package columns is colcrypt's column-encryption layer: a proxy.Interceptor that makes configured
// bytea columns look, to database clients, like columns of their declared types holding plaintext,
// while PostgreSQL stores only envelopes (colcrypt/envelope).
//
// How a session is handled:
//   - Reads: each RowDescription field is mapped through its (table OID, attribute number) to a
//     configured column; the field's type becomes the declared type and each DataRow value is opened
//     (colcrypt/colkeys, on behalf of "db:<authenticated role>") and rendered in the format the client
//     asked for (coltype.AppendRender). When the statement was described before its Bind (what most
//     drivers do), protected result columns are asked of the server in binary, whatever the client
//     asked: bytea's text form is hex, twice the bytes and a decoding step. A result with no
//     protected field is passed as it came (one pointer comparison per DataRow).
//   - on_denied is applied per result description, before any row: error (SQLSTATE 42501 naming
//     schema.table.column), null, or ciphertext (the field stays typed bytea).
//   - Writes: every statement text (Query, Parse) is planned by colcrypt/analyze, cached by (search
//     path, text); literals bound for protected columns become '\x<envelope>'::bytea, parameters are
//     declared bytea (bytea[] for deterministic predicates, one envelope per live key version) and
//     their values encrypted in Bind from the canonical encoding of what the client sent
//     (coltype.CanonicalFromOID, text or binary, the client's declared type or the statement's cast),
//     and ParameterDescription shows the declared types.
//   - COPY FROM STDIN (text, csv; rows may straddle CopyData messages) is encrypted field by field;
//     COPY TO STDOUT decrypted row by row.
//   - Refusals (what the analyzer refuses: 0A000; values that cannot be read as the declared type:
//     22P02; a key the role may not use: 42501; keys unavailable: 58000; a stored value that does
//     not open: XX001) are ErrorResponses naming the column, and the session stays usable.
//
// Guarantees: plaintext is never sent to PostgreSQL for a column the catalog view knows as protected
// (when in doubt the analyzer refuses); ciphertext is never presented as a value of the declared
// type; a tampered, truncated or moved value is an error for that query; statements that name no
// protected table are not parsed at all (a case-insensitive search for the protected tables' names;
// EXECUTE, PREPARE, DEALLOCATE, DISCARD, search_path and U& texts are always parsed).
//
// Non-guarantees and limits:
//   - One database: the columns apply to the database the catalog connection uses; sessions on
//     other databases get no hooks (the raw fast path).
//   - DDL is noticed when it runs through the proxy (CommandComplete of CREATE/ALTER/DROP reloads
//     the catalog view, again at the next idle ReadyForQuery), not when it runs elsewhere; a reload
//     that fails validation keeps the previous view.
//   - The search path is "$user", public until SET/RESET search_path through the proxy (assumed to
//     succeed; set_config() and functions are not followed).
//   - A literal in a prepared statement is encrypted once, at Parse: every execution stores the same
//     envelope (randomized mode then shows those rows hold one value). Parameters are encrypted per
//     Bind.
//   - Statements whose text differs only in constants are analyzed each time (the plan cache is by
//     text): simple-protocol writes to protected tables pay the parser per statement.
//   - bytea_output must be hex and standard_conforming_strings on (checked before rewriting SQL);
//     binary COPY of protected tables is refused.
package columns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/keyward/keyward/colcrypt/analyze"
	"github.com/keyward/keyward/colcrypt/colkeys"
	"github.com/keyward/keyward/colcrypt/coltype"
	"github.com/keyward/keyward/colcrypt/config"
	"github.com/keyward/keyward/colcrypt/proxy"
)

// on_denied policies.
const (
	DeniedError      = "error"
	DeniedNull       = "null"
	DeniedCiphertext = "ciphertext"
)

// SQLSTATEs of the errors this layer sends.
const (
	StateDenied    = "42501" // insufficient_privilege: the role may not use the column's key
	StateCorrupt   = "XX001" // data_corrupted: a stored value does not open
	StateBadValue  = "22P02" // invalid_text_representation: a value cannot be read as the declared type
	StateKeys      = "58000" // system_error: the key agent is unreachable or failed
	StateRefused   = analyze.SQLState
	defaultMaxPlan = 4096
)

// Config configures New.
type Config struct {
	// Columns are the protected columns (colcrypt.yaml "columns"); ConfigPath names the file in errors.
	Columns    []config.Column
	ConfigPath string
	// OnDenied is DeniedError (default), DeniedNull or DeniedCiphertext.
	OnDenied string
	// Keys is the process's key cache.
	Keys *colkeys.Keys
	// CatalogDSN connects the side connection used for catalog lookups (a pgx connection string to
	// the same database the clients use, with a role that can read pg_catalog).
	CatalogDSN string
	// MaxPlans bounds the plan cache (statement texts); 0: 4096.
	MaxPlans int
	Logger   *slog.Logger
}

// Interceptor is the column-encryption layer, shared by all sessions.
type Interceptor struct {
	keys     *colkeys.Keys
	onDenied string
	cat      *catalog
	log      *slog.Logger
	maxPlans int
	names    []string // protected tables' names, lower case

	pmu   sync.Mutex
	pgen  uint64
	plans map[planKey]*analyze.Plan
}

type planKey struct {
	path string // the search path the plan resolved names with, joined by ","
	sql  string
}

var _ proxy.Interceptor = (*Interceptor)(nil)

// New connects the catalog side connection and validates the configured columns against the live
// catalog: each must exist and be bytea.
func New(ctx context.Context, cfg Config) (*Interceptor, error) {
	if cfg.Keys == nil {
		return nil, errors.New("columns: no key cache")
	}
	switch cfg.OnDenied {
	case "":
		cfg.OnDenied = DeniedError
	case DeniedError, DeniedNull, DeniedCiphertext:
	default:
		return nil, fmt.Errorf("columns: on_denied %q: want error, null or ciphertext", cfg.OnDenied)
	}
	ic := &Interceptor{keys: cfg.Keys, onDenied: cfg.OnDenied, log: cfg.Logger, maxPlans: cfg.MaxPlans,
		plans: map[planKey]*analyze.Plan{},
		cat:   &catalog{connString: cfg.CatalogDSN, cols: cfg.Columns, cfgPath: cfg.ConfigPath}}
	if ic.log == nil {
		ic.log = slog.New(slog.DiscardHandler)
	}
	if ic.maxPlans <= 0 {
		ic.maxPlans = defaultMaxPlan
	}
	seen := map[string]bool{}
	for _, c := range cfg.Columns {
		s, t := splitTable(c.Table)
		if lt := strings.ToLower(t); !slices.Contains(ic.names, lt) {
			ic.names = append(ic.names, lt)
		}
		k := s + "." + t + "." + c.Column
		if seen[k] {
			return nil, fmt.Errorf("columns: column %s is configured twice", k)
		}
		seen[k] = true
	}
	if _, err := ic.cat.load(ctx); err != nil {
		ic.cat.close()
		return nil, fmt.Errorf("columns: %w", err)
	}
	return ic, nil
}

// Close closes the catalog connection. The key cache is the caller's.
func (ic *Interceptor) Close() { ic.cat.close() }

// Open starts the hooks of one authenticated session.
func (ic *Interceptor) Open(ctx context.Context, s *proxy.Session) (proxy.Hooks, error) {
	db := s.Database
	if db == "" {
		db = s.Role // PostgreSQL's default database is the role's name
	}
	if len(ic.cat.cols) == 0 || db != ic.cat.database {
		// Nothing to protect, or another database than the one the columns are configured for
		// (their table OIDs mean nothing there): the raw fast path.
		return nil, nil
	}
	ss := &session{ic: ic, ctx: ctx, s: s, identity: "db:" + s.Role,
		prepares: map[string]*analyze.Prepare{}, rows: map[*pgproto3.RowDescription]*rowPlan{}}
	ss.setPath(nil)
	return ss, nil
}

// plan returns the cached analysis of sql, planning it on a miss.
func (ic *Interceptor) plan(ctx context.Context, path []string, pathKey, sql string) (*analyze.Plan, *snapshot) {
	snap, err := ic.cat.snapshot(ctx)
	if err != nil {
		ic.log.Error("catalog reload failed; keeping the previous view", "err", err)
	}
	k := planKey{pathKey, sql}
	ic.pmu.Lock()
	if ic.pgen != snap.gen {
		clear(ic.plans)
		ic.pgen = snap.gen
	}
	p := ic.plans[k]
	ic.pmu.Unlock()
	if p != nil {
		return p, snap
	}
	if !ic.mentionsProtected(sql) {
		// Not cached: texts that differ only in their constants would flood the cache.
		return passPlan, snap
	}
	p = analyze.Analyze(sql, snap, analyze.Options{SearchPath: path})
	ic.pmu.Lock()
	if ic.pgen == snap.gen {
		if len(ic.plans) >= ic.maxPlans {
			clear(ic.plans) // crude but bounded; plans are cheap to redo
		}
		ic.plans[k] = p
	}
	ic.pmu.Unlock()
	return p, snap
}

var passPlan = &analyze.Plan{Action: analyze.Pass}

// mentionsProtected is the cheap test that keeps statements about other tables away from the
// parser: a statement can reach a protected table only by naming it, so a text that contains none of
// their names (compared without regard to case, which only widens the match) has nothing to encrypt.
// Some texts are always analyzed (alwaysAnalyze). (Views and
// functions over protected tables are beyond the analyzer too; they are the catalog's to forbid.)
func (ic *Interceptor) mentionsProtected(sql string) bool {
	for _, name := range ic.names {
		if containsFold(sql, name) {
			return true
		}
	}
	for _, w := range alwaysAnalyze {
		if containsFold(sql, w) {
			return true
		}
	}
	return false
}

// alwaysAnalyze: words that make a text worth the parser whatever tables it names. EXECUTE runs a
// PREPAREd statement (whose text named the table), PREPARE/DEALLOCATE/DISCARD keep the session's
// record of them right, SET/RESET search_path changes how names resolve, and U& identifiers can spell a table's name with escapes.
var alwaysAnalyze = []string{"execute", "prepare", "deallocate", "discard", "search_path", "reset", "u&"}

// containsFold reports whether s contains the lower-case ASCII word sub, ignoring ASCII case.
func containsFold(s, sub string) bool {
	n := len(sub)
	if n == 0 {
		return true
	}
	first := sub[0]
	for i := 0; i+n <= len(s); i++ {
		c := s[i]
		if c|0x20 != first && c != first {
			continue
		}
		j := 1
		for ; j < n; j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != sub[j] {
				break
			}
		}
		if j == n {
			return true
		}
	}
	return false
}

// errorResponse builds the ErrorResponse for a refusal.
func errorResponse(code, msg string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: code, Message: msg}
}

// keyError classifies an error of the key cache into an ErrorResponse about col.
func keyError(err error, col string, write bool) *pgproto3.ErrorResponse {
	switch {
	case errors.Is(err, colkeys.ErrDenied):
		op := "decrypt"
		if write {
			op = "encrypt"
		}
		return errorResponse(StateDenied, fmt.Sprintf("permission denied to %s column %s (key agent: %v)", op, col, err))
	case isOpenErr(err):
		return errorResponse(StateCorrupt, fmt.Sprintf("column %s: a stored value does not decrypt (tampered, truncated, or copied from another column)", col))
	}
	var ve *coltype.ValueError
	var ce *coltype.ConversionError
	if errors.As(err, &ve) || errors.As(err, &ce) {
		return errorResponse(StateBadValue, fmt.Sprintf("column %s: %v", col, err))
	}
	return errorResponse(StateKeys, fmt.Sprintf("column %s: keys unavailable: %v", col, err))
}

func refusalResponse(r *analyze.Refusal) *pgproto3.ErrorResponse {
	return errorResponse(StateRefused, r.Error())
}

func sortEdits(e []analyze.Edit) {
	sort.Slice(e, func(i, j int) bool { return e[i].Start < e[j].Start })
}
