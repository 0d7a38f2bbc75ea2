package pdu

import (
	"bufio"
	"fmt"
	"hash/crc32"
	"io"
)

// DefaultMaxRecvDataSegmentLength is the MaxRecvDataSegmentLength that applies
// until one is declared (RFC 7143 §13.12).
const DefaultMaxRecvDataSegmentLength = 8192

// readBufferSize is the size of the Reader's bufio buffer. Data segments at
// least this long are read straight into the caller's buffer.
const readBufferSize = 64 << 10

var errDataPending = &ProtocolError{Op: "read header", Reason: "the data segment of the previous PDU was not consumed"}

// Reader frames PDUs on a byte stream: ReadHeader, then ReadData or
// DiscardData for the data segment, or Read for a whole PDU. It checks
// digests and bounds every length before using it. A Reader is not safe for
// concurrent use.
//
// I/O errors, header digest errors and a *LengthError leave the stream
// unframed; they are returned again by every later call. A data digest error
// consumes the data segment, so the next ReadHeader can proceed.
type Reader struct {
	br      *bufio.Reader
	hdigest bool
	ddigest bool
	maxData int
	pending int   // DataSegmentLength of the last header, until consumed
	err     error // sticky error: the stream can no longer be framed
	ahs     [maxAHSLen]byte
	scratch [3 + DigestLen]byte // padding and a digest
}

// NewReader returns a Reader on r with a 64 KiB buffer, digests off and a
// data segment limit of DefaultMaxRecvDataSegmentLength.
func NewReader(r io.Reader) *Reader {
	return &Reader{
		br:      bufio.NewReaderSize(r, readBufferSize),
		maxData: DefaultMaxRecvDataSegmentLength,
	}
}

// SetDigests turns CRC32C header and data digests on or off for the PDUs
// read from now on (digests start after the final Login Response).
func (r *Reader) SetDigests(header, data bool) {
	r.hdigest, r.ddigest = header, data
}

// SetMaxDataSegmentLength sets the largest DataSegmentLength accepted from
// now on, normally the MaxRecvDataSegmentLength we declared. It is clamped to
// 0..MaxDataSegmentLength.
func (r *Reader) SetMaxDataSegmentLength(n int) {
	r.maxData = min(max(n, 0), MaxDataSegmentLength)
}

func (r *Reader) fail(err error) error {
	r.err = err
	return err
}

// readFull fills b from the stream. The stream is inside a PDU, so an EOF is
// io.ErrUnexpectedEOF.
func (r *Reader) readFull(b []byte) error {
	if _, err := io.ReadFull(r.br, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return r.fail(err)
	}
	return nil
}

// ReadHeader reads the next BHS into h, then its AHS and header digest. The
// returned AHS bytes (nil when there are none) stay valid until the next
// ReadHeader. After it, the data segment (h.DataSegmentLength() bytes) must
// be consumed with ReadData or DiscardData before the next ReadHeader.
//
// A stream that ends cleanly before a header gives io.EOF; one that ends
// inside a PDU gives io.ErrUnexpectedEOF. A DataSegmentLength over the limit
// gives a *LengthError, a header digest mismatch a *DigestError.
func (r *Reader) ReadHeader(h *BHS) (ahs []byte, err error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.pending > 0 {
		return nil, errDataPending
	}
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return nil, r.fail(err)
	}
	n := h.TotalAHSLength()
	ahs = r.ahs[:n:n]
	if err := r.readFull(ahs); err != nil {
		return nil, err
	}
	if r.hdigest {
		d := r.scratch[:DigestLen]
		if err := r.readFull(d); err != nil {
			return nil, err
		}
		got := getDigest(d)
		want := crc32.Update(crc32.Update(0, castagnoli, h[:]), castagnoli, ahs)
		if got != want {
			return nil, r.fail(&DigestError{Header: true, Got: got, Want: want})
		}
	}
	if dl := h.DataSegmentLength(); dl > r.maxData {
		return nil, r.fail(&LengthError{Length: dl, Limit: r.maxData})
	}
	r.pending = h.DataSegmentLength()
	if n == 0 {
		return nil, nil
	}
	return ahs, nil
}

// WaitHeader waits until the next PDU has begun to arrive, consuming
// nothing: an error from the underlying reader here (a read deadline, for
// one) leaves the stream framed, and the same error is not returned again.
// Any other error than the underlying reader's is the sticky one.
func (r *Reader) WaitHeader() error {
	if r.err != nil {
		return r.err
	}
	if r.pending > 0 {
		return errDataPending
	}
	_, err := r.br.Peek(1)
	return err
}

// Buffered reports whether bytes of the stream are already read from the
// underlying reader and waiting here.
func (r *Reader) Buffered() bool { return r.br.Buffered() > 0 }

// ReadData reads the data segment of the last header into dst, whose length
// must equal that header's DataSegmentLength, then skips the padding and
// checks the data digest. On a *DigestError dst holds the bytes received and
// the stream is ready for the next header.
func (r *Reader) ReadData(dst []byte) error {
	if r.err != nil {
		return r.err
	}
	if len(dst) != r.pending {
		return &ProtocolError{Op: "read data", Reason: fmt.Sprintf("buffer of %d bytes for a data segment of %d bytes", len(dst), r.pending)}
	}
	if len(dst) == 0 {
		return nil
	}
	r.pending = 0
	if err := r.readFull(dst); err != nil {
		return err
	}
	var crc uint32
	if r.ddigest {
		crc = crc32.Update(0, castagnoli, dst)
	}
	return r.readTrailer(len(dst), crc)
}

// DiscardData consumes the data segment of the last header without keeping
// it. It still checks the data digest.
func (r *Reader) DiscardData() error {
	if r.err != nil {
		return r.err
	}
	n := r.pending
	if n == 0 {
		return nil
	}
	r.pending = 0
	if !r.ddigest {
		if _, err := r.br.Discard(n + padLen(n)); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return r.fail(err)
		}
		return nil
	}
	var crc uint32
	for rest := n; rest > 0; {
		b, err := r.br.Peek(min(rest, r.br.Size()))
		crc = crc32.Update(crc, castagnoli, b)
		rest -= len(b)
		_, _ = r.br.Discard(len(b)) // cannot fail: the bytes are buffered
		if err != nil && rest > 0 {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return r.fail(err)
		}
	}
	return r.readTrailer(n, crc)
}

// readTrailer consumes the padding and data digest after a data segment of n
// bytes whose CRC so far is crc.
func (r *Reader) readTrailer(n int, crc uint32) error {
	pad := padLen(n)
	k := pad
	if r.ddigest {
		k += DigestLen
	}
	if k == 0 {
		return nil
	}
	t := r.scratch[:k]
	if err := r.readFull(t); err != nil {
		return err
	}
	if !r.ddigest {
		return nil
	}
	crc = crc32.Update(crc, castagnoli, t[:pad])
	if got := getDigest(t[pad:]); got != crc {
		return &DigestError{Got: got, Want: crc}
	}
	return nil
}

// Read reads a whole PDU into raw. raw.AHS and raw.Data reuse their capacity
// when it is large enough.
func (r *Reader) Read(raw *Raw) error {
	ahs, err := r.ReadHeader(&raw.BHS)
	if err != nil {
		return err
	}
	raw.AHS = append(raw.AHS[:0], ahs...)
	n := raw.BHS.DataSegmentLength()
	if cap(raw.Data) >= n {
		raw.Data = raw.Data[:n]
	} else {
		raw.Data = make([]byte, n)
	}
	return r.ReadData(raw.Data)
}
