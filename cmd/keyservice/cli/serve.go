package cli

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/keyward/keyward/keyagent/audit"
	"github.com/keyward/keyward/keyagent/grants"
	"github.com/keyward/keyward/keyagent/keyservice"
	"github.com/keyward/keyward/memsafe"
)

func serveCmd(e *env) *cobra.Command {
	var listen string
	c := &cobra.Command{
		Use:   "serve",
		Short: "Serve derive and in-HSM requests to node agents over mutual TLS 1.3",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewJSONHandler(e.errw, nil))
			hr := memsafe.Harden(memsafe.HardenOptions{})
			log.Info("process hardening", "report", hr.String())

			cfg, err := keyservice.Load(e.config, true)
			if err != nil {
				return err
			}
			if listen != "" {
				cfg.Listen = listen
			}
			g, err := grants.Load(cfg.Grants)
			if err != nil {
				return fmt.Errorf("grants: %w", err)
			}
			tlsCfg, err := keyservice.ServerTLS(cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.ClientCA)
			if err != nil {
				return err
			}
			var al *audit.Log
			if cfg.Audit == "" || cfg.Audit == "-" {
				al = audit.New(e.out)
			} else if al, err = audit.Open(cfg.Audit); err != nil {
				return err
			}
			defer al.Close()
			b, err := keyservice.OpenBackend(cfg.Backend, log)
			if err != nil {
				return err
			}
			defer memsafe.DestroyAll()
			defer b.Close()

			ctx, stop := memsafe.SignalContext(cmd.Context())
			defer stop()
			reg := prometheus.NewRegistry()
			srv, err := keyservice.New(keyservice.ServerConfig{Backend: b, Grants: g, TLS: tlsCfg, Audit: al, Logger: log, Registerer: reg})
			if err != nil {
				return err
			}
			if cfg.Metrics != "" {
				if err := keyservice.ServeMetrics(ctx, cfg.Metrics, reg, log); err != nil {
					return err
				}
			}
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				return fmt.Errorf("listen: %w", err)
			}
			log.Info("keyservice listening", "addr", ln.Addr().String(), "config", cfg.File)
			return srv.Serve(ctx, ln)
		},
	}
	c.Flags().StringVar(&listen, "listen", "", "override the config's listen address")
	return c
}
