package cli

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/keyward/keyward/keyagent/agent"
	"github.com/keyward/keyward/keyagent/audit"
	"github.com/keyward/keyward/keyagent/keycache"
	"github.com/keyward/keyward/keyagent/keyservice"
	"github.com/keyward/keyward/keyagent/policy"
	"github.com/keyward/keyward/keyagent/upstream"
	"github.com/keyward/keyward/memsafe"
)

func serveCmd(e *env) *cobra.Command {
	var mlockall bool
	c := &cobra.Command{
		Use:   "serve",
		Short: "Serve keys to local callers on the agent socket, as the policy allows",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewJSONHandler(e.errw, nil))
			hr := memsafe.Harden(memsafe.HardenOptions{MlockAll: mlockall})
			log.Info("process hardening", "report", hr.String())

			cfg, err := agent.Load(e.config)
			if err != nil {
				return err
			}
			if e.socket != "" {
				cfg.Socket.Path = e.socket
			}
			holder, err := policy.NewHolder(cfg.Policy)
			if err != nil {
				return err
			}
			for _, w := range holder.Policy().Warnings() {
				log.Warn("policy", "warning", w)
			}
			cc := holder.Policy().Cache()
			// Keys are 32 or 64 bytes; memguard locks a page per key either way.
			if err := memsafe.CheckLockLimit(cc.MaxKeys, 64); err != nil {
				return err
			}
			var al *audit.Log
			if cfg.Audit == "" || cfg.Audit == "-" {
				al = audit.New(e.out)
			} else if al, err = audit.Open(cfg.Audit); err != nil {
				return err
			}
			defer al.Close()

			reg := prometheus.NewRegistry()
			metrics := agent.NewMetrics(reg)
			up, err := openUpstream(cfg, metrics, log)
			if err != nil {
				return err
			}
			defer up.Close()
			cache := keycache.New(keycache.Config{TTL: cc.TTL, Grace: cc.OfflineGrace, MaxKeys: cc.MaxKeys})
			defer memsafe.DestroyAll()
			defer cache.Purge()

			ctx, stop := memsafe.SignalContext(cmd.Context())
			defer stop()
			go reloadOnHUP(ctx.Done(), holder, log)
			go func() {
				err := holder.Watch(ctx, func(p *policy.Policy, err error) {
					if err != nil {
						log.Error("policy reload failed: keeping the running policy", "err", err)
						return
					}
					log.Info("policy reloaded", "version", p.Version())
				})
				if err != nil {
					log.Warn("policy file watch unavailable (SIGHUP still reloads)", "err", err)
				}
			}()
			if cfg.Metrics != "" {
				if err := keyservice.ServeMetrics(ctx, cfg.Metrics, reg, log); err != nil {
					return err
				}
			}
			a, err := agent.New(agent.Deps{Policy: holder, Upstream: up, Cache: cache, Audit: al, Logger: log, Metrics: metrics})
			if err != nil {
				return err
			}
			ln, err := agent.Listen(cfg.Socket.Path, os.FileMode(cfg.FileMode), cfg.Socket.Group)
			if err != nil {
				return err
			}
			log.Info("keyagent listening", "socket", cfg.Socket.Path, "policy", cfg.Policy, "policy_version", holder.Policy().Version())
			return a.Serve(ctx, ln)
		},
	}
	c.Flags().BoolVar(&mlockall, "mlockall", false, "lock all process memory (needs CAP_IPC_LOCK)")
	return c
}

func reloadOnHUP(done <-chan struct{}, h *policy.Holder, log *slog.Logger) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	defer signal.Stop(ch)
	for {
		select {
		case <-done:
			return
		case <-ch:
			changed, err := h.Reload()
			switch {
			case err != nil:
				log.Error("policy reload (SIGHUP) failed: keeping the running policy", "err", err)
			case changed:
				log.Info("policy reloaded (SIGHUP)", "version", h.Policy().Version())
			default:
				log.Info("policy unchanged (SIGHUP)")
			}
		}
	}
}

func openUpstream(cfg *agent.Config, m *agent.Metrics, log *slog.Logger) (upstream.Upstream, error) {
	if emb := cfg.Upstream.Embedded; emb != nil {
		ks, err := keyservice.Load(emb.Config, false)
		if err != nil {
			return nil, fmt.Errorf("embedded: %w", err)
		}
		b, err := keyservice.OpenBackend(ks.Backend, log)
		if err != nil {
			return nil, err
		}
		return &upstream.Embedded{B: b}, nil
	}
	ks := cfg.Upstream.KeyService
	tlsCfg, err := keyservice.ClientTLS(ks.TLS.Cert, ks.TLS.Key, ks.TLS.CA)
	if err != nil {
		return nil, fmt.Errorf("upstream.keyservice.tls: %w", err)
	}
	return upstream.NewRemote(upstream.RemoteConfig{
		Endpoints: ks.Endpoints,
		TLS:       tlsCfg,
		Logger:    log,
		Observe:   m.ObserveUpstream,
	})
}
