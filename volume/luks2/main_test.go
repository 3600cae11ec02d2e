package luks2

import (
	"flag"
	"os"
	"testing"
)

// TestMain turns off the fuzzer's minimisation of new interesting inputs unless the command line
// asks for it: FuzzParseHeader's inputs are kilobytes of binary header and JSON in which almost every
// byte is load-bearing, so the default minimisation (up to a minute per new input) stalls the worker
// at a handful of executions per minute instead of thousands per second. Crashers are still
// reported with the input that found them.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.fuzzminimizetime" })
	if !set {
		_ = flag.Set("test.fuzzminimizetime", "0")
	}
	os.Exit(m.Run())
}
