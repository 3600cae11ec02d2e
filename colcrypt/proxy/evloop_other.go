//go:build !linux

package proxy

// Without epoll every session is relayed by goroutines.

type evloop struct{}

type loopSession struct{}

func (s *Server) attachLoop(*session) bool     { return false }
func (s *Server) stopLoops()                   {}
func (ls *loopSession) wait() error            { return nil }
func (ls *loopSession) kill()                  {}
func (ls *loopSession) wake()                  {}
func (ls *loopSession) bytes() (in, out int64) { return 0, 0 }
