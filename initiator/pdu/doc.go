// Package pdu is the iSCSI wire format (RFC 7143 §11): one Go type per PDU
// with Encode/Decode, the 48-byte Basic Header Segment, AHS, padding, CRC32C
// digests, framing on a byte stream, and the key=value text format (§6.1).
//
// Decoders never trust a length from the wire: every length is checked against
// the bytes present and against the negotiated limits before it is used.
//
// Every PDU type implements Message. Encode fills a Raw (header, AHS and a
// data segment that aliases the message's Data); a Writer puts a Raw on the
// wire with padding and digests, in one Write call for small PDUs and without
// copying large data segments. A Reader frames the incoming stream: ReadHeader
// returns the BHS and AHS so that a session can Decode the header and then
// ReadData straight into the buffer of the task it belongs to; Read reads a
// whole PDU into a reusable Raw. Neither path allocates per PDU.
//
// Errors are typed: *ProtocolError (malformed or unencodable PDU),
// *LengthError (a data segment over the limit) and *DigestError (CRC32C
// mismatch), all usable with errors.As.
package pdu
