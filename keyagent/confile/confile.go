// Package confile decodes Keyward's YAML configuration files strictly.
//
// Every daemon's Load goes through Decode: an unknown key, a wrong type or a missing `version:` is an
// error that names the file, the line and the key, never a silent default. After decoding, the returned
// Doc maps dotted key paths ("upstream.tls.cert") back to lines so a validation error found later can
// point at the line too (Doc.Errorf).
//
// It does not read secrets: configs name secrets by file path or PKCS#11 URI, never inline, and the
// caller reads those files itself.
package confile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is a configuration problem at a place in a file.
type Error struct {
	File string
	Line int    // 0 when unknown
	Key  string // dotted path, "" when unknown
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		fmt.Fprintf(&b, "key %q: ", e.Key)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Doc is a decoded file: its name and where each key stands.
type Doc struct {
	File  string
	lines map[string]int
}

// Decode reads path and decodes it into dst (a pointer to a struct with yaml tags), rejecting unknown
// keys and type mismatches, and checks that `version:` equals wantVersion.
func Decode(path string, dst any, wantVersion int) (*Doc, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return DecodeBytes(path, data, dst, wantVersion)
}

// DecodeBytes is Decode on data already read; name is used in errors.
func DecodeBytes(name string, data []byte, dst any, wantVersion int) (*Doc, error) {
	doc := &Doc{File: name, lines: map[string]int{}}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, doc.yamlError(err)
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, &Error{File: name, Msg: "empty file"}
	}
	top := root.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, &Error{File: name, Line: top.Line, Msg: "top level must be a mapping of keys"}
	}
	doc.index(top, "")
	if err := doc.checkVersion(top, wantVersion); err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil {
		return nil, doc.yamlError(err)
	}
	return doc, nil
}

func (d *Doc) checkVersion(top *yaml.Node, want int) error {
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "version" {
			v := top.Content[i+1]
			n, err := strconv.Atoi(v.Value)
			if err != nil || n != want {
				return &Error{File: d.File, Line: v.Line, Key: "version",
					Msg: fmt.Sprintf("unsupported version %q (this build reads version %d)", v.Value, want)}
			}
			return nil
		}
	}
	return &Error{File: d.File, Line: top.Line, Key: "version", Msg: fmt.Sprintf("missing (add `version: %d`)", want)}
}

func (d *Doc) index(n *yaml.Node, prefix string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if prefix != "" {
				k = prefix + "." + k
			}
			d.lines[k] = n.Content[i].Line
			d.index(n.Content[i+1], k)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			k := fmt.Sprintf("%s[%d]", prefix, i)
			d.lines[k] = c.Line
			d.index(c, k)
		}
	}
}

// Line returns the line of a dotted key path ("columns[1].mode"), 0 if absent.
func (d *Doc) Line(key string) int {
	if d == nil {
		return 0
	}
	return d.lines[key]
}

// Errorf builds an *Error for key, at its line.
func (d *Doc) Errorf(key, format string, args ...any) error {
	return &Error{File: d.File, Line: d.Line(key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

var (
	reLine    = regexp.MustCompile(`line (\d+): (.*)`)
	reUnknown = regexp.MustCompile(`field (\S+) not found in type`)
)

// yamlError turns yaml.v3's messages into ours: one Error per problem, joined.
func (d *Doc) yamlError(err error) error {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	var out []error
	for _, m := range msgs {
		m = strings.TrimPrefix(m, "yaml: ")
		e := &Error{File: d.File, Msg: m}
		if g := reLine.FindStringSubmatch(m); g != nil {
			e.Line, _ = strconv.Atoi(g[1])
			e.Msg = g[2]
		}
		if g := reUnknown.FindStringSubmatch(e.Msg); g != nil {
			e.Key = d.keyAt(e.Line, g[1])
			e.Msg = "unknown key"
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// keyAt finds the dotted path of the key named leaf on line.
func (d *Doc) keyAt(line int, leaf string) string {
	for k, l := range d.lines {
		if l == line && (k == leaf || strings.HasSuffix(k, "."+leaf)) {
			return k
		}
	}
	return leaf
}

// ReadSecretFile reads a secret named by path in a config (a PIN, a passphrase), refusing files that
// others can read, and trims one trailing newline. The caller moves the result into memsafe at once.
func ReadSecretFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secret file %s: mode %04o lets others read it (chmod 600)", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	if n := len(data); n > 0 && data[n-1] == '\n' {
		data = data[:n-1]
		if n := len(data); n > 0 && data[n-1] == '\r' {
			data = data[:n-1]
		}
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("secret file %s: empty", path)
	}
	return data, nil
}
