package pdu

import "fmt"

// ProtocolError reports a PDU that violates RFC 7143 (wrong opcode for the
// type, a field out of range, a malformed AHS, ...) or a Message that cannot
// be encoded. Op names what was being done, e.g. "decode SCSI Response".
type ProtocolError struct {
	Op     string
	Reason string
}

func (e *ProtocolError) Error() string {
	return "iscsi pdu: " + e.Op + ": " + e.Reason
}

// LengthError reports a DataSegmentLength larger than the allowed limit. When
// the Reader returns it, the rest of the stream cannot be framed: the
// connection must be closed.
type LengthError struct {
	Length int
	Limit  int
}

func (e *LengthError) Error() string {
	return fmt.Sprintf("iscsi pdu: data segment length %d exceeds limit %d", e.Length, e.Limit)
}

// DigestError reports a CRC32C mismatch. Header is true for a header digest
// (the PDU's lengths cannot be trusted: close the connection) and false for a
// data digest (the data segment was consumed; the stream is still framed).
type DigestError struct {
	Header bool
	Got    uint32 // digest found on the wire
	Want   uint32 // digest computed over the bytes received
}

func (e *DigestError) Error() string {
	kind := "data"
	if e.Header {
		kind = "header"
	}
	return fmt.Sprintf("iscsi pdu: %s digest mismatch: got 0x%08x, computed 0x%08x", kind, e.Got, e.Want)
}
