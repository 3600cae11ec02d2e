package columns

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/keyward/keyward/colcrypt/analyze"
	"github.com/keyward/keyward/colcrypt/colkeys"
	"github.com/keyward/keyward/colcrypt/coltype"
	"github.com/keyward/keyward/colcrypt/envelope"
	"github.com/keyward/keyward/colcrypt/proxy"
	"github.com/keyward/keyward/keyagent/client"
)

// session is the Hooks of one client session. The proxy core calls it serialized.
type session struct {
	ic       *Interceptor
	ctx      context.Context
	s        *proxy.Session
	identity string

	prepares map[string]*analyze.Prepare // SQL-level PREPAREs, for EXECUTE

	// The search path names resolve with (PostgreSQL does not report it): the default "$user",
	// public, then what SET/RESET search_path statements said; a SET LOCAL lasts until the
	// transaction ends (the next idle ReadyForQuery).
	path, savedPath []string
	pathKey         string
	localPath       bool

	rows   map[*pgproto3.RowDescription]*rowPlan
	lastRD *pgproto3.RowDescription
	lastRP *rowPlan

	cs     coltype.Session
	tzName string
	ddl    bool

	cin  *copyState
	cout *copyState

	rowBuf   []byte // the DataRow being rewritten
	opens    map[openKey]openEntry
	now      time.Time // read every 64 DataRows (and at the first after each ReadyForQuery) for the expiry of cached ciphers
	rowCount uint64
	csOK     bool
	scratch  []byte // hex-decoded envelopes
	plain    []byte // opened canonical values
}

var _ proxy.Hooks = (*session)(nil)

// rowPlan is what to do with the fields of one row description.
type rowPlan struct {
	cols []fieldPlan // sorted by index; empty: nothing protected
	err  *pgproto3.ErrorResponse
	gen  uint64
	at   time.Time
}

type fieldAction uint8

const (
	decrypt fieldAction = iota
	asCiphertext
)

type fieldPlan struct {
	index  int
	col    *protCol
	action fieldAction
	// The cipher that opened this field's last value, for as long as its authorization holds: the
	// values of one column mostly share a key version, so this saves a lookup per value.
	alg     byte
	version uint32
	cipher  *envelope.Cipher
	expires time.Time
}

func (ss *session) Close() {}

// csess returns the session's settings for coltype (TimeZone and DateStyle as last reported).
func (ss *session) csess() *coltype.Session {
	if ss.csOK {
		return &ss.cs
	}
	ss.csOK = true
	if tz := ss.s.Param("TimeZone"); tz != ss.tzName {
		ss.tzName = tz
		ss.cs.TimeZone = nil
		if loc, err := coltype.LoadTimeZone(tz); err == nil {
			ss.cs.TimeZone = loc
		}
	}
	ss.cs.DateStyle = ss.s.Param("DateStyle")
	return &ss.cs
}

// checkSettings refuses to rewrite SQL text under settings the rewriting depends on.
func (ss *session) checkSettings() *pgproto3.ErrorResponse {
	if v := ss.s.Param("standard_conforming_strings"); v != "" && v != "on" {
		return errorResponse(StateRefused, "colcrypt needs standard_conforming_strings = on to write encrypted columns")
	}
	if v := ss.s.Param("client_encoding"); v != "" && !strings.EqualFold(v, "UTF8") && !strings.EqualFold(v, "UTF-8") {
		return errorResponse(StateRefused, "colcrypt needs client_encoding UTF8 to write encrypted columns (it is "+v+")")
	}
	return nil
}

// colErr carries the column a value failed for.
type colErr struct {
	col   string
	write bool
	err   error
}

func (e *colErr) Error() string { return e.col + ": " + e.err.Error() }
func (e *colErr) Unwrap() error { return e.err }

func (ss *session) errResp(err error) *pgproto3.ErrorResponse {
	var ce *colErr
	if errors.As(err, &ce) {
		return keyError(ce.err, ce.col, ce.write)
	}
	return errorResponse(StateRefused, "colcrypt: "+err.Error())
}

