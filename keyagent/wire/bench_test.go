package wire

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestBenchWireServe measures the protocol's share of a cache-hit GetKey:
// a server that decodes KeyRequests and encodes KeyResponses from a memsafe
// key, against a bare unix-socket echo that answers the same number of bytes,
// both driven by 8 concurrent clients that send the same request frame and
// read the response bytes. A third figure, for information, has the clients
// decode every key into locked memory, which is what keyagent/client pays.
func TestBenchWireServe(t *testing.T) {
	if os.Getenv("KEYWARD_BENCH") != "1" {
		t.Skip("set KEYWARD_BENCH=1 (make bench)")
	}
	dur := 2 * time.Second
	if os.Getenv("KEYWARD_BENCH_QUICK") == "1" {
		dur = 500 * time.Millisecond
	}
	const clients = 8
	key := testKey(t, 0, 32)
	req := &KeyRequest{Op: OpDecrypt, Scope: "payroll:employees.ssn", ActingFor: "db:alice", Bits: 256}
	reqFrame, err := req.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	respFrame, err := (&KeyResponse{Scope: req.Scope, Version: 1, Key: key}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	respLen := len(respFrame)
	clear(respFrame)

	wireServer := func(nc net.Conn) {
		c := NewConn(nc, Options{IdleTimeout: time.Minute, FrameTimeout: 5 * time.Second})
		var kr KeyRequest
		resp := &KeyResponse{Version: 1, Key: key}
		for {
			if _, err := c.Next(); err != nil {
				return
			}
			if err := c.Decode(&kr); err != nil {
				return
			}
			resp.Scope = kr.Scope
			if err := c.WriteMsg(resp); err != nil {
				return
			}
		}
	}
	echoServer := func(nc net.Conn) {
		in := make([]byte, len(reqFrame))
		out := make([]byte, respLen)
		for {
			if _, err := io.ReadFull(nc, in); err != nil {
				return
			}
			if _, err := nc.Write(out); err != nil {
				return
			}
		}
	}
	rawClient := func(nc net.Conn, buf []byte) error {
		if _, err := nc.Write(reqFrame); err != nil {
			return err
		}
		_, err := io.ReadFull(nc, buf[:respLen])
		return err
	}

	type result struct {
		rate     float64
		p50, p99 time.Duration
	}
	run := func(name string, serve func(net.Conn), decodeKeys bool) result {
		path := filepath.Join(t.TempDir(), name+".sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); serve(c) }()
			}
		}()
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		deadline := time.Now().Add(dur)
		start := time.Now()
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				nc, err := net.Dial("unix", path)
				if err != nil {
					t.Error(err)
					return
				}
				defer nc.Close()
				r := NewReader(nc, Options{})
				buf := make([]byte, respLen)
				mine := make([]time.Duration, 0, 1<<16)
				for time.Now().Before(deadline) {
					t0 := time.Now()
					if decodeKeys {
						if _, err := nc.Write(reqFrame); err != nil {
							t.Error(err)
							return
						}
						m, err := r.Recv()
						if err != nil {
							t.Error(err)
							return
						}
						m.(*KeyResponse).Key.Destroy()
					} else if err := rawClient(nc, buf); err != nil {
						t.Error(err)
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		slices.Sort(lat)
		if len(lat) == 0 {
			t.Fatal("no requests completed")
		}
		return result{
			rate: float64(len(lat)) / elapsed.Seconds(),
			p50:  lat[len(lat)/2],
			p99:  lat[len(lat)*99/100],
		}
	}

	echo := run("echo", echoServer, false)
	kw := run("wire", wireServer, false)
	full := run("wire-client-keys", wireServer, true)

	ratio := kw.rate / echo.rate
	fmt.Printf("BENCH scenario=\"wire-serve-keyrequest\" keyward=%.0f baseline=%.0f unit=req/s ratio=%.2f goal=\">=0.5\" met=%v\n",
		kw.rate, echo.rate, ratio, ratio >= 0.5)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	fmt.Printf("BENCH scenario=\"wire-serve-keyrequest p50\" keyward=%.1f baseline=%.1f unit=us ratio=0 goal=\"report\" met=true\n", us(kw.p50), us(echo.p50))
	fmt.Printf("BENCH scenario=\"wire-serve-keyrequest p99\" keyward=%.1f baseline=%.1f unit=us ratio=0 goal=\"report\" met=true\n", us(kw.p99), us(echo.p99))
	fmt.Printf("BENCH scenario=\"wire-keyrequest with client key decode into memsafe\" keyward=%.0f baseline=%.0f unit=req/s ratio=%.2f goal=\"report\" met=true\n",
		full.rate, echo.rate, full.rate/echo.rate)
	fmt.Printf("BENCH scenario=\"wire-keyrequest with client key decode p99\" keyward=%.1f baseline=0 unit=us ratio=0 goal=\"report\" met=true\n", us(full.p99))
}
