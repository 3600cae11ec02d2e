// Package policy is the key agent's role-based policy: who may call the agent
// socket, for whom they may act, and which scopes each identity may use for
// which operation.
//
// # File format (strict YAML, version 1)
//
//	version: 1
//	principals:                      # who is calling the agent socket
//	  colcrypt-proxy: {uid: 991, exe: /usr/local/bin/colcrypt, act_for: ["db:*"]}
//	  boot-unlock:    {uid: 0,   exe: /usr/local/bin/volumectl}
//	  operator:       {uid: 1000, gid: 1000, admin: [status, purge]}
//	roles:
//	  payroll: {grants: [{scopes: ["payroll:*"], ops: [encrypt, decrypt]}]}
//	  boot:    {grants: [{scopes: ["boot:volume/web-7/*"], ops: [decrypt]}]}
//	members:                         # identities -> roles
//	  "db:alice": [payroll]
//	  boot-unlock: [boot]
//	cache: {ttl: 5m, offline_grace: 15m, max_keys: 512}
//
// Principals: uid is required; gid and exe, when given, must also match the
// caller (exe is compared as an absolute path, exactly, with /proc's view of
// the caller's executable, which has symlinks resolved: name the real file,
// not a link to it; a binary replaced on disk shows as "… (deleted)" and no
// longer matches). act_for lists identity patterns the principal may
// act for; admin lists the administrative operations it may use (status,
// purge), which take no scope and cannot be delegated.
//
// Roles hold grants: scope patterns (keyagent/scope: '*' matches any run of
// characters; the keyring part must be literal or "*") times operations
// (encrypt, decrypt; in-HSM encryption and decryption are checked as encrypt
// and decrypt). Members map literal identities (no patterns) to roles.
//
// Cache defaults: ttl 5m, offline_grace 15m, max_keys 512.
//
// Unknown keys, wrong types, unknown roles, bad patterns, bad operations,
// principals without uid and bad durations are errors naming the file, line
// and key. A file is one policy: there are no includes and no defaults for
// principals, roles or members.
//
// # Decisions
//
// Deny by default. A request (caller, acting-for, scope, op) is allowed only
// if some principal matches the caller (uid, and gid and exe where given),
// the identity it acts for is its own name (acting-for empty or equal to the
// name) or is covered by one of its act_for patterns, and that identity holds
// a role with a grant whose scopes match the scope and whose ops include the
// op. When several principals match the caller, the request is allowed if any
// of them allows it (their rights add up); a denial reports the first matching
// principal in name order. Decide never consults anything but the policy:
// the key service applies its own grants on top (keyagent/grants).
//
// # Non-guarantees
//
// The policy trusts the caller identity it is given: reading it safely is
// keyagent/peercred's job. It does not rate-limit, and it does not know
// whether a scope exists.
package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/keyward/keyward/keyagent/confile"
	"github.com/keyward/keyward/keyagent/scope"
)

// Op is an operation a request asks for.
type Op string

// Operations. Encrypt and decrypt are granted by roles; status and purge by
// a principal's admin list.
const (
	OpEncrypt Op = "encrypt"
	OpDecrypt Op = "decrypt"
	OpStatus  Op = "status"
	OpPurge   Op = "purge"
)

// Cache defaults.
const (
	DefaultTTL          = 5 * time.Minute
	DefaultOfflineGrace = 15 * time.Minute
	DefaultMaxKeys      = 512
	// MaxMaxKeys bounds max_keys: every cached key is locked memory.
	MaxMaxKeys = 1 << 16
)

// Cache is the policy's cache section, defaults applied.
type Cache struct {
	TTL          time.Duration
	OfflineGrace time.Duration
	MaxKeys      int
}

// Policy is a validated policy file. It is immutable and safe for
// concurrent use.
type Policy struct {
	file       string
	version    string
	principals []*principal // sorted by name
	roles      map[string]*role
	members    map[string][]*role
	cache      Cache
	warnings   []string
}

type principal struct {
	name   string
	uid    uint32
	gid    uint32
	hasGID bool
	exe    string
	actFor []scope.Pattern
	admin  opSet
}

type role struct {
	name   string
	grants []grant
}

