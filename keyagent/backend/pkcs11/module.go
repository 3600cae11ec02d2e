package pkcs11

import (
	"errors"
	"fmt"
	"os"
	"sync"

	p11 "github.com/miekg/pkcs11"
)

// A PKCS#11 library is initialized once per process (C_Initialize/C_Finalize are process-wide), so
// backends opened on the same module share one context, reference-counted. This is the only package
// state, and it exists because the module's own state is per process.
type module struct {
	path string
	ctx  *p11.Ctx
	refs int
}

var modules = struct {
	sync.Mutex
	m map[string]*module
}{m: map[string]*module{}}

func acquireModule(path string) (*module, error) {
	modules.Lock()
	defer modules.Unlock()
	if m := modules.m[path]; m != nil {
		m.refs++
		return m, nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("pkcs11 module %s: not found: %w", path, err)
	}
	ctx := p11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("pkcs11 module %s: cannot be loaded (not a PKCS#11 library, or missing dependencies)", path)
	}
	if err := ctx.Initialize(); err != nil && !isCode(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		ctx.Destroy()
		return nil, fmt.Errorf("pkcs11 module %s: C_Initialize: %w", path, err)
	}
	m := &module{path: path, ctx: ctx, refs: 1}
	modules.m[path] = m
	return m, nil
}

func (m *module) release() {
	modules.Lock()
	defer modules.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(modules.m, m.path)
	_ = m.ctx.Finalize()
	m.ctx.Destroy()
}

// reinitialize recovers a module whose library state was lost (CKR_CRYPTOKI_NOT_INITIALIZED).
func (m *module) reinitialize() error {
	modules.Lock()
	defer modules.Unlock()
	err := m.ctx.Initialize()
	if err != nil && !isCode(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		return err
	}
	return nil
}

func isCode(err error, code uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == code
}

// lost reports errors after which the session, login or token must be re-established.
func lost(err error) bool {
	var e p11.Error
	if !errors.As(err, &e) {
		return false
	}
	switch uint(e) {
	case p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED, p11.CKR_DEVICE_REMOVED,
		p11.CKR_DEVICE_ERROR, p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_TOKEN_NOT_RECOGNIZED,
		p11.CKR_CRYPTOKI_NOT_INITIALIZED, p11.CKR_USER_NOT_LOGGED_IN, p11.CKR_SESSION_COUNT,
		p11.CKR_KEY_HANDLE_INVALID, p11.CKR_OBJECT_HANDLE_INVALID,
		p11.CKR_SLOT_ID_INVALID:
		return true
	}
	return false
}
