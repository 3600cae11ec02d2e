// Package keyservice is Keyward's HSM-backed key service: it answers derive, hsm-encrypt and
// hsm-decrypt requests from node agents over the framed protocol of keyagent/wire inside TLS 1.3 with
// client certificates.
//
// A node's identity is its certificate: the first URI SAN if it has one, else the subject CN. A grants
// file (keyagent/grants) maps identities to scope patterns and operations; everything else is denied,
// whatever the node's local policy says. Every request is audited (keyagent/audit) with the node, the
// identity it acts for, the scope, version, operation, decision and reason: never key material.
//
// The service keeps no state of its own: derivation is deterministic inside the backend (HSM), so any
// number of instances against one token serve identical keys and can sit behind any load balancer.
//
// In-HSM encryption binds the scope: the AAD given to the HSM is
// "keyward-hsm-v1" || 0x00 || scope || 0x00 || caller AAD, so a ciphertext made for one scope does not
// decrypt under another scope of the same keyring, whatever AAD the caller passes.
//
// Not guaranteed: the service trusts the agent's claim of whom it acts for (on_behalf_of is recorded,
// not verified; the agent's policy decides it). A malformed frame closes that one connection.
package keyservice
