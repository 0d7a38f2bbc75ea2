package initiator

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestPollReader: data arrives whole and in order whether the reader spins or
// parks; answers slower than the spin budget turn spinning off and fast ones
// turn it back on; a closed peer gives io.EOF.
func TestPollReader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	const budget = 200 * time.Microsecond
	r := newPollReader(nc, budget)
	var busy atomic.Int32
	busy.Store(1)
	r.busy.Store(&busy)

	var want, got []byte
	read := func(n int) {
		t.Helper()
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
		got = append(got, buf...)
	}
	send := func(delay time.Duration, b byte) {
		msg := bytes.Repeat([]byte{b}, 100)
		want = append(want, msg...)
		go func() {
			time.Sleep(delay)
			_, _ = peer.Write(msg)
		}()
	}
	for i := range 3 { // slower than the budget: spinning stops
		send(5*budget, byte(i))
		read(100)
	}
	if r.slow < 2 {
		t.Errorf("after 3 slow answers slow = %d, want 2 (spinning off)", r.slow)
	}
	// A fast answer that finds the reader parked turns spinning back on (the
	// answer may also come before the read: then try again).
	for i := 0; i < 20 && r.slow != 0; i++ {
		send(0, byte(20+i))
		read(100)
	}
	if r.slow != 0 {
		t.Errorf("after fast answers slow = %d, want 0", r.slow)
	}
	busy.Store(0) // idle: parks at once
	send(2*time.Millisecond, 11)
	read(100)
	if !bytes.Equal(got, want) {
		t.Error("data differs")
	}
	peer.Close()
	if n, err := r.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Errorf("read after the peer closed: %d, %v; want io.EOF", n, err)
	}
}
