// Package testenv starts the real components Keyward's tests run against: a throwaway PostgreSQL
// cluster, a fresh SoftHSM2 token, a test certificate authority, an unprivileged user for tests run as
// root. Each is made in a temporary directory, on 127.0.0.1, and torn down by t.Cleanup.
//
// No mock stands in for Postgres, the HSM or cryptsetup in Keyward's integration tests. When a tool is
// missing, Require fails the test under CI=true (CI installs everything with `make deps`, so a missing
// tool there is a broken install step) and skips it elsewhere with a message naming `make deps`.
//
// Guarantees: several clusters and tokens may run at once (parallel test packages); everything is
// removed at cleanup, also when the test fails. Non-guarantees: the components are tuned for speed
// (fsync off), never for durability; they are not hardened and must only listen on loopback.
package testenv
