package pdu

import (
	"strconv"
	"testing"
)

// BenchmarkDataIn measures Write plus Read and Decode of one Data-In PDU
// through memory, the per-PDU cost of the read path without a socket.
func BenchmarkDataIn(b *testing.B) {
	for _, size := range []int{8 << 10, 256 << 10} {
		for _, mode := range []struct {
			name    string
			digests bool
		}{{"plain", false}, {"digests", true}} {
			b.Run(sizeName(size)+"/"+mode.name, func(b *testing.B) {
				data := make([]byte, size)
				msg := &DataIn{Final: true, StatusPresent: true, ITT: 1, Data: data}
				var pipe loopBuffer
				w := NewWriter(&pipe)
				r := NewReader(&pipe)
				w.SetDigests(mode.digests, mode.digests)
				r.SetDigests(mode.digests, mode.digests)
				r.SetMaxDataSegmentLength(size)
				raw := Raw{Data: make([]byte, size)}
				var in DataIn
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if err := w.WriteMessage(msg); err != nil {
						b.Fatal(err)
					}
					if err := r.Read(&raw); err != nil {
						b.Fatal(err)
					}
					if err := in.Decode(&raw); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkSCSICommand measures encoding and writing a READ(10) command,
// the per-command cost on the send path.
func BenchmarkSCSICommand(b *testing.B) {
	var pipe loopBuffer
	w := NewWriter(&pipe)
	cmd := &SCSICommand{Final: true, Read: true, Attr: AttrSimple, ExpectedDataTransferLength: 1 << 20,
		CDB: []byte{0x28, 0, 0, 0, 0, 0, 0, 0x08, 0, 0}}
	b.ReportAllocs()
	for b.Loop() {
		cmd.CmdSN++
		if err := w.WriteMessage(cmd); err != nil {
			b.Fatal(err)
		}
		pipe.b, pipe.off = pipe.b[:0], 0
	}
}

func sizeName(n int) string {
	return strconv.Itoa(n>>10) + "KiB"
}
