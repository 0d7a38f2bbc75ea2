package pdu

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// digestModes are the four header/data digest settings.
var digestModes = []struct {
	name         string
	header, data bool
}{
	{"none", false, false},
	{"header", true, false},
	{"data", false, true},
	{"both", true, true},
}

// encodeAll writes msgs to one buffer.
func encodeAll(t testing.TB, header, data bool, msgs ...Message) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.SetDigests(header, data)
	for _, m := range msgs {
		if err := w.WriteMessage(m); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// TestStreamManyPDUs writes every golden message into one stream and reads
// it back through readers that return the bytes in awkward pieces.
func TestStreamManyPDUs(t *testing.T) {
	cases := goldenCases(t)
	var msgs, wants []Message
	for _, c := range cases {
		msgs = append(msgs, c.msg)
		want := c.want
		if want == nil {
			want = c.msg
		}
		wants = append(wants, want)
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data+EOF": iotest.DataErrReader,
	}
	for _, mode := range digestModes {
		wire := encodeAll(t, mode.header, mode.data, msgs...)
		for rname, wrap := range readers {
			t.Run(mode.name+"/"+rname, func(t *testing.T) {
				r := NewReader(wrap(bytes.NewReader(wire)))
				r.SetDigests(mode.header, mode.data)
				var raw Raw
				for i, want := range wants {
					if err := r.Read(&raw); err != nil {
						t.Fatalf("PDU %d: %v", i, err)
					}
					got, err := Decode(&raw)
					if err != nil {
						t.Fatalf("PDU %d: %v", i, err)
					}
					if !reflect.DeepEqual(got, want) {
						t.Fatalf("PDU %d:\n got %+v\nwant %+v", i, got, want)
					}
				}
				if err := r.Read(&raw); err != io.EOF {
					t.Fatalf("after the last PDU: %v, want io.EOF", err)
				}
			})
		}
	}
}

// TestStreamPadding checks the wire size for every data length modulo 4 and
// that padding never leaks into the data.
func TestStreamPadding(t *testing.T) {
	for _, mode := range digestModes {
		for n := range 10 {
			data := bytes.Repeat([]byte{0x5a}, n)
			wire := encodeAll(t, mode.header, mode.data, &NOPOut{Data: data}, &NOPIn{ITT: 9})
			want := 2*BHSLen + (n+3)&^3
			if mode.header {
				want += 2 * DigestLen
			}
			if mode.data && n > 0 {
				want += DigestLen
			}
			if len(wire) != want {
				t.Errorf("%s, %d data bytes: %d wire bytes, want %d", mode.name, n, len(wire), want)
			}
			r := NewReader(bytes.NewReader(wire))
			r.SetDigests(mode.header, mode.data)
			var raw Raw
			if err := r.Read(&raw); err != nil || !bytes.Equal(raw.Data, data) {
				t.Fatalf("%s, %d data bytes: %x, %v", mode.name, n, raw.Data, err)
			}
			if err := r.Read(&raw); err != nil || raw.BHS.ITT() != 9 {
				t.Fatalf("%s, %d data bytes: next PDU %v", mode.name, n, err)
			}
		}
	}
}

func TestNonZeroPaddingAccepted(t *testing.T) {
	wire := encodeAll(t, false, false, &NOPOut{Data: []byte{1}}, &NOPIn{ITT: 9})
	copy(wire[BHSLen+1:], []byte{0xaa, 0xbb, 0xcc})
	r := NewReader(bytes.NewReader(wire))
	var raw Raw
	if err := r.Read(&raw); err != nil || !bytes.Equal(raw.Data, []byte{1}) {
		t.Fatalf("%x, %v", raw.Data, err)
	}
	if err := r.Read(&raw); err != nil || raw.BHS.ITT() != 9 {
		t.Fatalf("next PDU: %v", err)
	}
}

func TestHeaderDigestError(t *testing.T) {
	msg := &SCSICommand{Read: true, CDB: make([]byte, 20), Data: []byte("abc")}
	wire := encodeAll(t, true, true, msg)
	for _, pos := range []int{0, 7, 47, 48, 52, 56 + 3} { // BHS, AHS, the digest itself
		bad := bytes.Clone(wire)
		bad[pos] ^= 0x10
		r := NewReader(bytes.NewReader(bad))
		r.SetDigests(true, true)
		var raw Raw
		err := r.Read(&raw)
		var de *DigestError
		if !errors.As(err, &de) || !de.Header || de.Got == de.Want {
			t.Fatalf("byte %d flipped: %v, want a header *DigestError", pos, err)
		}
		if !strings.Contains(err.Error(), "header digest") {
			t.Errorf("message %q", err)
		}
		if err2 := r.Read(&raw); err2 != err {
			t.Errorf("after a header digest error: %v, want the same error", err2)
		}
	}
}

func TestDataDigestError(t *testing.T) {
	data := []byte("hello") // 3 bytes of padding, covered by the digest
	wire := encodeAll(t, true, true, &NOPIn{Data: data}, &NOPIn{ITT: 2, Data: data})
	first := BHSLen + DigestLen + 8 + DigestLen
	for _, pos := range []int{BHSLen + DigestLen, BHSLen + DigestLen + 4, BHSLen + DigestLen + 7, first - 1} {
		bad := bytes.Clone(wire)
		bad[pos] ^= 0x01
		r := NewReader(iotest.OneByteReader(bytes.NewReader(bad)))
		r.SetDigests(true, true)
		var raw Raw
		err := r.Read(&raw)
		var de *DigestError
		if !errors.As(err, &de) || de.Header {
			t.Fatalf("byte %d flipped: %v, want a data *DigestError", pos, err)
		}
		// The stream stays framed: the next PDU reads fine.
		if err := r.Read(&raw); err != nil || raw.BHS.ITT() != 2 || !bytes.Equal(raw.Data, data) {
			t.Fatalf("byte %d flipped: next PDU %v", pos, err)
		}
	}
}

func TestDiscardData(t *testing.T) {
	big := make([]byte, 200<<10) // larger than the bufio buffer
	for i := range big {
		big[i] = byte(i * 7)
	}
	for _, mode := range digestModes {
		wire := encodeAll(t, mode.header, mode.data, &DataIn{Data: big[:1001]}, &DataIn{Data: big}, &NOPIn{ITT: 3})
		r := NewReader(iotest.HalfReader(bytes.NewReader(wire)))
		r.SetDigests(mode.header, mode.data)
		r.SetMaxDataSegmentLength(len(big))
		var h BHS
		for range 2 {
			if _, err := r.ReadHeader(&h); err != nil {
				t.Fatal(err)
			}
			if _, err := r.ReadHeader(&h); err == nil {
				t.Fatalf("%s: ReadHeader with a data segment pending", mode.name)
			}
			if err := r.DiscardData(); err != nil {
				t.Fatalf("%s: %v", mode.name, err)
			}
		}
		var raw Raw
		if err := r.Read(&raw); err != nil || raw.BHS.ITT() != 3 {
			t.Fatalf("%s: PDU after discarded data: %v", mode.name, err)
		}
		if err := r.DiscardData(); err != nil {
			t.Errorf("DiscardData with nothing pending: %v", err)
		}

		if !mode.data {
			continue
		}
		// Flip a bit near the end of the second data segment, which is
		// followed by its data digest and the last PDU.
		last := BHSLen
		if mode.header {
			last += DigestLen
		}
		bad := bytes.Clone(wire)
		bad[len(bad)-last-DigestLen-6] ^= 0x80
		r = NewReader(bytes.NewReader(bad))
		r.SetDigests(mode.header, mode.data)
		r.SetMaxDataSegmentLength(len(big))
		for i := range 2 {
			if _, err := r.ReadHeader(&h); err != nil {
				t.Fatal(err)
			}
			err := r.DiscardData()
			var de *DigestError
			if i == 1 && (!errors.As(err, &de) || de.Header) {
				t.Fatalf("%s: DiscardData of corrupt data: %v", mode.name, err)
			}
		}
		if err := r.Read(&raw); err != nil || raw.BHS.ITT() != 3 {
			t.Fatalf("%s: PDU after a data digest error: %v", mode.name, err)
		}
	}
}

func TestReadDataLength(t *testing.T) {
	wire := encodeAll(t, false, true, &NOPIn{Data: []byte("12345")})
	r := NewReader(bytes.NewReader(wire))
	r.SetDigests(false, true)
	var h BHS
	if _, err := r.ReadHeader(&h); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 4, 6} {
		var pe *ProtocolError
		if err := r.ReadData(make([]byte, n)); !errors.As(err, &pe) {
			t.Errorf("ReadData of %d bytes for 5: %v", n, err)
		}
	}
	dst := make([]byte, 5)
	if err := r.ReadData(dst); err != nil || string(dst) != "12345" {
		t.Fatalf("%q, %v", dst, err)
	}
	if err := r.ReadData(dst); err == nil {
		t.Error("second ReadData for the same header succeeded")
	}
	if err := r.ReadData(nil); err != nil {
		t.Errorf("empty ReadData with nothing pending: %v", err)
	}
}

