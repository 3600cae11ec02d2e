package policy

import (
	"fmt"
	"strings"

	"github.com/keyward/keyward/keyagent/scope"
)

// Caller is who is on the other end of the agent socket, as the kernel told
// it (keyagent/peercred).
type Caller struct {
	UID uint32
	GID uint32
	PID int
	Exe string // "" when it could not be read: then no exe-bound principal matches
}

// Request is one request to decide.
type Request struct {
	Caller    Caller
	ActingFor string // "": the principal acts for itself
	Scope     string // ignored for status and purge
	Op        Op
}

// Decision is the outcome of Decide.
type Decision struct {
	Allowed   bool
	Principal string // the principal that allowed, or the first that matched the caller
	Identity  string // the identity whose roles were consulted
	// Rule is, when allowed, the key path of what allowed it
	// ("roles.payroll.grants[0]", "principals.operator.admin"); when
	// denied, one of the Deny* constants.
	Rule   string
	Reason string // one sentence for logs and `policy explain`
}

// Values of Decision.Rule for denials; stable, for metrics labels.
const (
	DenyNoPolicy    = "no-policy"
	DenyBadRequest  = "bad-request"
	DenyNoPrincipal = "no-principal"
	DenyActFor      = "act-for"
	DenyNoGrant     = "no-grant"
	DenyNotAdmin    = "not-admin"
)

func deny(rule, format string, args ...any) Decision {
	return Decision{Rule: rule, Reason: fmt.Sprintf(format, args...)}
}

// Decide decides a request. It is safe for concurrent use, and allowing a
// request allocates nothing.
func (p *Policy) Decide(req Request) Decision {
	return p.decide(req, nil)
}

// Explain returns a human-readable account of how Decide reaches its
// decision for req: every principal considered and why, the identity, the
// roles and grants consulted, and the decision with its rule.
func (p *Policy) Explain(req Request) string {
	var tr trace
	d := p.decide(req, &tr)
	var b strings.Builder
	fmt.Fprintf(&b, "request:   op=%s scope=%q acting_for=%q\n", req.Op, req.Scope, req.ActingFor)
	fmt.Fprintf(&b, "caller:    uid=%d gid=%d pid=%d exe=%q\n", req.Caller.UID, req.Caller.GID, req.Caller.PID, req.Caller.Exe)
	if p != nil {
		fmt.Fprintf(&b, "policy:    %s (version %s)\n", p.file, p.version)
	}
	for _, l := range tr {
		b.WriteString("  ")
		b.WriteString(l)
		b.WriteByte('\n')
	}
	if d.Allowed {
		b.WriteString("decision:  ALLOW\n")
	} else {
		b.WriteString("decision:  DENY\n")
	}
	if d.Principal != "" {
		fmt.Fprintf(&b, "principal: %s\n", d.Principal)
	}
	if d.Identity != "" {
		fmt.Fprintf(&b, "identity:  %s\n", d.Identity)
	}
	fmt.Fprintf(&b, "rule:      %s\n", d.Rule)
	fmt.Fprintf(&b, "reason:    %s\n", d.Reason)
	return b.String()
}

type trace []string

func (t *trace) add(format string, args ...any) {
	*t = append(*t, fmt.Sprintf(format, args...))
}

func (p *Policy) decide(req Request, tr *trace) Decision {
	if p == nil {
		return deny(DenyNoPolicy, "no policy loaded")
	}
	admin := req.Op == OpStatus || req.Op == OpPurge
	switch {
	case opBit(req.Op) == 0:
		return deny(DenyBadRequest, "unknown op %q", req.Op)
	case !admin:
		if err := scope.Check(req.Scope); err != nil {
			return deny(DenyBadRequest, "bad scope: %v", err)
		}
	}
	if req.ActingFor != "" {
		if err := scope.CheckIdentity(req.ActingFor); err != nil {
			return deny(DenyBadRequest, "bad acting-for identity: %v", err)
		}
	}
	var first Decision
	matched := false
	for _, pr := range p.principals {
		if !pr.matches(req.Caller) {
			if tr != nil {
				tr.add("principal %s: no match: %s", pr.name, pr.mismatch(req.Caller))
			}
			continue
		}
		if tr != nil {
			tr.add("principal %s: matches the caller", pr.name)
		}
		d := p.decideFor(pr, req, admin, tr)
		if d.Allowed {
			return d
		}
		if !matched {
			first = d
			matched = true
		}
	}
	if !matched {
		return deny(DenyNoPrincipal, "no principal matches uid %d gid %d exe %q", req.Caller.UID, req.Caller.GID, req.Caller.Exe)
	}
	return first
}