func keyCol(p *analyze.Protected) colkeys.Column {
	return colkeys.Column{Table: p.Schema + "." + p.Table, Name: p.Column, Scope: p.Scope, Mode: p.Mode.String()}
}

// seal encrypts a canonical value for p (whose key name is col, keyCol(p)): one envelope to write,
// or one per live version to match.
func (ss *session) seal(p *analyze.Protected, col colkeys.Column, role analyze.Role, canon []byte) ([][]byte, error) {
	if role == analyze.Match {
		sealers, err := ss.ic.keys.MatchSealers(ss.ctx, ss.identity, col)
		if err != nil {
			return nil, &colErr{p.QualifiedName(), false, err}
		}
		out := make([][]byte, 0, len(sealers))
		for _, s := range sealers {
			env, err := s.Seal(ss.ctx, nil, canon)
			if err != nil {
				return nil, &colErr{p.QualifiedName(), false, err}
			}
			out = append(out, env)
		}
		return out, nil
	}
	s, err := ss.ic.keys.Sealer(ss.ctx, ss.identity, col)
	if err != nil {
		return nil, &colErr{p.QualifiedName(), true, err}
	}
	env, err := s.Seal(ss.ctx, nil, canon)
	if err != nil {
		return nil, &colErr{p.QualifiedName(), true, err}
	}
	return [][]byte{env}, nil
}

func (ss *session) sealValue(v *analyze.Value) ([][]byte, error) {
	canon, err := coltype.ParseLiteral(v.Column.Type, v.Literal, ss.csess())
	if err != nil {
		return nil, &colErr{v.Column.QualifiedName(), v.Role == analyze.Write, err}
	}
	return ss.seal(v.Column, keyCol(v.Column), v.Role, canon)
}

// Frontend rewrites client messages.
func (ss *session) Frontend(m *proxy.FrontendMessage) proxy.Verdict {
	switch m.Type {
	case 'Q':
		return ss.query(m.Msg.(*pgproto3.Query))
	case 'P':
		return ss.parse(m)
	case 'B':
		return ss.bind(m)
	case 'd', 'c', 'f':
		return ss.copyIn(m)
	}
	return proxy.Pass()
}

// plan returns the analysis of sql under the session's search path.
func (ss *session) plan(sql string) (*analyze.Plan, *snapshot) {
	return ss.ic.plan(ss.ctx, ss.path, ss.pathKey, sql)
}

// setPath sets the search path from schemas as written ("$user" substituted); nil: the default.
func (ss *session) setPath(schemas []string) {
	if schemas == nil {
		schemas = []string{"$user", "public"}
	}
	ss.path = make([]string, 0, len(schemas))
	for _, s := range schemas {
		if s == "$user" {
			s = ss.s.Role
		}
		ss.path = append(ss.path, s)
	}
	ss.pathKey = strings.Join(ss.path, ",")
}

// statements applies the PREPARE/EXECUTE/DEALLOCATE bookkeeping of a plan and returns its edits.
func (ss *session) statements(plan *analyze.Plan) ([]analyze.Edit, *pgproto3.ErrorResponse) {
	edits := plan.Edits
	extra := false
	for _, st := range plan.Statements {
		switch {
		case st.Prepare != nil:
			ss.prepares[st.Prepare.Name] = st.Prepare
		case st.Execute != nil:
			e, r := st.Execute.Bind(ss.prepares[st.Execute.Name])
			if r != nil {
				return nil, refusalResponse(r)
			}
			if len(e) > 0 {
				if !extra {
					edits = append([]analyze.Edit(nil), edits...)
					extra = true
				}
				edits = append(edits, e...)
			}
		case st.SearchPath != nil:
			sp := st.SearchPath
			if sp.Local && !ss.localPath {
				ss.savedPath, ss.localPath = ss.path, true
			}
			if sp.Default {
				ss.setPath(nil)
			} else {
				ss.setPath(sp.Schemas)
			}
		case st.Deallocate != nil:
			if st.Deallocate.All {
				clear(ss.prepares)
			} else {
				delete(ss.prepares, st.Deallocate.Name)
			}
		}
	}
	if extra {
		sortEdits(edits)
	}
	return edits, nil
}

