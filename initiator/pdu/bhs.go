package pdu

import "encoding/binary"

// Opcode is the 6-bit operation code in byte 0 of the BHS.
type Opcode uint8

// Initiator opcodes (RFC 7143 §11.1.1).
const (
	OpNOPOut      Opcode = 0x00
	OpSCSICommand Opcode = 0x01
	OpTaskMgmtReq Opcode = 0x02
	OpLoginReq    Opcode = 0x03
	OpTextReq     Opcode = 0x04
	OpDataOut     Opcode = 0x05
	OpLogoutReq   Opcode = 0x06
	OpSNACKReq    Opcode = 0x10
)

// Target opcodes (RFC 7143 §11.1.2).
const (
	OpNOPIn        Opcode = 0x20
	OpSCSIResponse Opcode = 0x21
	OpTaskMgmtResp Opcode = 0x22
	OpLoginResp    Opcode = 0x23
	OpTextResp     Opcode = 0x24
	OpDataIn       Opcode = 0x25
	OpLogoutResp   Opcode = 0x26
	OpR2T          Opcode = 0x31
	OpAsyncMsg     Opcode = 0x32
	OpReject       Opcode = 0x3f
)

// BHSLen is the size of the Basic Header Segment.
const BHSLen = 48

// ReservedTag is the tag value 0xffffffff that RFC 7143 reserves
// ("no task" for ITT, "no transfer" for TTT).
const ReservedTag uint32 = 0xffffffff

// MaxDataSegmentLength is the largest DataSegmentLength the 24-bit field can
// carry; the negotiated limit is always smaller or equal.
const MaxDataSegmentLength = 1<<24 - 1

// BHS is a raw Basic Header Segment. Field accessors cover the bytes that have
// the same meaning in every PDU; opcode-specific fields live in the PDU types.
type BHS [BHSLen]byte

func (h *BHS) Opcode() Opcode      { return Opcode(h[0] & 0x3f) }
func (h *BHS) Immediate() bool     { return h[0]&0x40 != 0 }
func (h *BHS) Final() bool         { return h[1]&0x80 != 0 }
func (h *BHS) TotalAHSLength() int { return int(h[4]) * 4 }
func (h *BHS) DataSegmentLength() int {
	return int(h[5])<<16 | int(h[6])<<8 | int(h[7])
}
func (h *BHS) ITT() uint32 { return binary.BigEndian.Uint32(h[16:20]) }

func (h *BHS) setOpcode(op Opcode, immediate bool) {
	h[0] = byte(op) & 0x3f
	if immediate {
		h[0] |= 0x40
	}
}

func (h *BHS) setLengths(ahsBytes, dataLen int) {
	h[4] = byte(ahsBytes / 4)
	h[5] = byte(dataLen >> 16)
	h[6] = byte(dataLen >> 8)
	h[7] = byte(dataLen)
}

// Raw is one whole PDU: header, additional header segments and the data
// segment without padding or digests. Encode methods fill a Raw; Decode methods
// read one. Data may alias a caller's buffer.
type Raw struct {
	BHS  BHS
	AHS  []byte
	Data []byte
}
