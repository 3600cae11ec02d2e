package proxy

import (
	"bytes"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/keyward/keyward/colcrypt/pgwire"
)

// tracker is the bookkeeping of a session with Hooks: the FIFO of requests awaiting responses and the
// registry of statements and portals. The registry is updated optimistically when the client's message
// is forwarded (a pipelined Bind must find the statement its Parse created, long before ParseComplete)
// and rolled back when PostgreSQL reports the message failed or skipped it.
//
// The frontend pump owns skipSync/skipCopy and gen; everything else is guarded by mu.
type tracker struct {
	ss    *session
	hooks Hooks
	probe []byte // Describe of a statement that does not exist: makes PostgreSQL fail on purpose

	mu      sync.Mutex
	queue   []*Request
	stmts   map[string]*Statement
	portals map[string]*Portal
	copyReq *Request // the request whose COPY (in or out) the server is in
	// lastExec is the latest Query or Execute sent: CopyData from the client can only feed it. (Clients
	// such as pgx send CopyData right behind the Query, before CopyInResponse comes back.)
	lastExec *Request
	discard  bool   // a server message was refused: drop server messages until ReadyForQuery
	rgen     uint64 // ReadyForQuery count (backend side)

	gen      uint64 // sync points sent (frontend side)
	skipSync bool   // an extended-protocol message was refused: drop client messages until Sync
	skipCopy bool   // a CopyData was refused: drop the rest of the client's copy stream
	once     sync.Once
	bm       BackendMessage // reused for every server message (see backend)
}

func newTracker(ss *session, hooks Hooks) *tracker {
	probe, _ := (&pgproto3.Describe{ObjectType: 'S', Name: ss.srv.probe}).Encode(nil)
	return &tracker{ss: ss, hooks: hooks, probe: probe,
		stmts: map[string]*Statement{}, portals: map[string]*Portal{}}
}

func (t *tracker) close() { t.once.Do(t.hooks.Close) }

// probeQuery fails with a syntax error: no side effect, and PostgreSQL's own handling of the failed
// statement keeps the transaction state right (an open block becomes failed). The comment names the
// culprit in the server log.
var probeQuery = mustEncode(&pgproto3.Query{String: "/* colcrypt: statement refused by the proxy */ colcrypt_refused"})

var copyFailMsg = mustEncode(&pgproto3.CopyFail{Message: "refused by colcrypt"})

func mustEncode(m interface{ Encode([]byte) ([]byte, error) }) []byte {
	b, err := m.Encode(nil)
	if err != nil {
		panic(err)
	}
	return b
}

func malformed(msg pgwire.Message, err error) error {
	return &pgwire.ParseError{Type: msg.Type, Length: int64(len(msg.Raw) - 1), Err: err}
}