func (ss *session) query(q *pgproto3.Query) proxy.Verdict {
	plan, _ := ss.plan(q.String)
	switch plan.Action {
	case analyze.Pass:
		return proxy.Pass()
	case analyze.Refuse:
		return proxy.Refuse(refusalResponse(plan.Refusal))
	}
	edits, refusal := ss.statements(plan)
	if refusal != nil {
		return proxy.Refuse(refusal)
	}
	if len(edits) == 0 {
		return proxy.Pass()
	}
	if e := ss.checkSettings(); e != nil {
		return proxy.Refuse(e)
	}
	sql, err := analyze.Render(q.String, edits, ss.sealValue)
	if err != nil {
		return proxy.Refuse(ss.errResp(err))
	}
	out, err := (&pgproto3.Query{String: sql}).Encode(nil)
	if err != nil {
		return proxy.Refuse(ss.errResp(err))
	}
	return proxy.Replace(out)
}

func (ss *session) parse(m *proxy.FrontendMessage) proxy.Verdict {
	p := m.Msg.(*pgproto3.Parse)
	plan, _ := ss.plan(p.Query)
	switch plan.Action {
	case analyze.Pass:
		return proxy.Pass()
	case analyze.Refuse:
		return proxy.Refuse(refusalResponse(plan.Refusal))
	}
	edits, refusal := ss.statements(plan)
	if refusal != nil {
		return proxy.Refuse(refusal)
	}
	if m.Statement != nil {
		m.Statement.Data = plan
	}
	if len(edits) == 0 && len(plan.Params) == 0 {
		return proxy.Pass()
	}
	if e := ss.checkSettings(); e != nil {
		return proxy.Refuse(e)
	}
	np := pgproto3.Parse{Name: p.Name, Query: p.Query}
	if len(edits) > 0 {
		sql, err := analyze.Render(p.Query, edits, ss.sealValue)
		if err != nil {
			return proxy.Refuse(ss.errResp(err))
		}
		np.Query = sql
	}
	n := len(p.ParameterOIDs)
	for _, prm := range plan.Params {
		n = max(n, prm.N)
	}
	np.ParameterOIDs = make([]uint32, n)
	copy(np.ParameterOIDs, p.ParameterOIDs)
	for _, prm := range plan.Params {
		np.ParameterOIDs[prm.N-1] = prm.OID()
	}
	out, err := np.Encode(nil)
	if err != nil {
		return proxy.Refuse(ss.errResp(err))
	}
	return proxy.Replace(out)
}

// paramOID is the type a protected parameter's value is read as, and reported as in
// ParameterDescription: the client's declaration, else the statement's cast, else the column's type.
func paramOID(st *proxy.Statement, prm *analyze.Param) uint32 {
	if i := prm.N - 1; i < len(st.ParamOIDs) && st.ParamOIDs[i] != 0 {
		return st.ParamOIDs[i]
	}
	if prm.Cast != "" {
		if t, err := coltype.ParseType(prm.Cast); err == nil {
			return t.OID()
		}
	}
	return prm.Column.Type.OID()
}

