package memsafe_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/memsafe"
)

func signalHelper() {
	k, _ := memsafe.NewRandom(32)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP) // another handler of the process: must keep working
	ctx, stop := memsafe.SignalContext(context.Background())
	defer stop()
	_ = syscall.Kill(os.Getpid(), syscall.SIGHUP)
	select {
	case <-hup:
		fmt.Println("hup delivered")
	case <-time.After(5 * time.Second):
		fmt.Println("hup lost")
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case <-ctx.Done():
		fmt.Println("ctx cancelled, key alive:", k.Alive())
	case <-time.After(5 * time.Second):
		fmt.Println("ctx not cancelled")
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGTERM) // second signal: wipe and exit 143
	time.Sleep(5 * time.Second)
	fmt.Println("still running")
}

func TestSignalContext(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "MEMSAFE_HELPER=signals")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 128+int(syscall.SIGTERM) {
		t.Fatalf("want exit code 143 after the second SIGTERM, got %v: %s", err, out)
	}
	for _, want := range []string{"hup delivered", "ctx cancelled, key alive: true"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("missing %q in helper output: %s", want, out)
		}
	}
	if strings.Contains(string(out), "still running") {
		t.Fatalf("process survived the second signal: %s", out)
	}
}
