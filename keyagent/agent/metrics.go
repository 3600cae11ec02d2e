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

	// Children resolved once: WithLabelValues hashes and validates its labels on every call, a
	// measurable share of a cache-hit request.
	reqChildren   map[[2]string]prometheus.Counter
	cacheChildren map[string]prometheus.Counter
}

var (
	metricOps       = []string{"encrypt", "decrypt", "hsm-encrypt", "hsm-decrypt", "status", "purge"}
	metricDecisions = []string{"allow", "deny", "error"}
	metricSources   = []string{"cache", "upstream", "grace"}
)

// request returns the request counter for op and decision.
func (m *Metrics) request(op, decision string) prometheus.Counter {
	if c, ok := m.reqChildren[[2]string{op, decision}]; ok {
		return c
	}
	return m.requests.WithLabelValues(op, decision)
}

// cacheResult returns the cache counter for a lookup result.
func (m *Metrics) cacheResult(src string) prometheus.Counter {
	if c, ok := m.cacheChildren[src]; ok {
		return c
	}
	return m.cache.WithLabelValues(src)
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
	m.reqChildren = make(map[[2]string]prometheus.Counter, len(metricOps)*len(metricDecisions))
	for _, op := range metricOps {
		for _, d := range metricDecisions {
			m.reqChildren[[2]string{op, d}] = m.requests.WithLabelValues(op, d)
		}
	}
	m.cacheChildren = make(map[string]prometheus.Counter, len(metricSources))
	for _, src := range metricSources {
		m.cacheChildren[src] = m.cache.WithLabelValues(src)
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