func (ss *session) bind(m *proxy.FrontendMessage) proxy.Verdict {
	st := m.Statement
	if st == nil {
		return proxy.Pass()
	}
	plan, _ := st.Data.(*analyze.Plan)
	if (plan == nil || len(plan.Params) == 0) && st.Fields == nil {
		return proxy.Pass()
	}
	b := m.Msg.(*pgproto3.Bind)
	nb := *b
	changed := ss.binaryResults(m, &nb)
	if plan == nil || len(plan.Params) == 0 {
		if !changed {
			return proxy.Pass()
		}
		out, err := nb.Encode(nil)
		if err != nil {
			return proxy.Refuse(ss.errResp(err))
		}
		return proxy.Replace(out)
	}
	nb.Parameters = append([][]byte(nil), b.Parameters...)
	ownFormats := false
	cs := ss.csess()
	for i := range plan.Params {
		prm := &plan.Params[i]
		n := prm.N - 1
		if n >= len(b.Parameters) || b.Parameters[n] == nil {
			continue // PostgreSQL reports a wrong count itself; NULL stays NULL
		}
		format := m.Portal.ParamFormat(n)
		canon, err := coltype.CanonicalFromOID(prm.Column.Type, paramOID(st, prm), format, b.Parameters[n], cs)
		if err != nil {
			return proxy.Refuse(keyError(err, prm.Column.QualifiedName(), true))
		}
		envs, err := ss.seal(prm.Column, keyCol(prm.Column), prm.Role, canon)
		if err != nil {
			return proxy.Refuse(ss.errResp(err))
		}
		// Envelopes go to the server in binary whatever the client used: hex text would double
		// their size on the wire and cost the server a decoding step.
		if format != coltype.BinaryFormat {
			if !ownFormats {
				formats := make([]int16, len(b.Parameters))
				for i := range formats {
					formats[i] = m.Portal.ParamFormat(i)
				}
				nb.ParameterFormatCodes, ownFormats = formats, true
			}
			nb.ParameterFormatCodes[n] = coltype.BinaryFormat
		}
		if prm.Array() {
			nb.Parameters[n] = byteaArray(envs)
		} else {
			nb.Parameters[n] = envs[0]
		}
	}
	out, err := nb.Encode(nil)
	if err != nil {
		return proxy.Refuse(ss.errResp(err))
	}
	return proxy.Replace(out)
}

// portalData is what the hooks remember about a portal: the result formats asked of the server.
type portalData struct {
	server []int16 // per column
}

// binaryResults asks the server for protected result columns in binary: bytea's text form is hex,
// twice the size on the wire and a decoding step in the proxy, while the client's format is
// rendered from the plaintext anyway. It needs the statement's row description (known when the
// client described the statement first, as most drivers do); it reports whether nb changed.
func (ss *session) binaryResults(m *proxy.FrontendMessage, nb *pgproto3.Bind) bool {
	st := m.Statement
	if st.Fields == nil || m.Portal == nil {
		return false
	}
	rp := ss.rowPlanFor(st.Fields)
	if rp.err != nil || len(rp.cols) == 0 {
		return false
	}
	var formats []int16
	for _, fp := range rp.cols {
		if fp.action != decrypt || proxy.FormatAt(nb.ResultFormatCodes, fp.index) == coltype.BinaryFormat {
			continue
		}
		if formats == nil {
			formats = make([]int16, len(st.Fields.Fields))
			for i := range formats {
				formats[i] = proxy.FormatAt(nb.ResultFormatCodes, i)
			}
		}
		formats[fp.index] = coltype.BinaryFormat
	}
	if formats == nil {
		return false
	}
	nb.ResultFormatCodes = formats
	m.Portal.Data = &portalData{server: formats}
	return true
}

// serverFormat is the format the server sends column i of req's rows in.
func serverFormat(req *proxy.Request, i int) int16 {
	if req.Kind == 'E' && req.Portal != nil {
		if pd, ok := req.Portal.Data.(*portalData); ok && i < len(pd.server) {
			return pd.server[i]
		}
	}
	return req.Format(i)
}

// byteaArray is a one-dimensional bytea[] parameter value in binary format: ndim, has-null flag,
// element type, then (length, lower bound) per dimension, then each element with its length.
func byteaArray(envs [][]byte) []byte {
	out := binary.BigEndian.AppendUint32(nil, 1)
	out = binary.BigEndian.AppendUint32(out, 0)
	out = binary.BigEndian.AppendUint32(out, byteaOID)
	out = binary.BigEndian.AppendUint32(out, uint32(len(envs)))
	out = binary.BigEndian.AppendUint32(out, 1)
	for _, e := range envs {
		out = binary.BigEndian.AppendUint32(out, uint32(len(e)))
		out = append(out, e...)
	}
	return out
}

