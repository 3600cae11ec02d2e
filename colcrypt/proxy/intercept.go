package proxy

import (
	"context"
	"net"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Interceptor is the extension point of the column-encryption layer (issue 6). It is owned by its
// consumer and kept small: one call per session, after PostgreSQL has authenticated the client.
//
// Open returns the session's Hooks, or nil to leave the session on the raw fast path (no decoding, no
// bookkeeping). An error ends the session before its first query: if it is (or wraps) a *Refusal the
// client gets that ErrorResponse, otherwise a generic FATAL error (the details go to the log only).
type Interceptor interface {
	Open(ctx context.Context, s *Session) (Hooks, error)
}

// Hooks see and may rewrite the messages of one session. The core calls them serialized (never two at
// once for one session) with the session lock held, so they may read Statement, Portal and Request
// fields freely, and must not block for long: a slow hook stalls both directions of its session (not
// other sessions). They may run side queries on a connection of their own (pgx to the upstream with
// credentials of the column layer); the core holds no global lock that would prevent it.
//
// Frontend is called for each client message of type Query 'Q', Parse 'P', Bind 'B', Describe 'D',
// Execute 'E', Close 'C', Sync 'S', FunctionCall 'F', CopyData 'd', CopyDone 'c' and CopyFail 'f'
// (Flush and Terminate are forwarded without a call). Backend is called for every server message after
// the session started (RowDescription, DataRow, ParameterDescription, CopyOutResponse, CopyData,
// CommandComplete, ErrorResponse, NoticeResponse, ...). Close is called once when the session ends.
// The message values passed to Frontend and Backend (and their Raw bytes) are valid only during the
// call; Statement, Portal and Request values live as long as the core tracks them.
type Hooks interface {
	Frontend(m *FrontendMessage) Verdict
	Backend(m *BackendMessage) Verdict
	Close()
}

// Verdict is what a hook decided about one message. The zero Verdict is Pass.
type Verdict struct {
	kind    verdictKind
	raw     []byte
	refusal *pgproto3.ErrorResponse
}

type verdictKind uint8

const (
	verdictPass verdictKind = iota
	verdictReplace
	verdictRefuse
)

// Pass forwards the message as the bytes it arrived as.
func Pass() Verdict { return Verdict{} }

// Replace forwards raw (complete encoded messages, for example from pgproto3's Encode) instead of the
// message. A client message must be replaced by messages that draw the same responses (a Parse by one
// Parse, a Query by one Query, a CopyData by any number of CopyData); a server message by messages the
// client expects in its place (a DataRow by one DataRow, a RowDescription by one RowDescription).
// raw is not retained after the call returns.
func Replace(raw []byte) Verdict { return Verdict{kind: verdictReplace, raw: raw} }

// Refuse answers the client with e (Severity "ERROR" is filled in when empty) and keeps the session
// usable, exactly as PostgreSQL treats a failing statement:
//
//   - a refused Query or FunctionCall: the client gets e then ReadyForQuery; an open transaction block
//     is marked failed, as PostgreSQL would.
//   - a refused Parse, Bind, Describe, Execute or Close: the client gets e in pipeline order (after the
//     responses to the messages it sent before), the messages up to its next Sync are discarded, and the
//     Sync gets ReadyForQuery; the implicit transaction is rolled back.
//   - a refused CopyData, CopyDone or CopyFail: the COPY fails (nothing of it is committed), the rest of
//     the client's copy stream is discarded, and the client gets e then ReadyForQuery.
//
// This is done by sending PostgreSQL, instead of the refused message, a harmless message that fails
// (a Describe of a statement that does not exist, a syntax error, a CopyFail) and replacing the error
// it answers with e: PostgreSQL itself keeps the transaction state right. Sync cannot be refused.
//
// A refused server message (say, a value that fails to decrypt) sends e to the client in its place and
// discards the server's messages up to the next ReadyForQuery. Non-guarantee: statements the client had
// already pipelined after it still run on the server (the client is told nothing about them).
func Refuse(e *pgproto3.ErrorResponse) Verdict { return Verdict{kind: verdictRefuse, refusal: e} }

// Refusal is an error that carries the ErrorResponse a client should get; return it from Open.
type Refusal struct{ Response *pgproto3.ErrorResponse }

func (r *Refusal) Error() string { return r.Response.Severity + ": " + r.Response.Message }

// FrontendMessage is one client message, with the context the core knows about it.
type FrontendMessage struct {
	Type byte
	// Raw is the message as it arrived (type, length, body); valid only during the call.
	Raw []byte
	// Msg is the message decoded with pgproto3 (nil for CopyData, CopyDone, Sync); its byte slices
	// alias Raw.
	Msg pgproto3.FrontendMessage
	// Statement is the statement a Parse creates, or the one a Bind, Describe 'S' or Close 'S' names
	// (nil if unknown to the proxy).
	Statement *Statement
	// Portal is the portal a Bind creates, or the one a Describe 'P', Execute or Close 'P' names.
	Portal *Portal
	// Copy is, for CopyData/CopyDone/CopyFail, the request (Query or Execute) whose COPY FROM STDIN
	// they feed.
	Copy *Request
}

// Body returns the message body (without type and length).
func (m *FrontendMessage) Body() []byte { return m.Raw[5:] }

// BackendMessage is one server message, with the request it answers.
type BackendMessage struct {
	Type byte
	// Raw is the message as it arrived; valid only during the call.
	Raw []byte
	// Request is the client request this message answers; nil for asynchronous messages
	// (ParameterStatus, NoticeResponse and NotificationResponse outside a request, FATAL errors).
	Request *Request
}

// Body returns the message body (without type and length).
func (m *BackendMessage) Body() []byte { return m.Raw[5:] }

// Request is one client message awaiting responses, in the order PostgreSQL answers them.
type Request struct {
	// Kind is the client message type: 'Q', 'P', 'B', 'D', 'E', 'C', 'S' or 'F'.
	Kind byte
	// SQL is the query text of a Query, or of the statement behind a Parse, Describe or Execute.
	SQL string
	// DescribeKind is 'S' or 'P' for a Describe, 'S' or 'P' for a Close.
	DescribeKind byte
	Statement    *Statement
	Portal       *Portal
	// Fields describes the rows being returned now: for a Query, the latest RowDescription (a
	// multi-statement Query has several results); for an Execute, the portal's or statement's
	// description; nil when there is none (yet).
	Fields *pgproto3.RowDescription
	// Data is free for the hooks (per-request analysis results, say).
	Data any

	internal bool                    // injected by the core; its responses are not sent to the client
	refusal  *pgproto3.ErrorResponse // replaces the error PostgreSQL answers to the probe
	gen      uint64                  // sync generation (portals are dropped at transaction end)
	prev     any                     // registry entry to restore if the message is skipped
}

// Format returns the format code (0 text, 1 binary) of result column i of the current result.
func (r *Request) Format(i int) int16 {
	if r.Kind == 'E' && r.Portal != nil {
		return FormatAt(r.Portal.ResultFormats, i)
	}
	if r.Fields != nil && i < len(r.Fields.Fields) {
		return r.Fields.Fields[i].Format
	}
	return 0
}

// FormatAt applies the protocol's rule for a list of format codes (Bind's parameter and result
// formats) to column or parameter i: no codes mean text, one code applies to all.
func FormatAt(codes []int16, i int) int16 {
	switch len(codes) {
	case 0:
		return 0
	case 1:
		return codes[0]
	}
	if i < len(codes) {
		return codes[i]
	}
	return 0
}

// Statement is a prepared statement of the session (unnamed: Name "").
type Statement struct {
	Name      string
	SQL       string
	ParamOIDs []uint32 // as the client declared them in Parse (0 = unspecified)
	// Params and Fields are filled from the server's answer to a Describe of the statement. In a
	// pipeline (Parse, Describe, Bind, Execute sent together) that answer has not arrived when the
	// frontend hook sees the Bind: the backend hook sees them in order, before the Execute's rows.
	Params *pgproto3.ParameterDescription
	Fields *pgproto3.RowDescription // nil: not described yet or NoData
	// Data is free for the hooks (the statement's analysis, say).
	Data any

	described bool // the client (or the core) asked for a description
}

// Portal is a bound portal of the session (unnamed: Name "").
type Portal struct {
	Name          string
	Statement     *Statement
	ParamFormats  []int16
	ResultFormats []int16 // as in Bind: none = all text, one = all, else per column
	Fields        *pgproto3.RowDescription
	Data          any

	described bool
	gen       uint64
}

// ParamFormat returns the format code of parameter i as the client bound it.
func (p *Portal) ParamFormat(i int) int16 { return FormatAt(p.ParamFormats, i) }

// Session is what an interceptor learns about a client session. Role and Database are the values of
// the StartupMessage, which PostgreSQL has authenticated by the time Open is called.
type Session struct {
	ID         uint64
	Role       string
	Database   string
	ClientAddr net.Addr
	ClientTLS  bool
	// Startup holds the StartupMessage parameters (application_name, options, ...).
	Startup map[string]string
	// BackendPID is the real server process id (not the one the client was given).
	BackendPID uint32

	params map[string]string
}

// Param returns a server parameter as last reported by ParameterStatus (client_encoding, DateStyle,
// IntervalStyle, integer_datetimes, server_version, ...). Call it from a hook or from Open.
func (s *Session) Param(name string) string { return s.params[name] }