func TestLengthLimit(t *testing.T) {
	var h BHS
	h.setOpcode(OpDataIn, false)
	h.setLengths(0, MaxDataSegmentLength)
	wire := append(h[:], make([]byte, 64)...)

	r := NewReader(bytes.NewReader(wire))
	raw := Raw{Data: make([]byte, 0, 16)}
	allocs := testing.AllocsPerRun(1, func() {
		r = NewReader(bytes.NewReader(wire))
		raw.Data = raw.Data[:0]
		r.Read(&raw)
	})
	err := r.Read(&raw) // sticky
	var le *LengthError
	if !errors.As(err, &le) || le.Length != MaxDataSegmentLength || le.Limit != DefaultMaxRecvDataSegmentLength {
		t.Fatalf("got %v, want *LengthError", err)
	}
	if err2 := r.ReadData(nil); err2 != err {
		t.Errorf("ReadData after a LengthError: %v", err2)
	}
	if err2 := r.DiscardData(); err2 != err {
		t.Errorf("DiscardData after a LengthError: %v", err2)
	}
	if cap(raw.Data) != 16 {
		t.Errorf("the data buffer was reallocated to %d bytes", cap(raw.Data))
	}
	// NewReader's 64 KiB buffer, the bytes.Reader and the error; nothing of 16 MiB.
	if allocs > 5 {
		t.Errorf("%v allocations for a refused PDU", allocs)
	}

	for _, tc := range []struct {
		limit, length int
		ok            bool
	}{
		{8192, 8192, true},
		{8192, 8193, false},
		{512, 513, false},
		{0, 0, true},
		{0, 1, false},
		{-1, 1, false},
		{MaxDataSegmentLength + 100, MaxDataSegmentLength, true},
	} {
		var h BHS
		h.setOpcode(OpNOPIn, false)
		h.setLengths(0, tc.length)
		r := NewReader(bytes.NewReader(h[:]))
		r.SetMaxDataSegmentLength(tc.limit)
		_, err := r.ReadHeader(&h)
		if (err == nil) != tc.ok {
			t.Errorf("limit %d, length %d: %v", tc.limit, tc.length, err)
		}
	}
}