// Backend rewrites server messages.
func (ss *session) Backend(m *proxy.BackendMessage) proxy.Verdict {
	switch m.Type {
	case 'T':
		return ss.rowDescription(m)
	case 'D':
		return ss.dataRow(m)
	case 't':
		return ss.paramDescription(m)
	case 'd':
		return ss.copyOut(m)
	case 'S':
		ss.csOK = false // TimeZone or DateStyle may have changed
	case 'C':
		tag := m.Body()
		if bytes.HasPrefix(tag, []byte("CREATE ")) || bytes.HasPrefix(tag, []byte("ALTER ")) || bytes.HasPrefix(tag, []byte("DROP ")) {
			// Reload now (the change may be visible to the catalog connection only after commit, so
			// once more at the next ReadyForQuery).
			ss.ic.cat.invalidate()
			ss.ddl = true
		}
		ss.cout = nil
	case 'Z':
		if b := m.Body(); ss.localPath && len(b) > 0 && b[0] == 'I' {
			ss.localPath = false
			ss.setPath(ss.savedPath)
		}
		if ss.ddl {
			ss.ddl = false
			ss.ic.cat.invalidate()
		}
		ss.cin, ss.cout = nil, nil
		ss.rowCount = 0 // the next result's first row reads the clock: an idle session's is stale
	}
	return proxy.Pass()
}

func (ss *session) paramDescription(m *proxy.BackendMessage) proxy.Verdict {
	req := m.Request
	if req == nil || req.Statement == nil {
		return proxy.Pass()
	}
	plan, _ := req.Statement.Data.(*analyze.Plan)
	if plan == nil || len(plan.Params) == 0 {
		return proxy.Pass()
	}
	var pd pgproto3.ParameterDescription
	if err := pd.Decode(bytes.Clone(m.Body())); err != nil {
		return proxy.Pass()
	}
	for i := range plan.Params {
		prm := &plan.Params[i]
		if n := prm.N - 1; n < len(pd.ParameterOIDs) {
			pd.ParameterOIDs[n] = paramOID(req.Statement, prm)
		}
	}
	out, err := pd.Encode(nil)
	if err != nil {
		return proxy.Pass()
	}
	return proxy.Replace(out)
}

// describedFields is the RowDescription object the core keeps for the rows m describes (the pointer
// later DataRows will carry in Request.Fields).
func describedFields(m *proxy.BackendMessage) *pgproto3.RowDescription {
	if req := m.Request; req != nil {
		switch {
		case req.Kind == 'Q':
			return req.Fields
		case req.Kind == 'D' && req.DescribeKind == 'S' && req.Statement != nil:
			return req.Statement.Fields
		case req.Kind == 'D' && req.DescribeKind == 'P' && req.Portal != nil:
			return req.Portal.Fields
		}
	}
	return nil
}

const rowPlanTTL = 30 * time.Second

func (ss *session) rowPlanFor(rd *pgproto3.RowDescription) *rowPlan {
	if rd == ss.lastRD && ss.lastRP != nil {
		return ss.lastRP
	}
	snap, err := ss.ic.cat.snapshot(ss.ctx)
	if err != nil {
		ss.ic.log.Error("catalog reload failed; keeping the previous view", "err", err)
	}
	now := time.Now()
	if rp := ss.rows[rd]; rp != nil && rp.gen == snap.gen && now.Sub(rp.at) < rowPlanTTL {
		ss.lastRD, ss.lastRP = rd, rp
		return rp
	}
	rp := &rowPlan{gen: snap.gen, at: now}
	for i, f := range rd.Fields {
		if f.TableOID == 0 {
			continue
		}
		pc := snap.attrs[attrKey{f.TableOID, int16(f.TableAttributeNumber)}]
		if pc == nil {
			continue
		}
		fp := fieldPlan{index: i, col: pc}
		if ss.ic.onDenied != DeniedNull {
			if err := ss.ic.keys.Authorize(ss.ctx, ss.identity, pc.key, client.Decrypt); err != nil {
				if errors.Is(err, colkeys.ErrDenied) && ss.ic.onDenied == DeniedCiphertext {
					fp.action = asCiphertext
				} else {
					rp.err = keyError(err, pc.prot.QualifiedName(), false)
					return rp // not cached: the next result asks again
				}
			}
		}
		rp.cols = append(rp.cols, fp)
	}
	if len(ss.rows) > 256 {
		clear(ss.rows)
	}
	ss.rows[rd] = rp
	ss.lastRD, ss.lastRP = rd, rp
	return rp
}