// frontend handles one client message (frontend pump).
func (t *tracker) frontend(msg pgwire.Message) error {
	w := t.ss.sw
	switch msg.Type {
	case 'H':
		w.Write(msg.Raw)
		return nil
	case 'Q', 'P', 'B', 'D', 'E', 'C', 'S', 'F', 'd', 'c', 'f':
	default:
		// Not a message a client may send now: PostgreSQL answers it with its own FATAL error.
		w.Write(msg.Raw)
		return nil
	}
	if t.skipSync {
		if msg.Type != 'S' {
			return nil // PostgreSQL would skip it too
		}
		t.skipSync = false
	}
	if t.skipCopy {
		switch msg.Type {
		case 'd':
			return nil
		case 'c', 'f':
			t.skipCopy = false
			return nil
		}
		t.skipCopy = false
	}

	fm := FrontendMessage{Type: msg.Type, Raw: msg.Raw}
	req := &Request{Kind: msg.Type}
	body := msg.Body()
	t.mu.Lock()
	switch msg.Type {
	case 'Q':
		var q pgproto3.Query
		if err := q.Decode(body); err != nil {
			t.mu.Unlock()
			return malformed(msg, err)
		}
		fm.Msg, req.SQL = &q, q.String
	case 'P':
		var p pgproto3.Parse
		if err := p.Decode(body); err != nil {
			t.mu.Unlock()
			return malformed(msg, err)
		}
		st := &Statement{Name: p.Name, SQL: p.Query, ParamOIDs: p.ParameterOIDs}
		fm.Msg, fm.Statement, req.Statement, req.SQL = &p, st, st, p.Query
	case 'B':
		var b pgproto3.Bind
		if err := b.Decode(body); err != nil {
			t.mu.Unlock()
			return malformed(msg, err)
		}
		st := t.stmts[b.PreparedStatement]
		po := &Portal{Name: b.DestinationPortal, Statement: st, ParamFormats: b.ParameterFormatCodes,
			ResultFormats: b.ResultFormatCodes, gen: t.gen}
		fm.Msg, fm.Statement, fm.Portal, req.Statement, req.Portal = &b, st, po, st, po
		if st != nil {
			req.SQL = st.SQL
		}
	case 'D', 'C':
		var kind byte
		var name string
		if msg.Type == 'D' {
			var d pgproto3.Describe
			if err := d.Decode(body); err != nil {
				t.mu.Unlock()
				return malformed(msg, err)
			}
			fm.Msg, kind, name = &d, d.ObjectType, d.Name
		} else {
			var c pgproto3.Close
			if err := c.Decode(body); err != nil {
				t.mu.Unlock()
				return malformed(msg, err)
			}
			fm.Msg, kind, name = &c, c.ObjectType, c.Name
		}
		req.DescribeKind = kind
		if kind == 'S' {
			fm.Statement = t.stmts[name]
		} else {
			fm.Portal = t.portals[name]
			if fm.Portal != nil {
				fm.Statement = fm.Portal.Statement
			}
		}
		req.Statement, req.Portal = fm.Statement, fm.Portal
		if fm.Statement != nil {
			req.SQL = fm.Statement.SQL
		}
	case 'E':
		var e pgproto3.Execute
		if err := e.Decode(body); err != nil {
			t.mu.Unlock()
			return malformed(msg, err)
		}
		fm.Msg = &e
		if po := t.portals[e.Portal]; po != nil {
			fm.Portal, fm.Statement = po, po.Statement
			req.Portal, req.Statement = po, po.Statement
			if po.Statement != nil {
				req.SQL = po.Statement.SQL
			}
		}
	case 'F':
		var f pgproto3.FunctionCall
		if err := f.Decode(body); err != nil {
			t.mu.Unlock()
			return malformed(msg, err)
		}
		fm.Msg = &f
	case 'd', 'c', 'f':
		fm.Copy = t.lastExec
		if msg.Type == 'f' {
			var f pgproto3.CopyFail
			if err := f.Decode(body); err != nil {
				t.mu.Unlock()
				return malformed(msg, err)
			}
			fm.Msg = &f
		}
	}

	v := t.hooks.Frontend(&fm)
	out := msg.Raw
	switch v.kind {
	case verdictReplace:
		out = v.raw
	case verdictRefuse:
		if msg.Type != 'S' {
			t.ss.srv.metrics.errors.WithLabelValues("refused").Inc()
			e := v.refusal
			switch msg.Type {
			case 'Q', 'F':
				req = &Request{Kind: msg.Type, SQL: req.SQL, refusal: e, gen: t.gen}
				t.push(req)
				t.gen++
				t.mu.Unlock()
				w.Write(probeQuery)
				return nil
			case 'd', 'c', 'f':
				if t.lastExec != nil {
					t.lastExec.refusal = e
					t.skipCopy = msg.Type == 'd'
					t.mu.Unlock()
					w.Write(copyFailMsg)
					return nil
				}
				t.mu.Unlock()
				return nil // not in COPY: PostgreSQL would ignore it
			default:
				t.push(&Request{Kind: 'D', DescribeKind: 'S', refusal: e})
				t.skipSync = true
				t.mu.Unlock()
				w.Write(t.probe)
				return nil
			}
		}
	}

	// The message goes to the server: update the registry as PostgreSQL will if it succeeds.
	var extra []byte
	switch msg.Type {
	case 'P':
		st := req.Statement
		if old, ok := t.stmts[st.Name]; !ok || st.Name == "" {
			req.prev = old
			t.stmts[st.Name] = st
		}
	case 'B':
		po := req.Portal
		if old, ok := t.portals[po.Name]; !ok || po.Name == "" {
			req.prev = old
			t.portals[po.Name] = po
		}
	case 'D':
		if req.DescribeKind == 'S' && req.Statement != nil {
			req.Statement.described = true
		} else if req.Portal != nil {
			req.Portal.described = true
		}
	case 'C':
		if req.DescribeKind == 'S' && req.Statement != nil {
			delete(t.stmts, req.Statement.Name)
			req.prev = req.Statement
		} else if req.Portal != nil {
			delete(t.portals, req.Portal.Name)
			req.prev = req.Portal
		}
	case 'Q':
		// A simple Query drops the unnamed statement and portal.
		delete(t.stmts, "")
		delete(t.portals, "")
	case 'E':
		// The hooks need a row description to read DataRows. If the client described neither the
		// portal nor its statement, ask PostgreSQL ourselves and keep the answer from the client.
		if po := req.Portal; po != nil && !po.described && (po.Statement == nil || !po.Statement.described) {
			po.described = true
			t.push(&Request{Kind: 'D', DescribeKind: 'P', Portal: po, Statement: po.Statement, internal: true})
			extra, _ = (&pgproto3.Describe{ObjectType: 'P', Name: po.Name}).Encode(nil)
		}
	}
	if msg.Type != 'd' && msg.Type != 'c' && msg.Type != 'f' {
		req.gen = t.gen
		t.push(req)
		if msg.Type == 'Q' || msg.Type == 'E' {
			t.lastExec = req
		}
		if msg.Type == 'S' || msg.Type == 'Q' || msg.Type == 'F' {
			t.gen++
		}
	}
	t.mu.Unlock()
	if extra != nil {
		w.Write(extra)
	}
	w.Write(out)
	return nil
}

