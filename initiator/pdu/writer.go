package pdu

import (
	"hash/crc32"
	"io"
	"net"
)

// smallData is the largest data segment the Writer copies next to the header
// so that the whole PDU goes out in one Write call; larger data segments are
// written in place with net.Buffers (writev on a TCP connection).
const smallData = 8 << 10

// SegmentWriter is a destination that takes each PDU as three pieces: the
// header (BHS, AHS, header digest), the data segment and the trailer
// (padding, data digest). head and trailer are the Writer's buffers, valid
// only during the call; data is the caller's. A Writer on a SegmentWriter
// copies no data segment: the destination chooses what to copy (a send
// queue that batches PDUs copies anyway, so a copy here would be a second).
type SegmentWriter interface {
	WriteSegments(head, data, trailer []byte) error
}

// Writer writes PDUs to a byte stream with padding and optional digests. It
// is not safe for concurrent use: the caller serialises writes. After a write
// error the stream may hold a partial PDU, so every later call returns that
// error.
type Writer struct {
	w       io.Writer
	sw      SegmentWriter // w, if it is one
	hdigest bool
	ddigest bool
	err     error
	buf     [BHSLen + maxAHSLen + DigestLen + smallData + 3 + DigestLen]byte
	trailer [3 + DigestLen]byte
	vec     [3][]byte
	bufs    net.Buffers
	raw     Raw // WriteMessage's encoding buffer
}

// NewWriter returns a Writer on w with digests off.
func NewWriter(w io.Writer) *Writer {
	sw, _ := w.(SegmentWriter)
	return &Writer{w: w, sw: sw}
}

// SetDigests turns CRC32C header and data digests on or off for the PDUs
// written from now on.
func (w *Writer) SetDigests(header, data bool) {
	w.hdigest, w.ddigest = header, data
}

// checkRaw verifies that the BHS length fields describe raw's AHS and Data.
func checkRaw(raw *Raw) error {
	switch {
	case len(raw.AHS) > maxAHSLen || len(raw.AHS)%4 != 0:
		return &ProtocolError{Op: "write", Reason: "AHS longer than 1020 bytes or not a multiple of 4"}
	case raw.BHS.TotalAHSLength() != len(raw.AHS):
		return &ProtocolError{Op: "write", Reason: "TotalAHSLength does not match the AHS"}
	case len(raw.Data) > MaxDataSegmentLength:
		return &LengthError{Length: len(raw.Data), Limit: MaxDataSegmentLength}
	case raw.BHS.DataSegmentLength() != len(raw.Data):
		return &ProtocolError{Op: "write", Reason: "DataSegmentLength does not match the data"}
	}
	return nil
}

// Write writes raw: BHS, AHS, header digest, data, zero padding and data
// digest. The BHS length fields must match raw.AHS and raw.Data (Encode sets
// them). A large data segment is not copied.
func (w *Writer) Write(raw *Raw) error {
	if w.err != nil {
		return w.err
	}
	if err := checkRaw(raw); err != nil {
		return err
	}
	n := copy(w.buf[:], raw.BHS[:])
	n += copy(w.buf[n:], raw.AHS)
	if w.hdigest {
		putDigest(w.buf[n:], crc32.Checksum(w.buf[:n], castagnoli))
		n += DigestLen
	}
	var err error
	if w.sw != nil {
		t := w.putTrailer(w.trailer[:], raw.Data)
		err = w.sw.WriteSegments(w.buf[:n], raw.Data, w.trailer[:t])
	} else if len(raw.Data) <= smallData {
		n += copy(w.buf[n:], raw.Data)
		n += w.putTrailer(w.buf[n:], raw.Data)
		_, err = w.w.Write(w.buf[:n])
	} else {
		t := w.putTrailer(w.trailer[:], raw.Data)
		w.vec = [3][]byte{w.buf[:n], raw.Data, w.trailer[:t]}
		w.bufs = w.vec[:]
		_, err = w.bufs.WriteTo(w.w)
		w.vec = [3][]byte{} // do not keep the caller's data alive
		w.bufs = nil
	}
	if err != nil {
		w.err = err
	}
	return err
}

// putTrailer writes the padding and data digest that follow data into dst
// and returns their length.
func (w *Writer) putTrailer(dst []byte, data []byte) int {
	if len(data) == 0 {
		return 0
	}
	pad := padLen(len(data))
	clear(dst[:pad])
	if !w.ddigest {
		return pad
	}
	crc := crc32.Update(crc32.Checksum(data, castagnoli), castagnoli, dst[:pad])
	putDigest(dst[pad:], crc)
	return pad + DigestLen
}

// WriteMessage encodes m and writes it.
func (w *Writer) WriteMessage(m Message) error {
	if err := m.Encode(&w.raw); err != nil {
		return err
	}
	err := w.Write(&w.raw)
	w.raw.Data = nil
	return err
}