func (ss *session) rowDescription(m *proxy.BackendMessage) proxy.Verdict {
	rd := describedFields(m)
	if rd == nil {
		rd = &pgproto3.RowDescription{}
		if err := rd.Decode(bytes.Clone(m.Body())); err != nil {
			return proxy.Pass()
		}
	}
	rp := ss.rowPlanFor(rd)
	if rp.err != nil {
		return proxy.Refuse(rp.err)
	}
	if len(rp.cols) == 0 {
		return proxy.Pass()
	}
	out := pgproto3.RowDescription{Fields: append([]pgproto3.FieldDescription(nil), rd.Fields...)}
	for _, fp := range rp.cols {
		if fp.action == asCiphertext {
			continue
		}
		f := &out.Fields[fp.index]
		if req := m.Request; req != nil && req.Kind == 'D' && req.DescribeKind == 'P' && req.Portal != nil {
			f.Format = proxy.FormatAt(req.Portal.ResultFormats, fp.index) // the server's may be our binary
		}
		f.DataTypeOID = fp.col.typ.OID()
		f.DataTypeSize = fp.col.typ.Size()
		f.TypeModifier = -1
	}
	raw, err := out.Encode(nil)
	if err != nil {
		return proxy.Refuse(errorResponse(StateKeys, "colcrypt: "+err.Error()))
	}
	return proxy.Replace(raw)
}

func (ss *session) dataRow(m *proxy.BackendMessage) proxy.Verdict {
	req := m.Request
	if req == nil || req.Fields == nil {
		return proxy.Pass()
	}
	rp := ss.rowPlanFor(req.Fields)
	if rp.err != nil {
		return proxy.Refuse(rp.err)
	}
	if len(rp.cols) == 0 {
		return proxy.Pass()
	}
	body := m.Body()
	if len(body) < 2 {
		return proxy.Pass()
	}
	ss.tick()
	n := int(binary.BigEndian.Uint16(body))
	out := append(ss.rowBuf[:0], 'D', 0, 0, 0, 0)
	out = append(out, body[:2]...)
	pos := 2
	next := 0
	cs := ss.csess()
	for i := 0; i < n; i++ {
		if pos+4 > len(body) {
			return proxy.Refuse(errorResponse(StateKeys, "colcrypt: malformed DataRow from the server"))
		}
		l := int32(binary.BigEndian.Uint32(body[pos:]))
		start := pos
		pos += 4
		var val []byte
		if l >= 0 {
			if pos+int(l) > len(body) {
				return proxy.Refuse(errorResponse(StateKeys, "colcrypt: malformed DataRow from the server"))
			}
			val = body[pos : pos+int(l)]
			pos += int(l)
		}
		if next >= len(rp.cols) || rp.cols[next].index != i {
			out = append(out, body[start:pos]...)
			continue
		}
		fp := &rp.cols[next]
		next++
		if l < 0 || fp.action == asCiphertext {
			if l >= 0 && serverFormat(req, i) != req.Format(i) {
				// Asked in binary while the column was readable: give the client the text form.
				lenAt := len(out)
				out = append(out, 0, 0, 0, 0, '\\', 'x')
				out = hex.AppendEncode(out, val)
				binary.BigEndian.PutUint32(out[lenAt:], uint32(len(out)-lenAt-4))
				continue
			}
			out = append(out, body[start:pos]...)
			continue
		}
		format := req.Format(i)
		var canon []byte
		var err error
		if sf := serverFormat(req, i); sf == coltype.BinaryFormat && len(val) >= envelope.HeaderSize &&
			fp.cipher != nil && val[3] == fp.alg && binary.BigEndian.Uint32(val[4:8]) == fp.version && ss.now.Before(fp.expires) {
			ss.plain, err = fp.cipher.Open(ss.plain[:0], val, fp.col.aad)
			canon = ss.plain
		} else {
			canon, err = ss.open(fp.col, val, sf)
			if err == nil && sf == coltype.BinaryFormat && val[3] != byte(envelope.AlgHSM) {
				k := openKey{fp.col, val[3], binary.BigEndian.Uint32(val[4:8])}
				if e, ok := ss.opens[k]; ok {
					fp.alg, fp.version, fp.cipher, fp.expires = k.alg, k.version, e.c, e.expires
				}
			}
		}
		if err != nil {
			if errors.Is(err, colkeys.ErrDenied) && ss.ic.onDenied == DeniedNull {
				out = binary.BigEndian.AppendUint32(out, 0xFFFFFFFF)
				continue
			}
			return proxy.Refuse(keyError(err, fp.col.prot.QualifiedName(), false))
		}
		lenAt := len(out)
		out = append(out, 0, 0, 0, 0)
		out, err = coltype.AppendRender(out, fp.col.typ, format, canon, cs)
		if err != nil {
			return proxy.Refuse(keyError(err, fp.col.prot.QualifiedName(), false))
		}
		binary.BigEndian.PutUint32(out[lenAt:], uint32(len(out)-lenAt-4))
	}
	binary.BigEndian.PutUint32(out[1:], uint32(len(out)-1))
	ss.rowBuf = out // Replace does not retain it
	return proxy.Replace(out)
}

