package agent

import (
	"net"
	"path/filepath"
	"strconv"

	"github.com/keyward/keyward/keyagent/confile"
)

// DefaultSocket is where the agent listens and clients look when told nothing else.
const DefaultSocket = "/run/keyward/agent.sock"

// Config is the agent's configuration file (version 1). Build it only with Load.
type Config struct {
	Version  int            `yaml:"version"`
	Socket   SocketConfig   `yaml:"socket"`
	Policy   string         `yaml:"policy"`
	Upstream UpstreamConfig `yaml:"upstream"`
	Audit    string         `yaml:"audit"`   // JSON lines; "" or "-": standard output
	Metrics  string         `yaml:"metrics"` // loopback host:port; "": off

	File     string `yaml:"-"`
	FileMode uint32 `yaml:"-"` // parsed Socket.Mode
	doc      *confile.Doc
}

// SocketConfig is the unix socket and who may connect to it at the file-system level (the policy
// decides what each caller may do).
type SocketConfig struct {
	Path  string `yaml:"path"`
	Mode  string `yaml:"mode"`  // octal, default "0660"
	Group string `yaml:"group"` // group name or id owning the socket; "": the agent's
}

// UpstreamConfig selects remote key services or an embedded backend.
type UpstreamConfig struct {
	KeyService *KeyServiceConfig `yaml:"keyservice"`
	Embedded   *EmbeddedConfig   `yaml:"embedded"`
}

// KeyServiceConfig lists key service endpoints, tried in order, and the node's TLS identity.
type KeyServiceConfig struct {
	Endpoints []string `yaml:"endpoints"`
	TLS       struct {
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
		CA   string `yaml:"ca"`
	} `yaml:"tls"`
}

// EmbeddedConfig points at a key service config whose backend the agent opens in-process.
type EmbeddedConfig struct {
	Config string `yaml:"config"`
}

// Load reads and validates an agent config. Relative paths are relative to the config file.
func Load(path string) (*Config, error) {
	var c Config
	doc, err := confile.Decode(path, &c, 1)
	if err != nil {
		return nil, err
	}
	c.File, c.doc = path, doc
	base := filepath.Dir(path)
	abs := func(p *string) {
		if *p != "" && *p != "-" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	if c.Socket.Path == "" {
		c.Socket.Path = DefaultSocket
	}
	abs(&c.Socket.Path)
	if c.Socket.Mode == "" {
		c.Socket.Mode = "0660"
	}
	m, err := strconv.ParseUint(c.Socket.Mode, 8, 32)
	if err != nil || m > 0o777 {
		return nil, doc.Errorf("socket.mode", "%q is not an octal file mode such as \"0660\"", c.Socket.Mode)
	}
	c.FileMode = uint32(m)
	if c.Policy == "" {
		return nil, doc.Errorf("policy", "required (path of the policy file)")
	}
	abs(&c.Policy)
	u := &c.Upstream
	switch {
	case u.KeyService != nil && u.Embedded != nil:
		return nil, doc.Errorf("upstream", "give either keyservice or embedded, not both")
	case u.KeyService != nil:
		ks := u.KeyService
		if len(ks.Endpoints) == 0 {
			return nil, doc.Errorf("upstream.keyservice.endpoints", "required: at least one host:port")
		}
		for i, ep := range ks.Endpoints {
			if _, _, err := net.SplitHostPort(ep); err != nil {
				return nil, doc.Errorf("upstream.keyservice.endpoints["+strconv.Itoa(i)+"]", "%v", err)
			}
		}
		for key, p := range map[string]*string{"cert": &ks.TLS.Cert, "key": &ks.TLS.Key, "ca": &ks.TLS.CA} {
			if *p == "" {
				return nil, doc.Errorf("upstream.keyservice.tls."+key, "required (mutual TLS)")
			}
			abs(p)
		}
	case u.Embedded != nil:
		if u.Embedded.Config == "" {
			return nil, doc.Errorf("upstream.embedded.config", "required (path of a keyservice config)")
		}
		abs(&u.Embedded.Config)
	default:
		return nil, doc.Errorf("upstream", "required: keyservice {endpoints, tls} or embedded {config}")
	}
	abs(&c.Audit)
	if c.Metrics != "" {
		host, _, err := net.SplitHostPort(c.Metrics)
		ip := net.ParseIP(host)
		if err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			return nil, doc.Errorf("metrics", "%q must be a loopback host:port", c.Metrics)
		}
	}
	return &c, nil
}
