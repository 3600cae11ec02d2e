package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the agent's Prometheus metrics. Labels never carry scopes or identities' secrets; they
// carry operations, decisions, cache results and endpoint addresses.
type Metrics struct {
	requests     *prometheus.CounterVec
	cache        *prometheus.CounterVec
	cacheKeys    prometheus.Gauge
	expired      prometheus.Counter
	badFrames    prometheus.Counter
	upstreamTime *prometheus.HistogramVec
	upstreamErrs *prometheus.CounterVec
}

// NewMetrics registers the agent's metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyward_agent_requests_total",
			Help: "Requests by operation and decision."}, []string{"op", "decision"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyward_agent_cache_total",
			Help: "Key lookups by result: cache (hit), upstream (miss), grace (stale key served while offline)."}, []string{"result"}),
		cacheKeys: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keyward_agent_cache_keys", Help: "Keys held."}),
		expired:   prometheus.NewCounter(prometheus.CounterOpts{Name: "keyward_agent_cache_expired_total", Help: "Keys wiped at expiry."}),
		badFrames: prometheus.NewCounter(prometheus.CounterOpts{Name: "keyward_agent_bad_frames_total", Help: "Connections closed on a malformed frame."}),
		upstreamTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keyward_agent_upstream_seconds",
			Help: "Upstream request latency by endpoint.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"endpoint"}),
		upstreamErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyward_agent_upstream_errors_total",
			Help: "Upstream request errors by endpoint."}, []string{"endpoint"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.cache, m.cacheKeys, m.expired, m.badFrames, m.upstreamTime, m.upstreamErrs)
	}
	return m
}

// ObserveUpstream records one upstream attempt (upstream.RemoteConfig.Observe).
func (m *Metrics) ObserveUpstream(endpoint string, d time.Duration, err error) {
	m.upstreamTime.WithLabelValues(endpoint).Observe(d.Seconds())
	if err != nil {
		m.upstreamErrs.WithLabelValues(endpoint).Inc()
	}
}
