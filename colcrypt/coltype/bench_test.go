package coltype

import (
	"strings"
	"testing"
	"time"
)

func benchCanonical(b *testing.B, t Type, format int16, in string, s *Session) {
	src := []byte(in)
	dst := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := AppendCanonical(dst, t, format, src, s); err != nil {
			b.Fatal(err)
		}
	}
}

func benchRender(b *testing.B, t Type, format int16, in string, s *Session) {
	canon, err := Canonical(t, TextFormat, []byte(in), s)
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := AppendRender(dst, t, format, canon, s); err != nil {
			b.Fatal(err)
		}
	}
}

func nySession(b *testing.B) *Session {
	loc, err := time.LoadLocation("America/New_York")
	if err != nil {
		b.Fatal(err)
	}
	return &Session{TimeZone: loc}
}

var text100 = strings.Repeat("x", 100)

func BenchmarkCanonicalText100B(b *testing.B) { benchCanonical(b, Text, TextFormat, text100, nil) }
func BenchmarkRenderText100B(b *testing.B)    { benchRender(b, Text, TextFormat, text100, nil) }
func BenchmarkCanonicalInt8Text(b *testing.B) {
	benchCanonical(b, Int8, TextFormat, " -1234567890", nil)
}
func BenchmarkCanonicalNumericText(b *testing.B) {
	benchCanonical(b, Numeric, TextFormat, "-123456789.123400", nil)
}
func BenchmarkRenderNumericText(b *testing.B) {
	benchRender(b, Numeric, TextFormat, "-123456789.1234", nil)
}
func BenchmarkCanonicalTimestamptzText(b *testing.B) {
	benchCanonical(b, Timestamptz, TextFormat, "2024-01-02 03:04:05.123456", nySession(b))
}
func BenchmarkRenderTimestamptzText(b *testing.B) {
	benchRender(b, Timestamptz, TextFormat, "2024-01-02 03:04:05.123456+00", nySession(b))
}
func BenchmarkCanonicalJSONB(b *testing.B) {
	benchCanonical(b, JSONB, TextFormat, `{"name": "x", "tags": ["a", "b"], "n": 1.5, "nested": {"k": true}}`, nil)
}
