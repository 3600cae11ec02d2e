package audit

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends e as one JSON object, exactly as encoding/json would marshal it (same field
// order, same omissions, same escaping), without reflection.
func (e *Event) AppendJSON(b []byte) []byte {
	b = append(b, `{"time":`...)
	b = appendTime(b, e.Time)
	b = appendField(b, "service", e.Service, false)
	b = appendField(b, "node", e.Node, true)
	if e.CallerUID != nil {
		b = append(b, `,"caller_uid":`...)
		b = strconv.AppendUint(b, uint64(*e.CallerUID), 10)
	}
	if e.CallerGID != nil {
		b = append(b, `,"caller_gid":`...)
		b = strconv.AppendUint(b, uint64(*e.CallerGID), 10)
	}
	if e.CallerPID != 0 {
		b = append(b, `,"caller_pid":`...)
		b = strconv.AppendInt(b, int64(e.CallerPID), 10)
	}
	b = appendField(b, "caller_exe", e.CallerExe, true)
	b = appendField(b, "principal", e.Principal, true)
	b = appendField(b, "on_behalf_of", e.OnBehalfOf, true)
	b = appendField(b, "scope", e.Scope, true)
	if e.Version != 0 {
		b = append(b, `,"version":`...)
		b = strconv.AppendUint(b, uint64(e.Version), 10)
	}
	b = appendField(b, "op", e.Op, false)
	b = appendField(b, "decision", e.Decision, false)
	b = appendField(b, "reason", e.Reason, true)
	b = appendField(b, "upstream", e.Upstream, true)
	if e.DurationUS != 0 {
		b = append(b, `,"duration_us":`...)
		b = strconv.AppendInt(b, e.DurationUS, 10)
	}
	return append(b, '}')
}

func appendField(b []byte, name, v string, omitEmpty bool) []byte {
	if omitEmpty && v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, v)
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hex = "0123456789abcdef"

// appendString quotes s as encoding/json does with HTML escaping on (its default for Marshal).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