type grant struct {
	scopes []scope.Pattern
	ops    opSet
	rule   string // "roles.payroll.grants[0]"
	reason string // precomputed so that allowing allocates nothing
}

type opSet uint8

func opBit(op Op) opSet {
	switch op {
	case OpEncrypt:
		return 1
	case OpDecrypt:
		return 2
	case OpStatus:
		return 4
	case OpPurge:
		return 8
	}
	return 0
}

func (s opSet) has(op Op) bool { b := opBit(op); return b != 0 && s&b != 0 }

func (s opSet) String() string {
	var ops []string
	for _, op := range []Op{OpEncrypt, OpDecrypt, OpStatus, OpPurge} {
		if s.has(op) {
			ops = append(ops, string(op))
		}
	}
	return strings.Join(ops, ",")
}

// Version is a short hash of the file's bytes, shown by `keyagent status`
// so operators can tell which policy a running agent enforces.
func (p *Policy) Version() string { return p.version }

// File is the path or name the policy was loaded from.
func (p *Policy) File() string { return p.file }

// Cache returns the cache settings.
func (p *Policy) Cache() Cache { return p.cache }

// Warnings lists valid but suspicious entries (a member no principal can act
// for, a role nobody holds), for `keyagent policy check`.
func (p *Policy) Warnings() []string { return slices.Clone(p.warnings) }

// The file's shape, decoded strictly by confile.
type filePolicy struct {
	Version    int                      `yaml:"version"`
	Principals map[string]filePrincipal `yaml:"principals"`
	Roles      map[string]fileRole      `yaml:"roles"`
	Members    map[string][]string      `yaml:"members"`
	Cache      *fileCache               `yaml:"cache"`
}

type filePrincipal struct {
	UID    *uint32  `yaml:"uid"`
	GID    *uint32  `yaml:"gid"`
	Exe    string   `yaml:"exe"`
	ActFor []string `yaml:"act_for"`
	Admin  []string `yaml:"admin"`
}

type fileRole struct {
	Grants []fileGrant `yaml:"grants"`
}

type fileGrant struct {
	Scopes []string `yaml:"scopes"`
	Ops    []string `yaml:"ops"`
}

type fileCache struct {
	TTL          string `yaml:"ttl"`
	OfflineGrace string `yaml:"offline_grace"`
	MaxKeys      *int   `yaml:"max_keys"`
}

// Load reads and validates a policy file.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return Parse(path, data)
}