// tick counts a row and reads the clock for the expiry of cached ciphers every 64 rows.
func (ss *session) tick() {
	if ss.rowCount++; ss.rowCount%64 == 1 {
		ss.now = time.Now()
	}
}

var errNotHex = fmt.Errorf("%w: bytea value not in hex output format", envelope.ErrOpen)

// open decrypts one stored value as the server sent it (bytea, text or binary format) and returns
// its canonical plaintext (valid until the next call).
func (ss *session) open(pc *protCol, val []byte, format int16) ([]byte, error) {
	env := val
	if format != coltype.BinaryFormat {
		if len(val) < 2 || val[0] != '\\' || val[1] != 'x' {
			return nil, errNotHex
		}
		var err error
		ss.scratch, err = hex.AppendDecode(ss.scratch[:0], val[2:])
		if err != nil {
			return nil, errNotHex
		}
		env = ss.scratch
	}
	var err error
	if len(env) >= envelope.HeaderSize && env[3] != byte(envelope.AlgHSM) {
		if c := ss.cipherFor(pc, env); c != nil {
			ss.plain, err = c.Open(ss.plain[:0], env, pc.aad)
			return ss.plain, err
		}
	}
	ss.plain, err = ss.ic.keys.Open(ss.ctx, ss.identity, pc.key, env, ss.plain[:0])
	return ss.plain, err
}

// openKey names a software cipher in the session's cache.
type openKey struct {
	col     *protCol
	alg     byte
	version uint32
}

type openEntry struct {
	c       *envelope.Cipher
	expires time.Time
}

// cipherFor returns the session's cached cipher for env's header, asking the key cache when it is
// missing or its authorization expired; nil lets Open report what is wrong.
func (ss *session) cipherFor(pc *protCol, env []byte) *envelope.Cipher {
	k := openKey{pc, env[3], binary.BigEndian.Uint32(env[4:8])}
	if e, ok := ss.opens[k]; ok && ss.now.Before(e.expires) {
		return e.c
	}
	h, err := envelope.ParseHeader(env)
	if err != nil {
		return nil
	}
	c, exp, err := ss.ic.keys.Cipher(ss.ctx, ss.identity, pc.key, h)
	if err != nil {
		return nil
	}
	if ss.opens == nil || len(ss.opens) > 64 {
		ss.opens = map[openKey]openEntry{}
	}
	ss.opens[k] = openEntry{c, exp}
	return c
}

func isOpenErr(err error) bool { return errors.Is(err, envelope.ErrOpen) }
