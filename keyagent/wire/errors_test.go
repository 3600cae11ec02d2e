package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func sprint(format string, args ...any) string { return fmt.Sprintf(format, args...) }

func TestErrSentinels(t *testing.T) {
	tests := []struct {
		code Code
		want error
	}{
		{CodeDenied, ErrDenied},
		{CodeNotFound, ErrNotFound},
		{CodeUnavailable, ErrUnavailable},
		{CodeBadRequest, ErrBadRequest},
		{CodeInternal, ErrInternal},
	}
	all := []error{ErrDenied, ErrNotFound, ErrUnavailable, ErrBadRequest, ErrInternal}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			err := (&ErrorResponse{Code: tt.code, Message: "why"}).Err()
			for _, s := range all {
				if got := errors.Is(err, s); got != (s == tt.want) {
					t.Errorf("errors.Is(%v, %v) = %v", err, s, got)
				}
			}
			if !strings.Contains(err.Error(), "why") {
				t.Errorf("Error() = %q lacks the message", err.Error())
			}
			wrapped := fmt.Errorf("get key: %w", err)
			if !errors.Is(wrapped, tt.want) {
				t.Errorf("wrapped error lost its sentinel")
			}
		})
	}
}

type codedErr struct{}

func (codedErr) Error() string  { return "coded" }
func (codedErr) WireCode() Code { return CodeNotFound }

func TestErrorFrom(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode Code
		wantMsg  string
	}{
		{"denied", fmt.Errorf("%w: principal x may not act for db:eve", ErrDenied), CodeDenied, "principal x may not act for db:eve"},
		{"not found", fmt.Errorf("keyring nope: %w", ErrNotFound), CodeNotFound, "keyring nope: not found"},
		{"unavailable", ErrUnavailable, CodeUnavailable, ""},
		{"bad request", ErrBadRequest, CodeBadRequest, ""},
		{"deadline", fmt.Errorf("upstream: %w", context.DeadlineExceeded), CodeUnavailable, "upstream: context deadline exceeded"},
		{"canceled", context.Canceled, CodeUnavailable, "context canceled"},
		{"parse error", &ParseError{Type: TypeKeyRequest, Err: ErrTruncated}, CodeBadRequest, "wire: KeyRequest: body byte 0: truncated"},
		{"other", errors.New("open /secret/path: permission denied"), CodeInternal, "internal error"},
		{"relayed remote", fmt.Errorf("keyservice ks1: %w", &RemoteError{Code: CodeDenied, Message: "node not granted"}), CodeDenied, "node not granted"},
		{"coder", fmt.Errorf("x: %w", codedErr{}), CodeNotFound, "x: coded"},
		{"invalid utf8", fmt.Errorf("%w: \xff", ErrBadRequest), CodeBadRequest, "\uFFFD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ErrorFrom(tt.err)
			if got.Code != tt.wantCode || got.Message != tt.wantMsg {
				t.Fatalf("ErrorFrom = {%s %q}, want {%s %q}", got.Code, got.Message, tt.wantCode, tt.wantMsg)
			}
			if _, err := got.Encode(nil); err != nil {
				t.Fatalf("the response does not encode: %v", err)
			}
		})
	}
	if ErrorFrom(nil) != nil {
		t.Fatal("ErrorFrom(nil) != nil")
	}
	long := ErrorFrom(fmt.Errorf("%w: %s", ErrDenied, strings.Repeat("é", MaxStringLen)))
	if len(long.Message) > MaxStringLen {
		t.Fatalf("message of %d bytes", len(long.Message))
	}
	if _, err := long.Encode(nil); err != nil {
		t.Fatalf("clipped message does not encode: %v", err)
	}
}

func TestParseErrorText(t *testing.T) {
	_, err := NewReader(strings.NewReader("\x00\x00\x00\x02\x42\x01"), Options{}).Next()
	if err == nil || !strings.Contains(err.Error(), "Type(0x42)") || !strings.Contains(err.Error(), "unknown frame type") {
		t.Fatalf("error text %v", err)
	}
	if !errors.Is(err, ErrUnknownType) {
		t.Fatal("not ErrUnknownType")
	}
	if errors.Is(err, io.EOF) {
		t.Fatal("is io.EOF")
	}
}
