// Package scope defines the syntax of key scopes and caller identities, and
// the one pattern language that the agent policy (keyagent/policy) and the key
// service grants (keyagent/grants) use to match them.
//
// # Scopes
//
// A scope names a data key: "<keyring>:<name>", for example
// "payroll:employees.ssn" or "boot:volume/web-7/data".
//
//   - keyring: as the key service names keyrings, [a-z0-9][a-z0-9_.-]{0,62};
//   - name: at least one byte; valid UTF-8 of printable characters (spaces
//     are allowed: quoted SQL identifiers may contain them), no '*';
//   - the whole scope is at most MaxScopeLen bytes.
//
// # Identities
//
// An identity is who a key is used for: a principal's own name
// ("boot-unlock"), a database role acting through the proxy ("db:alice"), or a
// node certificate identity ("spiffe://keyward/node/web-7"). It is 1 to
// MaxIdentityLen bytes of printable UTF-8 without white space and without '*'.
//
// # Patterns
//
// A pattern is a string in which '*' matches any run of zero or more
// characters, including ':' and '/'; every other character matches itself.
// There is no escape and no other metacharacter ('?', '[', '{' are literal),
// which is why scopes and identities may not contain '*'. A pattern without
// '*' matches exactly one string. Matching is on bytes, case-sensitive, and
// runs in time linear in the length of the input.
//
//	"payroll:*"            matches "payroll:employees.ssn", not "payroll2:x"
//	"boot:volume/web-7/*"  matches "boot:volume/web-7/data" and ".../a/b"
//	"db:*"                 matches "db:alice"
//	"*:public.*"           matches "hr:public.names"
//
// A scope pattern must in addition contain ':' with a keyring part that is
// either a literal keyring name or exactly "*": "pay*:x" is refused because a
// keyring prefix ("payroll" but also "payroll-old") is almost always a mistake.
package scope

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on the lengths of scopes and identities, in bytes.
const (
	MaxScopeLen    = 1024
	MaxKeyringLen  = 63
	MaxIdentityLen = 256
)

// ErrInvalid is wrapped by every error of this package, for callers that
// only need to know that a string was malformed.
var ErrInvalid = errors.New("invalid")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Check reports whether s is a well-formed scope.
func Check(s string) error {
	if len(s) > MaxScopeLen {
		return invalid("scope longer than %d bytes", MaxScopeLen)
	}
	ring, name, ok := strings.Cut(s, ":")
	if !ok {
		return invalid("scope %q: want <keyring>:<name>", s)
	}
	if err := checkKeyring(ring); err != nil {
		return invalid("scope %q: %v", s, err)
	}
	if name == "" {
		return invalid("scope %q: empty name", s)
	}
	if err := checkText(name, true); err != nil {
		return invalid("scope %q: %v", s, err)
	}
	return nil
}

// Keyring returns the keyring part of a well-formed scope ("payroll" for
// "payroll:employees.ssn"), or "" when s has no ':'.
func Keyring(s string) string {
	ring, _, ok := strings.Cut(s, ":")
	if !ok {
		return ""
	}
	return ring
}

// CheckIdentity reports whether s is a well-formed identity.
func CheckIdentity(s string) error {
	if s == "" {
		return invalid("empty identity")
	}
	if len(s) > MaxIdentityLen {
		return invalid("identity longer than %d bytes", MaxIdentityLen)
	}
	if err := checkText(s, false); err != nil {
		return invalid("identity %q: %v", s, err)
	}
	return nil
}

// checkKeyring is the key service's rule (keyagent/kdf.CheckKeyring, which a
// test keeps in step with this copy): [a-z0-9][a-z0-9_.-]{0,62}. It is
// repeated here so that policy tooling does not link the key derivation code.
func checkKeyring(ring string) error {
	if ring == "" {
		return errors.New("empty keyring")
	}
	if len(ring) > MaxKeyringLen {
		return fmt.Errorf("keyring longer than %d bytes", MaxKeyringLen)
	}
	for i := 0; i < len(ring); i++ {
		c := ring[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || i > 0 && (c == '.' || c == '_' || c == '-')) {
			return fmt.Errorf("keyring %q must match [a-z0-9][a-z0-9_.-]{0,62}", ring)
		}
	}
	return nil
}

