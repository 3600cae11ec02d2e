// Package agent is the node-local key agent: it serves data keys and in-HSM operations to local
// processes over a unix socket, deciding each request with the role-based policy (keyagent/policy)
// from the caller's kernel-reported credentials, and fetching keys it does not hold from its upstream
// (key services over mutual TLS, or an embedded backend) into its cache (keyagent/keycache).
//
// Who is calling is read once per connection, at connect time, from SO_PEERCRED (uid, gid, pid) and
// /proc/<pid>/exe, with a guard against PID reuse (keyagent/peercred). Nothing the caller sends can
// change it. Every request is decided and audited: the caller's credentials, the principal matched,
// the identity acted for, scope, version, operation, decision and reason — never key material.
//
// Guarantees: deny by default; a request the policy denies never reaches the upstream; a malformed or
// oversized frame closes that one connection; a policy reload that fails validation keeps the running
// policy. Not guaranteed: a caller that is allowed a key can copy it; the agent protects keys at rest
// in its memory (memsafe) and decides who gets them, not what they do with them.
package agent
