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

var opcodeNames = [64]string{
	OpNOPOut:       "NOP-Out",
	OpSCSICommand:  "SCSI Command",
	OpTaskMgmtReq:  "Task Management Function Request",
	OpLoginReq:     "Login Request",
	OpTextReq:      "Text Request",
	OpDataOut:      "SCSI Data-Out",
	OpLogoutReq:    "Logout Request",
	OpSNACKReq:     "SNACK Request",
	OpNOPIn:        "NOP-In",
	OpSCSIResponse: "SCSI Response",
	OpTaskMgmtResp: "Task Management Function Response",
	OpLoginResp:    "Login Response",
	OpTextResp:     "Text Response",
	OpDataIn:       "SCSI Data-In",
	OpLogoutResp:   "Logout Response",
	OpR2T:          "Ready To Transfer",
	OpAsyncMsg:     "Asynchronous Message",
	OpReject:       "Reject",
}

// String returns the RFC 7143 name of the opcode, or "opcode 0xNN" for an
// opcode this package does not know.
func (op Opcode) String() string {
	if int(op) < len(opcodeNames) && opcodeNames[op] != "" {
		return opcodeNames[op]
	}
	return "opcode 0x" + hexByte(byte(op))
}

// hexByte formats b as two lower-case hex digits.
func hexByte(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&0xf]})
}

// LUN returns the 8-byte LUN field (bytes 8–15). Not every opcode carries a
// LUN there; see the PDU types.
func (h *BHS) LUN() [8]byte { return [8]byte(h[8:16]) }

// be is the byte order of every integer field in the BHS.
var be = binary.BigEndian

// statusSNs reads StatSN, ExpCmdSN and MaxCmdSN (bytes 24–35), where every
// target PDU that carries them keeps them.
func (h *BHS) statusSNs() (statSN, expCmdSN, maxCmdSN uint32) {
	return be.Uint32(h[24:28]), be.Uint32(h[28:32]), be.Uint32(h[32:36])
}

func (h *BHS) putStatusSNs(statSN, expCmdSN, maxCmdSN uint32) {
	be.PutUint32(h[24:28], statSN)
	be.PutUint32(h[28:32], expCmdSN)
	be.PutUint32(h[32:36], maxCmdSN)
}

// commandSNs reads CmdSN and ExpStatSN (bytes 24–31) of an initiator request.
func (h *BHS) commandSNs() (cmdSN, expStatSN uint32) {
	return be.Uint32(h[24:28]), be.Uint32(h[28:32])
}

func (h *BHS) putCommandSNs(cmdSN, expStatSN uint32) {
	be.PutUint32(h[24:28], cmdSN)
	be.PutUint32(h[28:32], expStatSN)
}

// tags reads the LUN, ITT and TTT (bytes 8–23) of the PDUs that carry all
// three there.
func (h *BHS) tags() (lun [8]byte, itt, ttt uint32) {
	return h.LUN(), h.ITT(), be.Uint32(h[20:24])
}

func (h *BHS) putTags(lun [8]byte, itt, ttt uint32) {
	copy(h[8:16], lun[:])
	be.PutUint32(h[16:20], itt)
	be.PutUint32(h[20:24], ttt)
}