// checkText enforces printable UTF-8 without '*'; spaces are allowed only
// when allowSpace is set.
func checkText(s string, allowSpace bool) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		switch {
		case r == '*':
			return errors.New("'*' is only allowed in patterns")
		case r == ' ' && allowSpace:
		case unicode.IsSpace(r):
			return errors.New("white space not allowed")
		case !unicode.IsPrint(r):
			return fmt.Errorf("character %U not allowed", r)
		}
	}
	return nil
}

// Pattern is a compiled pattern. The zero Pattern matches nothing.
type Pattern struct {
	raw   string
	parts []string // raw split at '*'; len(parts)-1 stars
}

// Compile compiles an identity pattern (as in act_for): printable UTF-8
// without white space, 1 to MaxIdentityLen bytes, any number of '*'.
func Compile(p string) (Pattern, error) {
	if p == "" {
		return Pattern{}, invalid("empty pattern")
	}
	if len(p) > MaxIdentityLen {
		return Pattern{}, invalid("pattern longer than %d bytes", MaxIdentityLen)
	}
	if err := checkText(strings.ReplaceAll(p, "*", ""), false); err != nil {
		return Pattern{}, invalid("pattern %q: %v", p, err)
	}
	return compile(p), nil
}

// CompileScope compiles a scope pattern: "<keyring>:<name pattern>" where the
// keyring is a literal keyring name or "*", and the name pattern is
// printable UTF-8 (spaces allowed) with any number of '*'.
func CompileScope(p string) (Pattern, error) {
	if len(p) > MaxScopeLen {
		return Pattern{}, invalid("pattern longer than %d bytes", MaxScopeLen)
	}
	ring, name, ok := strings.Cut(p, ":")
	if !ok {
		return Pattern{}, invalid("scope pattern %q: want <keyring>:<name>, e.g. %q", p, "payroll:*")
	}
	if ring != "*" {
		if err := checkKeyring(ring); err != nil {
			return Pattern{}, invalid("scope pattern %q: keyring must be a name or \"*\": %v", p, err)
		}
	}
	if name == "" {
		return Pattern{}, invalid("scope pattern %q: empty name (use %q for every scope of the keyring)", p, ring+":*")
	}
	if err := checkText(strings.ReplaceAll(name, "*", ""), true); err != nil {
		return Pattern{}, invalid("scope pattern %q: %v", p, err)
	}
	return compile(p), nil
}

// MustCompile is Compile for patterns known to be valid; it panics otherwise.
func MustCompile(p string) Pattern {
	pat, err := Compile(p)
	if err != nil {
		panic(err)
	}
	return pat
}

func compile(p string) Pattern {
	return Pattern{raw: p, parts: strings.Split(p, "*")}
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.raw }

// Literal reports whether the pattern has no '*' (matches only itself).
func (p Pattern) Literal() bool { return len(p.parts) == 1 }

// Match reports whether s matches the whole pattern.
func (p Pattern) Match(s string) bool {
	parts := p.parts
	switch len(parts) {
	case 0:
		return false
	case 1:
		return s == parts[0]
	}
	first, last := parts[0], parts[len(parts)-1]
	if len(s) < len(first)+len(last) || !strings.HasPrefix(s, first) || !strings.HasSuffix(s, last) {
		return false
	}
	// With '*' as the only metacharacter, taking the leftmost occurrence of
	// each middle part is optimal: any later match leaves less room for the
	// rest, so no backtracking is needed.
	mid := s[len(first) : len(s)-len(last)]
	for _, part := range parts[1 : len(parts)-1] {
		i := strings.Index(mid, part)
		if i < 0 {
			return false
		}
		mid = mid[i+len(part):]
	}
	return true
}
