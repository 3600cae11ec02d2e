package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/colcrypt/config"
	"github.com/keyward/keyward/colcrypt/proxy"
	"github.com/keyward/keyward/keyagent/confile"
)

// envPrefix names the environment variables that stand in for flags not given.
const envPrefix = "KEYWARD_COLCRYPT"

func newServeCmd() *cobra.Command {
	var configPath, listen string
	cmd := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "Run the proxy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, &configPath)
			if err != nil {
				return err
			}
			if listen != "" {
				cfg.Listen = listen
			}
			return serve(cmd.Context(), cfg, cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "colcrypt.yaml (or $KEYWARD_COLCRYPT_CONFIG)")
	cmd.Flags().StringVar(&listen, "listen", "", "override listen: host:port")
	return cmd
}

// loadConfig fills the flags not given from KEYWARD_COLCRYPT_<FLAG> (KEYWARD_COLCRYPT_CONFIG,
// KEYWARD_COLCRYPT_LISTEN, ...), then loads the --config file (read through path after that).
func loadConfig(cmd *cobra.Command, path *string) (*config.Config, error) {
	if err := confile.ApplyEnv(cmd.Flags(), envPrefix); err != nil {
		return nil, &exitError{ExitConfig, err}
	}
	if *path == "" {
		return nil, &exitError{ExitConfig, errors.New("--config is required")}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return nil, &exitError{ExitConfig, err}
	}
	return cfg, nil
}

// Interceptor is installed by the column-encryption layer before serve runs (nil: pure proxy).
var Interceptor func(ctx context.Context, cfg *config.Config, log *slog.Logger) (proxy.Interceptor, func(), error)

func serve(ctx context.Context, cfg *config.Config, stderr interface{ Write([]byte) (int, error) }) error {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(stderr, opts)
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(stderr, opts)
	}
	log := slog.New(h)

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	pc, err := proxy.FromFile(cfg)
	if err != nil {
		return &exitError{ExitConfig, err}
	}
	pc.Logger = log
	if Interceptor != nil {
		ic, closeFn, err := Interceptor(ctx, cfg, log)
		if err != nil {
			return err
		}
		if closeFn != nil {
			defer closeFn()
		}
		pc.Interceptor = ic
	}
	srv := proxy.New(pc)

	var lns []net.Listener
	if cfg.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	if cfg.ListenUnix != "" {
		_ = os.Remove(cfg.ListenUnix) // a stale socket from a killed run
		ln, err := net.Listen("unix", cfg.ListenUnix)
		if err != nil {
			return err
		}
		defer os.Remove(cfg.ListenUnix)
		lns = append(lns, ln)
	}
	if cfg.Metrics != "" {
		mln, err := net.Listen("tcp", cfg.Metrics)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", srv.Metrics().Handler())
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(mln)
		defer hs.Close()
		log.Info("metrics", "addr", mln.Addr().String())
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		log.Info("listening", "addr", ln.Addr().String(), "upstream", pc.UpstreamAddr, "upstream_tls", pc.UpstreamTLS)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx, ln); err != nil {
				errs <- err
				stop()
			}
		}()
	}
	wg.Wait()
	close(errs)
	log.Info("stopped")
	return <-errs
}