// TestTruncated cuts a stream of PDUs at every byte: a cut between PDUs is a
// clean io.EOF, a cut inside one is io.ErrUnexpectedEOF.
func TestTruncated(t *testing.T) {
	msgs := []Message{
		&SCSICommand{Write: true, CDB: make([]byte, 20), Data: []byte("immediate")},
		&NOPIn{Data: []byte("x")},
		&R2T{},
	}
	for _, mode := range digestModes {
		var ends []int
		var wire []byte
		for _, m := range msgs {
			wire = append(wire, encodeAll(t, mode.header, mode.data, m)...)
			ends = append(ends, len(wire))
		}
		for cut := range len(wire) {
			for _, discard := range []bool{false, true} {
				r := NewReader(bytes.NewReader(wire[:cut]))
				r.SetDigests(mode.header, mode.data)
				var err error
				var raw Raw
				for err == nil {
					if discard {
						if _, err = r.ReadHeader(&raw.BHS); err == nil {
							err = r.DiscardData()
						}
					} else {
						err = r.Read(&raw)
					}
				}
				want := io.ErrUnexpectedEOF
				if cut == 0 || cut == ends[0] || cut == ends[1] {
					want = io.EOF
				}
				if err != want {
					t.Fatalf("%s: cut at %d (discard %v): %v, want %v", mode.name, cut, discard, err, want)
				}
			}
		}
	}
}

