package confile_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/keyagent/confile"
)

type cfg struct {
	Version  int    `yaml:"version"`
	Listen   string `yaml:"listen"`
	Upstream struct {
		Host string `yaml:"host"`
		Port int    `yaml:"port"`
		TLS  struct {
			Cert string `yaml:"cert"`
		} `yaml:"tls"`
	} `yaml:"upstream"`
	Columns []struct {
		Table string `yaml:"table"`
		Mode  string `yaml:"mode"`
	} `yaml:"columns"`
}

func TestDecode(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string // substrings of the error; empty = success
	}{
		{"ok", "version: 1\nlisten: 127.0.0.1:1\nupstream:\n  host: h\n  port: 5\ncolumns:\n  - {table: t, mode: x}\n", nil},
		{"unknown top key", "version: 1\nlistn: x\n", []string{"c.yaml:2", `key "listn"`, "unknown key"}},
		{"unknown nested key", "version: 1\nupstream:\n  host: h\n  tls:\n    certt: x\n", []string{"c.yaml:5", `key "upstream.tls.certt"`}},
		{"unknown key in list", "version: 1\ncolumns:\n  - table: t\n    mod: x\n", []string{"c.yaml:4", "columns[0].mod"}},
		{"wrong type", "version: 1\nupstream:\n  port: many\n", []string{"c.yaml:3", "cannot unmarshal"}},
		{"missing version", "listen: x\n", []string{`key "version"`, "missing"}},
		{"future version", "version: 2\n", []string{"c.yaml:1", "unsupported version"}},
		{"empty", "", []string{"empty file"}},
		{"not a mapping", "- a\n- b\n", []string{"top level must be a mapping"}},
		{"syntax", "version: 1\nlisten: [\n", []string{"c.yaml"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var v cfg
			doc, err := confile.DecodeBytes("c.yaml", []byte(c.yaml), &v, 1)
			if len(c.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if v.Upstream.Port != 5 || v.Columns[0].Mode != "x" || doc.Line("columns[0].mode") != 7 {
					t.Fatalf("decoded %+v line=%d", v, doc.Line("columns[0].mode"))
				}
				if e := doc.Errorf("upstream.port", "bad"); e.Error() != `c.yaml:5: key "upstream.port": bad` {
					t.Fatalf("Errorf: %v", e)
				}
				return
			}
			if err == nil {
				t.Fatal("want error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "pin")
	os.WriteFile(good, []byte("1234\n"), 0o600)
	open := filepath.Join(dir, "open")
	os.WriteFile(open, []byte("1234\n"), 0o644)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	if b, err := confile.ReadSecretFile(good); err != nil || string(b) != "1234" {
		t.Fatalf("good: %d bytes, %v", len(b), err) // the secret itself stays out of the output
	}
	for name, p := range map[string]string{"world-readable": open, "empty": empty, "missing": filepath.Join(dir, "x")} {
		if _, err := confile.ReadSecretFile(p); err == nil {
			t.Errorf("%s: want error", name)
		}
	}
}
