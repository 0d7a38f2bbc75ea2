// Package pdu is the iSCSI wire format (RFC 7143 §11): one Go type per PDU
// with Encode/Decode, the 48-byte Basic Header Segment, AHS, padding, CRC32C
// digests, framing on a byte stream, and the key=value text format (§6.1).
//
// Decoders never trust a length from the wire: every length is checked against
// the bytes present and against the negotiated limits before it is used.
package pdu