// recordingWriter records the buffers handed to Write.
type recordingWriter struct {
	writes [][]byte
	buf    bytes.Buffer
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, p)
	return w.buf.Write(p)
}

func TestWriterCalls(t *testing.T) {
	small := make([]byte, smallData)
	big := make([]byte, smallData+1)
	for _, mode := range digestModes {
		var rw recordingWriter
		w := NewWriter(&rw)
		w.SetDigests(mode.header, mode.data)
		if err := w.WriteMessage(&DataOut{Data: small}); err != nil {
			t.Fatal(err)
		}
		if len(rw.writes) != 1 {
			t.Errorf("%s: %d Write calls for a small PDU, want 1", mode.name, len(rw.writes))
		}
		rw.writes = nil
		if err := w.WriteMessage(&DataOut{Data: big}); err != nil {
			t.Fatal(err)
		}
		if len(rw.writes) < 2 || &rw.writes[1][0] != &big[0] {
			t.Errorf("%s: the large data segment was copied", mode.name)
		}
		r := NewReader(&rw.buf)
		r.SetDigests(mode.header, mode.data)
		r.SetMaxDataSegmentLength(len(big))
		var raw Raw
		for _, n := range []int{len(small), len(big)} {
			if err := r.Read(&raw); err != nil || len(raw.Data) != n {
				t.Fatalf("%s: read back %d bytes, %v", mode.name, len(raw.Data), err)
			}
		}
	}
}

func TestWriterRejectsInconsistentRaw(t *testing.T) {
	good := func() *Raw {
		var raw Raw
		if err := (&NOPOut{Data: []byte("abcd")}).Encode(&raw); err != nil {
			t.Fatal(err)
		}
		return &raw
	}
	tests := map[string]func(*Raw){
		"DataSegmentLength": func(r *Raw) { r.Data = r.Data[:3] },
		"TotalAHSLength":    func(r *Raw) { r.AHS = []byte{0, 1, 1, 0} },
		"AHS not padded":    func(r *Raw) { r.AHS = []byte{0, 1, 1}; r.BHS.setLengths(0, 4) },
		"AHS too long":      func(r *Raw) { r.AHS = make([]byte, maxAHSLen+4); r.BHS.setLengths(0, 4) },
	}
	for name, spoil := range tests {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		raw := good()
		spoil(raw)
		if err := w.Write(raw); err == nil {
			t.Errorf("%s: Write accepted an inconsistent Raw", name)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: %d bytes written", name, buf.Len())
		}
		if err := w.Write(good()); err != nil {
			t.Errorf("%s: the Writer is unusable after a refused Raw: %v", name, err)
		}
	}
	var raw Raw
	raw.Data = make([]byte, MaxDataSegmentLength+1)
	var le *LengthError
	if err := NewWriter(io.Discard).Write(&raw); !errors.As(err, &le) {
		t.Errorf("oversize data: %v", err)
	}
}

type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		return 0, errors.New("broken pipe")
	}
	w.n--
	return len(p), nil
}

func TestWriterStickyError(t *testing.T) {
	for _, size := range []int{10, smallData + 10} {
		fw := &failingWriter{n: 1}
		w := NewWriter(fw)
		if err := w.WriteMessage(&NOPOut{}); err != nil {
			t.Fatal(err)
		}
		err := w.WriteMessage(&DataOut{Data: make([]byte, size)})
		if err == nil {
			t.Fatalf("size %d: no error from a failing writer", size)
		}
		fw.n = 100
		if err2 := w.WriteMessage(&NOPOut{}); err2 != err {
			t.Errorf("size %d: after a write error: %v", size, err2)
		}
	}
}

func TestWriteMessageEncodeError(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteMessage(&SCSICommand{Read: true, Write: true, CDB: []byte{0}}); err == nil {
		t.Fatal("no error")
	}
	if err := w.WriteMessage(&NOPOut{}); err != nil || buf.Len() != BHSLen {
		t.Errorf("after an encode error: %v, %d bytes", err, buf.Len())
	}
}

