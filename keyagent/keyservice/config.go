package keyservice

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/keyward/keyward/keyagent/confile"
)

// Config is the key service's configuration file (version 1). Build it only with Load.
type Config struct {
	Version int           `yaml:"version"`
	Backend BackendConfig `yaml:"backend"`
	Listen  string        `yaml:"listen"`
	TLS     TLSConfig     `yaml:"tls"`
	Grants  string        `yaml:"grants"`
	Audit   string        `yaml:"audit"`   // JSON-lines file; "" or "-": standard output
	Metrics string        `yaml:"metrics"` // loopback host:port for Prometheus; "": off

	File string `yaml:"-"` // where it was loaded from
}

// BackendConfig selects exactly one backend.
type BackendConfig struct {
	PKCS11 *PKCS11Config `yaml:"pkcs11"`
	Soft   *SoftConfig   `yaml:"soft"`
}

// PKCS11Config names an HSM token. The PIN is read from PinFile, never written inline.
type PKCS11Config struct {
	Module     string `yaml:"module"`
	TokenLabel string `yaml:"token_label"`
	PinFile    string `yaml:"pin_file"`
	Sessions   int    `yaml:"sessions"` // session pool size; 0: default
}

// SoftConfig is the software store: a sealed file and the passphrase that opens it.
type SoftConfig struct {
	Path           string `yaml:"path"`
	PassphraseFile string `yaml:"passphrase_file"`
}

// TLSConfig is the server's certificate and the CA that signs node (client) certificates.
type TLSConfig struct {
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	ClientCA string `yaml:"client_ca"`
}

// Load reads and validates a key service config. Relative paths are relative to the config file.
// needServer says whether the listener part (listen, tls, grants) is required: the operator
// subcommands need only the backend.
func Load(path string, needServer bool) (*Config, error) {
	var c Config
	doc, err := confile.Decode(path, &c, 1)
	if err != nil {
		return nil, err
	}
	c.File = path
	base := filepath.Dir(path)
	abs := func(p *string) {
		if *p != "" && *p != "-" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	b := &c.Backend
	switch {
	case b.PKCS11 != nil && b.Soft != nil:
		return nil, doc.Errorf("backend", "give either pkcs11 or soft, not both")
	case b.PKCS11 != nil:
		p := b.PKCS11
		if p.Module == "" {
			return nil, doc.Errorf("backend.pkcs11.module", "required (path of the PKCS#11 module)")
		}
		if p.TokenLabel == "" {
			return nil, doc.Errorf("backend.pkcs11.token_label", "required")
		}
		if p.PinFile == "" {
			return nil, doc.Errorf("backend.pkcs11.pin_file", "required (the PIN is read from a file, never inline)")
		}
		if p.Sessions < 0 || p.Sessions > 256 {
			return nil, doc.Errorf("backend.pkcs11.sessions", "must be 0..256")
		}
		abs(&p.PinFile)
	case b.Soft != nil:
		if b.Soft.Path == "" {
			return nil, doc.Errorf("backend.soft.path", "required")
		}
		if b.Soft.PassphraseFile == "" {
			return nil, doc.Errorf("backend.soft.passphrase_file", "required")
		}
		abs(&b.Soft.Path)
		abs(&b.Soft.PassphraseFile)
	default:
		return nil, doc.Errorf("backend", "required: pkcs11 {module, token_label, pin_file} or soft {path, passphrase_file}")
	}
	abs(&c.TLS.Cert)
	abs(&c.TLS.Key)
	abs(&c.TLS.ClientCA)
	abs(&c.Grants)
	abs(&c.Audit)
	if c.Metrics != "" {
		if err := checkLoopback(c.Metrics); err != nil {
			return nil, doc.Errorf("metrics", "%v", err)
		}
	}
	if !needServer {
		return &c, nil
	}
	if c.Listen == "" {
		return nil, doc.Errorf("listen", "required (host:port)")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return nil, doc.Errorf("listen", "%v", err)
	}
	for key, p := range map[string]string{"tls.cert": c.TLS.Cert, "tls.key": c.TLS.Key, "tls.client_ca": c.TLS.ClientCA, "grants": c.Grants} {
		if p == "" {
			return nil, doc.Errorf(key, "required")
		}
		if _, err := os.Stat(p); err != nil {
			return nil, doc.Errorf(key, "%v", err)
		}
	}
	return &c, nil
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address (metrics are served on loopback only)", addr)
	}
	return nil
}
