package memsafe

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/awnumar/memguard"
)

// SignalContext is signal.NotifyContext for SIGINT and SIGTERM, made for daemons that hold keys.
//
// The first signal cancels ctx: the daemon drains and returns from main, where a deferred DestroyAll
// wipes its keys. A second signal means "now": every key is wiped at once (DestroyAll, then
// memguard.Purge for anything memguard holds) and the process exits with 128+signal.
//
// Unlike memguard.CatchInterrupt, this touches only SIGINT and SIGTERM: SIGHUP reload handlers and
// every other signal.Notify registration of the process keep working.
func SignalContext(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-ch:
			cancel()
		case <-done:
			return
		}
		select {
		case s := <-ch:
			DestroyAll()
			memguard.Purge()
			code := 1
			if sig, ok := s.(syscall.Signal); ok {
				code = 128 + int(sig)
			}
			os.Exit(code)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel()
	}
}
