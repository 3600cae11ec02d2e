// Package grants is the key service's own, coarser authorization: which
// scopes and operations each node certificate may use, whatever the node's
// local policy says.
//
// # File format (strict YAML, version 1)
//
//	version: 1
//	nodes:
//	  "spiffe://keyward/node/web-7": {scopes: ["payroll:*", "boot:volume/web-7/*"], ops: [derive, encrypt, decrypt]}
//	  "node-db-1": {scopes: ["payroll:*"], ops: [derive]}
//
// A node's identity is its certificate's first URI SAN if it has one, else
// its subject common name (Identity). Node keys are literal identities; scope
// patterns follow keyagent/scope ('*' matches any run of characters, the
// keyring part is literal or "*"). Operations: derive (a data key leaves the
// HSM, for the agent's cache), encrypt and decrypt (in-HSM AES-GCM for
// hsm-aead keyrings), status. Unknown keys, unknown operations, bad patterns
// and duplicate nodes are errors naming the file, line and key.
//
// # Decisions
//
// Deny by default: an identity not in the file gets nothing. Allowed needs
// the node listed, the op among its ops and the scope matching one of its
// patterns.
//
// # Non-guarantees
//
// The identity is only as good as the TLS verification that produced the
// certificate: the caller must pass a certificate from a verified chain.
package grants

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/keyward/keyward/keyagent/confile"
	"github.com/keyward/keyward/keyagent/scope"
)

// Op is an operation a node asks the key service for.
type Op string

// Operations.
const (
	OpDerive  Op = "derive"
	OpEncrypt Op = "encrypt"
	OpDecrypt Op = "decrypt"
	OpStatus  Op = "status"
)

func validOp(op Op) bool {
	return op == OpDerive || op == OpEncrypt || op == OpDecrypt || op == OpStatus
}

// Grants is a validated grants file, immutable and safe for concurrent use.
type Grants struct {
	file  string
	nodes map[string]*node
}

type node struct {
	scopes []scope.Pattern
	ops    map[Op]bool
}

type fileGrants struct {
	Version int                 `yaml:"version"`
	Nodes   map[string]fileNode `yaml:"nodes"`
}

type fileNode struct {
	Scopes []string `yaml:"scopes"`
	Ops    []string `yaml:"ops"`
}

// Load reads and validates a grants file.
func Load(path string) (*Grants, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("grants: %w", err)
	}
	return Parse(path, data)
}

// Parse validates a grants file held in memory; file names it in errors.
func Parse(file string, data []byte) (*Grants, error) {
	var f fileGrants
	doc, err := confile.DecodeBytes(file, data, &f, 1)
	if err != nil {
		return nil, err
	}
	g := &Grants{file: file, nodes: map[string]*node{}}
	var errs []error
	ids := make([]string, 0, len(f.Nodes))
	for id := range f.Nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		fn := f.Nodes[id]
		key := "nodes." + id
		if err := scope.CheckIdentity(id); err != nil {
			errs = append(errs, doc.Errorf(key, "node identities are literal: %v", err))
		}
		n := &node{ops: map[Op]bool{}}
		// Status alone needs no scope; every other op does.
		needsScopes := false
		for _, o := range fn.Ops {
			needsScopes = needsScopes || Op(o) != OpStatus
		}
		if len(fn.Scopes) == 0 && needsScopes {
			errs = append(errs, doc.Errorf(key, "node has no scopes"))
		}
		for i, s := range fn.Scopes {
			pat, err := scope.CompileScope(s)
			if err != nil {
				errs = append(errs, doc.Errorf(fmt.Sprintf("%s.scopes[%d]", key, i), "bad scope pattern: %v", err))
				continue
			}
			n.scopes = append(n.scopes, pat)
		}
		if len(fn.Ops) == 0 {
			errs = append(errs, doc.Errorf(key, "node has no ops (want derive, encrypt, decrypt, status)"))
		}
		for i, o := range fn.Ops {
			if !validOp(Op(o)) {
				errs = append(errs, doc.Errorf(fmt.Sprintf("%s.ops[%d]", key, i), "bad op %q (want derive, encrypt, decrypt or status)", o))
				continue
			}
			n.ops[Op(o)] = true
		}
		g.nodes[id] = n
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return g, nil
}

// File is the path or name the grants were loaded from.
func (g *Grants) File() string { return g.file }

// Allowed reports whether identity may do op on scope, and why (or why not).
// Status takes no scope: it is allowed to any node listed with the status op.
func (g *Grants) Allowed(identity, sc string, op Op) (bool, string) {
	if g == nil {
		return false, "no grants loaded"
	}
	n, ok := g.nodes[identity]
	if !ok {
		return false, fmt.Sprintf("node %q has no grants", identity)
	}
	if !validOp(op) {
		return false, fmt.Sprintf("unknown op %q", op)
	}
	if !n.ops[op] {
		return false, fmt.Sprintf("node %q is not granted %s", identity, op)
	}
	if op == OpStatus {
		return true, fmt.Sprintf("node %q is granted status", identity)
	}
	if err := scope.Check(sc); err != nil {
		return false, fmt.Sprintf("bad scope: %v", err)
	}
	for _, pat := range n.scopes {
		if pat.Match(sc) {
			return true, fmt.Sprintf("node %q is granted %s on %q", identity, op, pat)
		}
	}
	return false, fmt.Sprintf("node %q is not granted scope %q", identity, sc)
}

// Identity is a node certificate's identity: its first URI SAN (a SPIFFE ID,
// say) if it has one, else its subject common name, else "".
func Identity(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	if len(cert.URIs) > 0 && cert.URIs[0] != nil {
		return cert.URIs[0].String()
	}
	return cert.Subject.CommonName
}