func (pr *principal) matches(c Caller) bool {
	return pr.uid == c.UID && (!pr.hasGID || pr.gid == c.GID) && (pr.exe == "" || pr.exe == c.Exe)
}

// mismatch says why pr does not match c, or "" if it does.
func (pr *principal) mismatch(c Caller) string {
	switch {
	case pr.uid != c.UID:
		return fmt.Sprintf("uid %d, caller has %d", pr.uid, c.UID)
	case pr.hasGID && pr.gid != c.GID:
		return fmt.Sprintf("gid %d, caller has %d", pr.gid, c.GID)
	case pr.exe != "" && pr.exe != c.Exe:
		return fmt.Sprintf("exe %q, caller runs %q", pr.exe, c.Exe)
	}
	return ""
}

func (p *Policy) decideFor(pr *principal, req Request, admin bool, tr *trace) Decision {
	identity := pr.name
	if req.ActingFor != "" && req.ActingFor != pr.name {
		if admin {
			d := deny(DenyActFor, "%s cannot be done on behalf of another identity", req.Op)
			d.Principal = pr.name
			return d
		}
		via := ""
		for _, pat := range pr.actFor {
			if pat.Match(req.ActingFor) {
				via = pat.String()
				break
			}
		}
		if via == "" {
			d := deny(DenyActFor, "principal %s may not act for %q (act_for %s)", pr.name, req.ActingFor, patternList(pr.actFor))
			d.Principal = pr.name
			if tr != nil {
				tr.add("  %s", d.Reason)
			}
			return d
		}
		identity = req.ActingFor
		if tr != nil {
			tr.add("  acts for %s via act_for %q", identity, via)
		}
	}
	if admin {
		if pr.admin.has(req.Op) {
			return Decision{Allowed: true, Principal: pr.name, Identity: identity,
				Rule: "principals." + pr.name + ".admin", Reason: fmt.Sprintf("principal %s may %s", pr.name, req.Op)}
		}
		d := deny(DenyNotAdmin, "principal %s may not %s (admin: [%s])", pr.name, req.Op, pr.admin)
		d.Principal, d.Identity = pr.name, identity
		if tr != nil {
			tr.add("  %s", d.Reason)
		}
		return d
	}
	roles := p.members[identity]
	for _, r := range roles {
		for _, g := range r.grants {
			if !g.ops.has(req.Op) {
				if tr != nil {
					tr.add("  %s: ops %s, not %s", g.rule, g.ops, req.Op)
				}
				continue
			}
			for _, pat := range g.scopes {
				if pat.Match(req.Scope) {
					if tr != nil {
						tr.add("  %s: scope %q matches %q: allows", g.rule, req.Scope, pat)
					}
					return Decision{Allowed: true, Principal: pr.name, Identity: identity, Rule: g.rule, Reason: g.reason}
				}
			}
			if tr != nil {
				tr.add("  %s: scopes %s do not match %q", g.rule, patternList(g.scopes), req.Scope)
			}
		}
	}
	var d Decision
	if len(roles) == 0 {
		d = deny(DenyNoGrant, "identity %q holds no roles", identity)
	} else {
		names := make([]string, len(roles))
		for i, r := range roles {
			names[i] = r.name
		}
		d = deny(DenyNoGrant, "identity %q (roles %s) holds no grant of %s on %q", identity, strings.Join(names, ", "), req.Op, req.Scope)
	}
	d.Principal, d.Identity = pr.name, identity
	if tr != nil {
		tr.add("  %s", d.Reason)
	}
	return d
}
