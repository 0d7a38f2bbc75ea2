package pdu

// Reject reasons (RFC 7143 §11.17.1).
const (
	RejectDataDigest       = 0x02 // data (payload) digest error
	RejectSNACK            = 0x03 // SNACK Reject
	RejectProtocolError    = 0x04
	RejectNotSupported     = 0x05 // command not supported
	RejectImmediate        = 0x06 // immediate command reject: too many immediate commands
	RejectTaskInProgress   = 0x07
	RejectInvalidDataAck   = 0x08
	RejectInvalidPDUField  = 0x09
	RejectLongOp           = 0x0a // long op reject: can't generate TTT, out of resources
	RejectNegotiationReset = 0x0b // deprecated by RFC 7143, still defined by RFC 3720
	RejectWaitingForLogout = 0x0c
)

var rejectReasons = [...]string{
	RejectDataDigest:       "data digest error",
	RejectSNACK:            "SNACK reject",
	RejectProtocolError:    "protocol error",
	RejectNotSupported:     "command not supported",
	RejectImmediate:        "immediate command reject (too many immediate commands)",
	RejectTaskInProgress:   "task in progress",
	RejectInvalidDataAck:   "invalid data ack",
	RejectInvalidPDUField:  "invalid PDU field",
	RejectLongOp:           "long op reject (can't generate target transfer tag, out of resources)",
	RejectNegotiationReset: "negotiation reset (deprecated)",
	RejectWaitingForLogout: "waiting for logout",
}

// RejectReasonText describes a Reject reason code.
func RejectReasonText(reason uint8) string {
	if int(reason) < len(rejectReasons) && rejectReasons[reason] != "" {
		return rejectReasons[reason]
	}
	return "unknown reject reason 0x" + hexByte(reason)
}

// Reject is the Reject PDU (opcode 0x3f, RFC 7143 §11.17). Its data segment
// holds the complete header of the rejected PDU; its ITT is always
// ReservedTag on the wire.
type Reject struct {
	Reason   uint8
	StatSN   uint32
	ExpCmdSN uint32
	MaxCmdSN uint32
	DataSN   uint32 // DataSN/R2TSN, for a rejected SNACK
	Data     []byte // the rejected header
}

func (m *Reject) Opcode() Opcode { return OpReject }

func (m *Reject) Encode(r *Raw) error {
	h := begin(r, OpReject, false, flagFinal)
	h[2] = m.Reason
	be.PutUint32(h[16:20], ReservedTag)
	h.putStatusSNs(m.StatSN, m.ExpCmdSN, m.MaxCmdSN)
	be.PutUint32(h[36:40], m.DataSN)
	return finish(r, OpReject, m.Data)
}

func (m *Reject) Decode(r *Raw) error {
	if err := expect(r, OpReject); err != nil {
		return err
	}
	h := &r.BHS
	*m = Reject{
		Reason: h[2],
		DataSN: be.Uint32(h[36:40]),
		Data:   dataOf(r),
	}
	m.StatSN, m.ExpCmdSN, m.MaxCmdSN = h.statusSNs()
	return nil
}

// RejectedHeader returns a copy of the rejected PDU's BHS from the data
// segment, which must hold at least 48 bytes.
func (m *Reject) RejectedHeader() (*BHS, error) {
	if len(m.Data) < BHSLen {
		return nil, &ProtocolError{Op: "Reject rejected header", Reason: "data segment shorter than a BHS"}
	}
	h := new(BHS)
	copy(h[:], m.Data)
	return h, nil
}