// TestTCPLoopback sends large PDUs over a real TCP connection, where the
// Writer uses writev, while the other side reads them.
func TestTCPLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skip("no loopback TCP:", err)
	}
	defer ln.Close()
	data := make([]byte, 300<<10+3)
	for i := range data {
		data[i] = byte(i)
	}
	const count = 8
	errc := make(chan error, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		w := NewWriter(c)
		w.SetDigests(true, true)
		for i := range count {
			if err := w.WriteMessage(&DataIn{DataSN: uint32(i), Data: data[:len(data)-i]}); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := NewReader(c)
	r.SetDigests(true, true)
	r.SetMaxDataSegmentLength(len(data))
	var raw Raw
	var m DataIn
	for i := range count {
		if err := r.Read(&raw); err != nil {
			t.Fatal(err)
		}
		if err := m.Decode(&raw); err != nil || m.DataSN != uint32(i) || !bytes.Equal(m.Data, data[:len(data)-i]) {
			t.Fatalf("PDU %d: DataSN %d, %d bytes, %v", i, m.DataSN, len(m.Data), err)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestNoAllocations(t *testing.T) {
	data := make([]byte, 256<<10)
	msg := &DataIn{Final: true, Data: data}
	var pipe loopBuffer
	w := NewWriter(&pipe)
	r := NewReader(&pipe)
	w.SetDigests(true, true)
	r.SetDigests(true, true)
	r.SetMaxDataSegmentLength(len(data))
	raw := Raw{Data: make([]byte, len(data))}
	var in DataIn
	allocs := testing.AllocsPerRun(20, func() {
		if err := w.WriteMessage(msg); err != nil {
			t.Fatal(err)
		}
		if err := r.Read(&raw); err != nil {
			t.Fatal(err)
		}
		if err := in.Decode(&raw); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per PDU, want 0", allocs)
	}
}

// loopBuffer is a byte queue: what is written is read back. It reuses its
// storage once drained.
type loopBuffer struct {
	b   []byte
	off int
}

func (l *loopBuffer) Write(p []byte) (int, error) {
	if l.off == len(l.b) {
		l.b, l.off = l.b[:0], 0
	}
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *loopBuffer) Read(p []byte) (int, error) {
	if l.off == len(l.b) {
		return 0, io.EOF
	}
	n := copy(p, l.b[l.off:])
	l.off += n
	return n, nil
}

// TestWaitHeaderDeadline: a read deadline that fires while WaitHeader waits
// for the next PDU consumes nothing and is not sticky: the PDU that comes
// later is read whole. WaitHeader between a header and its data segment is
// refused.
func TestWaitHeaderDeadline(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	r := NewReader(client)
	r.SetMaxDataSegmentLength(MaxDataSegmentLength)
	msg := &NOPIn{ITT: 7, TTT: ReservedTag, StatSN: 1, ExpCmdSN: 2, MaxCmdSN: 3, Data: []byte("ping")}
	wire := encodeAll(t, false, false, msg)

	for range 2 {
		_ = client.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if err := r.WaitHeader(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("WaitHeader with nothing sent: %v, want a deadline error", err)
		}
	}
	_ = client.SetReadDeadline(time.Time{})
	go func() { _, _ = server.Write(wire) }()
	if err := r.WaitHeader(); err != nil {
		t.Fatalf("WaitHeader: %v", err)
	}
	if !r.Buffered() {
		t.Fatal("nothing buffered after WaitHeader")
	}
	var raw Raw
	if _, err := r.ReadHeader(&raw.BHS); err != nil {
		t.Fatalf("ReadHeader after a deadline: %v", err)
	}
	if err := r.WaitHeader(); err != errDataPending {
		t.Fatalf("WaitHeader before the data segment: %v, want errDataPending", err)
	}
	raw.Data = make([]byte, raw.BHS.DataSegmentLength())
	if err := r.ReadData(raw.Data); err != nil {
		t.Fatal(err)
	}
	got, err := Decode(&raw)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, msg) {
		t.Fatalf("got %+v, want %+v", got, msg)
	}
}
