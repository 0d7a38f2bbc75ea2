package pdu

// Message is implemented by every PDU type (pointer receivers).
//
// Encode fills r completely: r.BHS (opcode, I bit, flags, TotalAHSLength,
// DataSegmentLength and all fields; reserved bytes zero), r.AHS (reusing its
// capacity) and r.Data, which aliases the message's Data without a copy.
//
// Decode reads the fields from r. A Data field aliases r.Data (nil when
// r.Data is empty). Decode does not require len(r.Data) to match the
// header's DataSegmentLength, so a session may decode the header first and
// read the data segment straight into its own buffer afterwards; the
// exceptions are methods that interpret the data (SCSIResponse.SenseData,
// Reject.RejectedHeader), which check what is present.
type Message interface {
	Opcode() Opcode
	Encode(r *Raw) error
	Decode(r *Raw) error
}

// Compile-time checks that every PDU type is a Message.
var (
	_ Message = (*SCSICommand)(nil)
	_ Message = (*SCSIResponse)(nil)
	_ Message = (*DataIn)(nil)
	_ Message = (*DataOut)(nil)
	_ Message = (*R2T)(nil)
	_ Message = (*NOPOut)(nil)
	_ Message = (*NOPIn)(nil)
	_ Message = (*LoginReq)(nil)
	_ Message = (*LoginResp)(nil)
	_ Message = (*TextReq)(nil)
	_ Message = (*TextResp)(nil)
	_ Message = (*LogoutReq)(nil)
	_ Message = (*LogoutResp)(nil)
	_ Message = (*TaskMgmtReq)(nil)
	_ Message = (*TaskMgmtResp)(nil)
	_ Message = (*AsyncMsg)(nil)
	_ Message = (*Reject)(nil)
	_ Message = (*SNACKReq)(nil)
)

// NewMessage returns a fresh zero value of the PDU type for op, or nil for an
// opcode this package does not implement.
func NewMessage(op Opcode) Message {
	switch op {
	case OpNOPOut:
		return new(NOPOut)
	case OpSCSICommand:
		return new(SCSICommand)
	case OpTaskMgmtReq:
		return new(TaskMgmtReq)
	case OpLoginReq:
		return new(LoginReq)
	case OpTextReq:
		return new(TextReq)
	case OpDataOut:
		return new(DataOut)
	case OpLogoutReq:
		return new(LogoutReq)
	case OpSNACKReq:
		return new(SNACKReq)
	case OpNOPIn:
		return new(NOPIn)
	case OpSCSIResponse:
		return new(SCSIResponse)
	case OpTaskMgmtResp:
		return new(TaskMgmtResp)
	case OpLoginResp:
		return new(LoginResp)
	case OpTextResp:
		return new(TextResp)
	case OpDataIn:
		return new(DataIn)
	case OpLogoutResp:
		return new(LogoutResp)
	case OpR2T:
		return new(R2T)
	case OpAsyncMsg:
		return new(AsyncMsg)
	case OpReject:
		return new(Reject)
	}
	return nil
}

// Decode decodes r into a fresh value of the type its opcode names. An
// unknown opcode gives a *ProtocolError.
func Decode(r *Raw) (Message, error) {
	op := r.BHS.Opcode()
	m := NewMessage(op)
	if m == nil {
		return nil, &ProtocolError{Op: "decode", Reason: "unknown " + op.String()}
	}
	if err := m.Decode(r); err != nil {
		return nil, err
	}
	return m, nil
}

// Byte 1 flag bits shared by several PDU types.
const (
	flagFinal    = 0x80 // F
	flagContinue = 0x40 // C (Login, Text)
	flagTransit  = 0x80 // T (Login)
)

// begin starts encoding a PDU into r: zeroes the BHS, sets the opcode, the I
// bit and byte 1, and empties the AHS and data.
func begin(r *Raw, op Opcode, immediate bool, byte1 byte) *BHS {
	h := &r.BHS
	*h = BHS{}
	h.setOpcode(op, immediate)
	h[1] = byte1
	r.AHS = r.AHS[:0]
	r.Data = nil
	return h
}

// finish sets the data segment of an encoded PDU and the two length fields.
func finish(r *Raw, op Opcode, data []byte) error {
	if len(data) > MaxDataSegmentLength {
		return &ProtocolError{Op: "encode " + op.String(), Reason: "data segment longer than 2^24-1 bytes"}
	}
	if len(data) > 0 {
		r.Data = data
	}
	r.BHS.setLengths(len(r.AHS), len(data))
	return nil
}

// expect checks that r holds a PDU with opcode op.
func expect(r *Raw, op Opcode) error {
	if got := r.BHS.Opcode(); got != op {
		return &ProtocolError{Op: "decode " + op.String(), Reason: "PDU has " + got.String()}
	}
	return nil
}

// expectBare checks the opcode of a PDU type that RFC 7143 defines without AHS
// or data segment (both lengths MUST be 0).
func expectBare(r *Raw, op Opcode) error {
	if err := expect(r, op); err != nil {
		return err
	}
	if r.BHS.TotalAHSLength() != 0 || r.BHS.DataSegmentLength() != 0 {
		return &ProtocolError{Op: "decode " + op.String(), Reason: "TotalAHSLength and DataSegmentLength must be 0"}
	}
	return nil
}

// dataOf returns r.Data, or nil when it is empty.
func dataOf(r *Raw) []byte {
	if len(r.Data) == 0 {
		return nil
	}
	return r.Data
}

// rangeError reports a field value that does not fit its bits.
func rangeError(op Opcode, field string) error {
	return &ProtocolError{Op: "encode " + op.String(), Reason: field + " out of range"}
}

// bitIf returns bit when set is true, else 0.
func bitIf(set bool, bit byte) byte {
	if set {
		return bit
	}
	return 0
}

// padLen is the number of zero bytes that pad n bytes to a multiple of 4.
func padLen(n int) int { return -n & 3 }
