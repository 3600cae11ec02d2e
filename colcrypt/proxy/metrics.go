package proxy

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the Prometheus metrics of one Server, in a registry of their own (no globals).
// Labels never carry query text, roles or values.
type Metrics struct {
	Registry *prometheus.Registry

	accepted prometheus.Counter
	active   prometheus.Gauge
	sessions *prometheus.CounterVec
	rejected *prometheus.CounterVec
	errors   *prometheus.CounterVec
	cancels  *prometheus.CounterVec
	messages *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	// per-direction children, resolved once (the hot path adds to them per flush, not per message)
	msgsIn, msgsOut, bytesIn, bytesOut prometheus.Counter
}

func newMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "colcrypt_connections_total",
			Help: "Client connections accepted (sessions and cancel requests)."}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "colcrypt_sessions_active",
			Help: "Sessions relaying after authentication."}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "colcrypt_sessions_total",
			Help: "Sessions that reached relaying, by relay: event_loop (no hooks, no TLS) or goroutines."}, []string{"relay"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "colcrypt_connections_rejected_total",
			Help: "Client connections refused by the proxy, by reason."}, []string{"reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "colcrypt_errors_total",
			Help: "Errors by kind (protocol, client_tls, upstream_connect, upstream_tls, upstream_lost, auth, refused)."}, []string{"kind"}),
		cancels: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "colcrypt_cancel_requests_total",
			Help: "Cancel requests by result."}, []string{"result"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "colcrypt_messages_total",
			Help: "Protocol messages relayed after authentication, by direction."}, []string{"direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "colcrypt_bytes_total",
			Help: "Bytes read, by direction."}, []string{"direction"}),
	}
	m.Registry.MustRegister(m.accepted, m.active, m.sessions, m.rejected, m.errors, m.cancels, m.messages, m.bytes)
	m.msgsIn = m.messages.WithLabelValues("client_to_server")
	m.msgsOut = m.messages.WithLabelValues("server_to_client")
	m.bytesIn = m.bytes.WithLabelValues("client_to_server")
	m.bytesOut = m.bytes.WithLabelValues("server_to_client")
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