// Parse validates a policy held in memory; file names it in errors.
func Parse(file string, data []byte) (*Policy, error) {
	var f filePolicy
	doc, err := confile.DecodeBytes(file, data, &f, 1)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	p := &Policy{
		file:    file,
		version: hex.EncodeToString(sum[:6]),
		roles:   map[string]*role{},
		members: map[string][]*role{},
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, doc.Errorf(key, format, args...))
	}

	for _, name := range sortedKeys(f.Roles) {
		fr := f.Roles[name]
		key := "roles." + name
		r := &role{name: name}
		if len(fr.Grants) == 0 {
			bad(key, "role has no grants")
		}
		for i, fg := range fr.Grants {
			gk := fmt.Sprintf("%s.grants[%d]", key, i)
			g := grant{rule: gk}
			if len(fg.Scopes) == 0 {
				bad(gk, "grant has no scopes")
			}
			for j, s := range fg.Scopes {
				pat, err := scope.CompileScope(s)
				if err != nil {
					bad(fmt.Sprintf("%s.scopes[%d]", gk, j), "bad scope pattern: %v", err)
					continue
				}
				g.scopes = append(g.scopes, pat)
			}
			if len(fg.Ops) == 0 {
				bad(gk, "grant has no ops (want encrypt and/or decrypt)")
			}
			for j, o := range fg.Ops {
				if o != string(OpEncrypt) && o != string(OpDecrypt) {
					bad(fmt.Sprintf("%s.ops[%d]", gk, j), "bad op %q (want encrypt or decrypt; status and purge go in a principal's admin list)", o)
					continue
				}
				g.ops |= opBit(Op(o))
			}
			g.reason = fmt.Sprintf("role %s grants %s on %s", name, g.ops, patternList(g.scopes))
			r.grants = append(r.grants, g)
		}
		p.roles[name] = r
	}

	for _, name := range sortedKeys(f.Principals) {
		fp := f.Principals[name]
		key := "principals." + name
		pr := &principal{name: name}
		if err := scope.CheckIdentity(name); err != nil {
			bad(key, "bad principal name: %v", err)
		}
		if fp.UID == nil {
			bad(key, "principal has no uid")
		} else {
			pr.uid = *fp.UID
		}
		if fp.GID != nil {
			pr.gid, pr.hasGID = *fp.GID, true
		}
		if fp.Exe != "" {
			if !filepath.IsAbs(fp.Exe) || filepath.Clean(fp.Exe) != fp.Exe {
				bad(key+".exe", "exe must be a clean absolute path, got %q", fp.Exe)
			}
			pr.exe = fp.Exe
		}
		for i, s := range fp.ActFor {
			pat, err := scope.Compile(s)
			if err != nil {
				bad(fmt.Sprintf("%s.act_for[%d]", key, i), "bad identity pattern: %v", err)
				continue
			}
			pr.actFor = append(pr.actFor, pat)
		}
		for i, o := range fp.Admin {
			if o != string(OpStatus) && o != string(OpPurge) {
				bad(fmt.Sprintf("%s.admin[%d]", key, i), "bad admin op %q (want status or purge)", o)
				continue
			}
			pr.admin |= opBit(Op(o))
		}
		p.principals = append(p.principals, pr)
	}

	held := map[string]bool{}
	for _, id := range sortedKeys(f.Members) {
		key := "members." + id
		if err := scope.CheckIdentity(id); err != nil {
			bad(key, "members are literal identities: %v", err)
		}
		roles := f.Members[id]
		if len(roles) == 0 {
			bad(key, "member has no roles")
		}
		for i, rn := range roles {
			r, ok := p.roles[rn]
			if !ok {
				bad(fmt.Sprintf("%s[%d]", key, i), "unknown role %q", rn)
				continue
			}
			held[rn] = true
			p.members[id] = append(p.members[id], r)
		}
		if !p.reachable(id) {
			p.warnings = append(p.warnings, fmt.Sprintf("%s%s: member %q: no principal is %[3]q or may act for it", file, lineOf(doc, key), id))
		}
	}
	for _, rn := range sortedKeys(f.Roles) {
		if !held[rn] {
			p.warnings = append(p.warnings, fmt.Sprintf("%s%s: role %s is held by no member", file, lineOf(doc, "roles."+rn), rn))
		}
	}

	p.cache = Cache{TTL: DefaultTTL, OfflineGrace: DefaultOfflineGrace, MaxKeys: DefaultMaxKeys}
	if c := f.Cache; c != nil {
		if c.TTL != "" {
			d, err := time.ParseDuration(c.TTL)
			if err != nil || d <= 0 {
				bad("cache.ttl", "want a positive duration such as 5m, got %q", c.TTL)
			}
			p.cache.TTL = d
		}
		if c.OfflineGrace != "" {
			d, err := time.ParseDuration(c.OfflineGrace)
			if err != nil || d < 0 {
				bad("cache.offline_grace", "want a duration such as 15m (0 for none), got %q", c.OfflineGrace)
			}
			p.cache.OfflineGrace = d
		}
		if c.MaxKeys != nil {
			if *c.MaxKeys < 1 || *c.MaxKeys > MaxMaxKeys {
				bad("cache.max_keys", "want 1 to %d, got %d", MaxMaxKeys, *c.MaxKeys)
			}
			p.cache.MaxKeys = *c.MaxKeys
		}
	}

	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

func lineOf(doc *confile.Doc, key string) string {
	if l := doc.Line(key); l > 0 {
		return fmt.Sprintf(":%d", l)
	}
	return ""
}

// reachable reports whether some principal could ever use identity id.
func (p *Policy) reachable(id string) bool {
	for _, pr := range p.principals {
		if pr.name == id {
			return true
		}
		for _, pat := range pr.actFor {
			if pat.Match(id) {
				return true
			}
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func patternList(ps []scope.Pattern) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}
