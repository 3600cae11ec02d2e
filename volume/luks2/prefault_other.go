//go:build !linux

package luks2

// prefaultHeap is a Linux-only speed hint (see prefault_linux.go).
func prefaultHeap(int) {}