func (t *tracker) push(r *Request) { t.queue = append(t.queue, r) }

func (t *tracker) head() *Request {
	if len(t.queue) == 0 {
		return nil
	}
	return t.queue[0]
}

func (t *tracker) pop() {
	t.queue[0] = nil
	t.queue = t.queue[1:]
	if len(t.queue) == 0 {
		t.queue = t.queue[:0:0] // let the backing array go; a fresh one is cheap
	}
}

// undo rolls back the registry change of a request PostgreSQL failed or skipped.
func (t *tracker) undo(r *Request) {
	switch r.Kind {
	case 'P':
		if r.Statement != nil && t.stmts[r.Statement.Name] == r.Statement {
			if old, ok := r.prev.(*Statement); ok && old != nil {
				t.stmts[old.Name] = old
			} else {
				delete(t.stmts, r.Statement.Name)
			}
		}
	case 'B':
		if r.Portal != nil && t.portals[r.Portal.Name] == r.Portal {
			if old, ok := r.prev.(*Portal); ok && old != nil {
				t.portals[old.Name] = old
			} else {
				delete(t.portals, r.Portal.Name)
			}
		}
	case 'C':
		switch old := r.prev.(type) {
		case *Statement:
			if _, taken := t.stmts[old.Name]; !taken {
				t.stmts[old.Name] = old
			}
		case *Portal:
			if _, taken := t.portals[old.Name]; !taken {
				t.portals[old.Name] = old
			}
		}
	}
}

