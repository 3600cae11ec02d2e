// Package colkeystest starts the real key stack column-encryption tests run against: a key service
// on a fresh SoftHSM2 token (keyrings "payroll" and "vault" of kind hsm-aead) and a key agent whose
// policy lets the running test binary act for any "db:*" identity, with:
//
//	db:alice, db:keyward  encrypt and decrypt payroll:* and vault:*
//	db:bob                decrypt payroll:employees.salary only
//	db:carol              nothing
//
// It is a test helper (it calls t.Fatal); no mock stands in for the agent or the HSM.
package colkeystest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyward/keyward/keyagent/client"
	"github.com/keyward/keyward/testenv"
)

// Stack is a running key service and agent.
type Stack struct {
	KS     *testenv.KeyService
	Agent  *testenv.Agent
	Client *client.Client
}

const policyTmpl = `version: 1
principals:
  tester: {uid: %[2]d, exe: %[1]s, act_for: ["db:*"]}
%[3]sroles:
  payroll: {grants: [{scopes: ["payroll:*"], ops: [encrypt, decrypt]}]}
  analyst: {grants: [{scopes: ["payroll:employees.salary"], ops: [decrypt]}]}
  vault:   {grants: [{scopes: ["vault:*"], ops: [encrypt, decrypt]}]}
members:
  "db:alice":   [payroll, vault]
  "db:keyward": [payroll, vault]
  "db:bob":     [analyst]
cache: {ttl: 1s, offline_grace: 0s, max_keys: 256}
`

// Start starts the stack (not parallel-safe: SoftHSM reads its configuration from the environment).
// Executables in also (say, a built colcrypt binary) may act for "db:*" too.
func Start(t testing.TB, also ...string) *Stack {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	self, _ = filepath.EvalSymlinks(self)
	extra := ""
	for i, exe := range also {
		extra += fmt.Sprintf("  extra%d: {uid: %d, exe: %s, act_for: [\"db:*\"]}\n", i, os.Getuid(), exe)
	}
	ks := testenv.StartKeyService(t, testenv.KeyServiceOptions{Keyrings: []string{"payroll", "vault:hsm-aead"}})
	a := testenv.StartAgent(t, testenv.AgentOptions{
		Policy:      fmt.Sprintf(policyTmpl, self, os.Getuid(), extra),
		KeyServices: []*testenv.KeyService{ks},
	})
	c := client.New(a.Socket)
	t.Cleanup(func() { c.Close() })
	return &Stack{KS: ks, Agent: a, Client: c}
}

// Rotate adds a version to keyring (keyservice keyring rotate) and returns the command's output.
func (s *Stack) Rotate(t testing.TB, keyring string) string {
	t.Helper()
	out, err := s.KS.Run("keyring", "rotate", keyring)
	if err != nil {
		t.Fatalf("keyring rotate %s: %v\n%s", keyring, err, out)
	}
	return out
}
