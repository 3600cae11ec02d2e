package keyservice

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	requests   *prometheus.CounterVec
	hsmSeconds *prometheus.HistogramVec
	connErrors *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyward_keyservice_requests_total", Help: "Requests by operation and decision.",
		}, []string{"op", "decision"}),
		hsmSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "keyward_keyservice_backend_seconds", Help: "Backend (HSM) latency by operation.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}, []string{"op"}),
		connErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyward_keyservice_connection_errors_total", Help: "Connections closed on error, by kind.",
		}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.hsmSeconds, m.connErrors)
	}
	return m
}