// backend handles one server message (backend pump).
func (t *tracker) backend(msg pgwire.Message) {
	t.mu.Lock()
	head := t.head()
	// One BackendMessage per session, reused: handing a fresh one to an interface method would cost
	// an allocation per DataRow. Hooks must not keep it past the call (documented on Hooks).
	bm := &t.bm
	*bm = BackendMessage{Type: msg.Type, Raw: msg.Raw, Request: head}
	out := msg.Raw
	forward := true
	callHook := true

	// Before the hook: context the hook needs.
	switch msg.Type {
	case 'S', 'A':
		bm.Request = nil
		if msg.Type == 'S' {
			var ps pgproto3.ParameterStatus
			if ps.Decode(msg.Body()) == nil {
				t.ss.info.params[ps.Name] = ps.Value
			}
		}
	case 'T':
		if head != nil && (head.Kind == 'Q' || head.Kind == 'D') {
			rd := &pgproto3.RowDescription{}
			if rd.Decode(bytes.Clone(msg.Body())) == nil {
				if head.Kind == 'Q' {
					head.Fields = rd
				} else if head.DescribeKind == 'S' && head.Statement != nil {
					head.Statement.Fields = rd
				} else if head.Portal != nil {
					head.Portal.Fields = rd
				}
			}
		}
	case 't':
		if head != nil && head.Kind == 'D' && head.Statement != nil {
			pd := &pgproto3.ParameterDescription{}
			if pd.Decode(bytes.Clone(msg.Body())) == nil {
				head.Statement.Params = pd
			}
		}
	case 'D', 'C', 'H', 'G', 'I', 's':
		if head != nil && head.Kind == 'E' && head.Fields == nil && head.Portal != nil {
			head.Fields = head.Portal.Fields
			if head.Fields == nil && head.Portal.Statement != nil {
				head.Fields = head.Portal.Statement.Fields
			}
		}
	case 'E':
		var refusal *pgproto3.ErrorResponse
		if head != nil && head.refusal != nil {
			refusal = head.refusal
		}
		if refusal != nil && !isFatal(msg.Body()) {
			e := *refusal
			if e.Severity == "" {
				e.Severity, e.SeverityUnlocalized = "ERROR", "ERROR"
			}
			if e.Code == "" {
				e.Code = "XX000"
			}
			out, _ = e.Encode(nil)
			head.refusal = nil
			callHook = false
		}
	}
	if head != nil && head.internal {
		// Answers to the core's own Describe stay in the proxy (errors go through: the client's Execute
		// would have failed the same way).
		callHook = false
		forward = msg.Type == 'E'
	}
	if t.discard {
		callHook = false
		switch msg.Type {
		case 'Z':
			t.discard = false
		case 'S', 'A', 'N':
		default:
			forward = false
		}
	}
	if callHook {
		v := t.hooks.Backend(bm)
		switch v.kind {
		case verdictReplace:
			out = v.raw
		case verdictRefuse:
			t.ss.srv.metrics.errors.WithLabelValues("refused").Inc()
			e := *v.refusal
			if e.Severity == "" {
				e.Severity, e.SeverityUnlocalized = "ERROR", "ERROR"
			}
			out, _ = e.Encode(nil)
			if msg.Type != 'Z' {
				t.discard = true
			} else {
				// A refused ReadyForQuery still has to reach the client after the error.
				out = append(out, msg.Raw...)
			}
		}
	}

	// After the hook: match the response to its request.
	if head != nil {
		switch msg.Type {
		case '1':
			if head.Kind == 'P' {
				t.pop()
			}
		case '2':
			if head.Kind == 'B' {
				t.pop()
			}
		case '3':
			if head.Kind == 'C' {
				t.pop()
			}
		case 'T', 'n':
			if head.Kind == 'D' {
				t.pop()
			}
		case 'C':
			if head.Kind == 'Q' {
				head.Fields = nil
				t.commandTag(msg.Body())
			} else if head.Kind == 'E' {
				t.commandTag(msg.Body())
				t.pop()
			}
			if t.copyReq == head {
				t.copyReq = nil
			}
		case 'I', 's':
			if head.Kind == 'E' {
				t.pop()
			}
		case 'G':
			t.copyReq = head
		case 'E':
			if t.copyReq == head {
				t.copyReq = nil
			}
			if head.Kind != 'Q' && head.Kind != 'F' && head.Kind != 'S' {
				// Extended protocol: PostgreSQL skips everything up to the Sync.
				for h := t.head(); h != nil && h.Kind != 'S' && h.Kind != 'Q' && h.Kind != 'F'; h = t.head() {
					t.undo(h)
					t.pop()
				}
			}
		case 'Z':
			for h := t.head(); h != nil; h = t.head() {
				t.pop()
				if h.Kind == 'S' || h.Kind == 'Q' || h.Kind == 'F' {
					head = h
					break
				}
				t.undo(h)
			}
			t.copyReq = nil
			t.rgen++
			if b := msg.Body(); len(b) > 0 && b[0] == 'I' {
				// Outside a transaction every portal is gone (they are not holdable).
				for name, po := range t.portals {
					if po.gen <= head.gen {
						delete(t.portals, name)
					}
				}
			}
		}
	}
	t.mu.Unlock()
	if forward {
		t.ss.cw.Write(out)
	}
}

// commandTag keeps the registry in step with SQL that drops every prepared statement.
func (t *tracker) commandTag(body []byte) {
	tag := body
	if i := bytes.IndexByte(tag, 0); i >= 0 {
		tag = tag[:i]
	}
	switch string(tag) {
	case "DEALLOCATE ALL":
		clear(t.stmts)
	case "DISCARD ALL":
		clear(t.stmts)
		clear(t.portals)
	}
}
