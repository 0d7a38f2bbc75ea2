package pdu

import "hash/crc32"

// castagnoli is the CRC32C table; hash/crc32 uses the SSE4.2/ARMv8 CRC
// instructions for it where the CPU has them.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// DigestLen is the size of a header or data digest on the wire.
const DigestLen = 4

// CRC32C returns the iSCSI digest (RFC 7143 §13.1: CRC32C, reflected, initial
// value and final XOR 0xffffffff) of the concatenation of parts. On the wire
// the digest is sent least significant byte first: the digest of 32 zero bytes
// is 0x8a9136aa and appears as aa 36 91 8a, as in the CRC examples
// appendix of the RFC.
func CRC32C(parts ...[]byte) uint32 {
	var crc uint32
	for _, p := range parts {
		crc = crc32.Update(crc, castagnoli, p)
	}
	return crc
}

// putDigest stores crc in wire byte order.
func putDigest(b []byte, crc uint32) {
	_ = b[3]
	b[0] = byte(crc)
	b[1] = byte(crc >> 8)
	b[2] = byte(crc >> 16)
	b[3] = byte(crc >> 24)
}

// getDigest reads a digest in wire byte order.
func getDigest(b []byte) uint32 {
	_ = b[3]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
