package pdu

// Task attributes of a SCSI Command (RFC 7143 §11.3.1, ATTR field).
const (
	AttrUntagged    = 0
	AttrSimple      = 1
	AttrOrdered     = 2
	AttrHeadOfQueue = 3
	AttrACA         = 4
)

// MaxCDBLength is the longest CDB SCSICommand encodes (a variable-length CDB
// of SPC-4 is at most 260 bytes).
const MaxCDBLength = 260

// cdbField is the size of the CDB field in the BHS (bytes 32–47).
const cdbField = 16

// SCSICommand is the SCSI Command PDU (opcode 0x01, RFC 7143 §11.3).
//
// A CDB of up to 16 bytes is carried in the BHS, zero padded; a longer one
// spills into an Extended CDB AHS. The CDB length is not on the wire, so
// Decode returns the whole 16-byte CDB field followed by any extended bytes.
type SCSICommand struct {
	Immediate                  bool
	Final                      bool
	Read                       bool
	Write                      bool
	Attr                       uint8 // task attribute, AttrSimple normally
	LUN                        [8]byte
	ITT                        uint32
	ExpectedDataTransferLength uint32
	CmdSN                      uint32
	ExpStatSN                  uint32
	CDB                        []byte
	Data                       []byte // immediate data
}

const (
	cmdFlagRead  = 0x40
	cmdFlagWrite = 0x20
	attrMask     = 0x07
)

func (m *SCSICommand) Opcode() Opcode { return OpSCSICommand }

func (m *SCSICommand) Encode(r *Raw) error {
	switch {
	case m.Read && m.Write:
		return &ProtocolError{Op: "encode SCSI Command", Reason: "bidirectional commands (R and W) are not supported"}
	case m.Attr > attrMask:
		return rangeError(OpSCSICommand, "task attribute")
	case len(m.CDB) == 0:
		return &ProtocolError{Op: "encode SCSI Command", Reason: "empty CDB"}
	case len(m.CDB) > MaxCDBLength:
		return rangeError(OpSCSICommand, "CDB length")
	}
	flags := m.Attr | bitIf(m.Final, flagFinal) | bitIf(m.Read, cmdFlagRead) | bitIf(m.Write, cmdFlagWrite)
	h := begin(r, OpSCSICommand, m.Immediate, flags)
	copy(h[8:16], m.LUN[:])
	be.PutUint32(h[16:20], m.ITT)
	be.PutUint32(h[20:24], m.ExpectedDataTransferLength)
	h.putCommandSNs(m.CmdSN, m.ExpStatSN)
	copy(h[32:48], m.CDB)
	if len(m.CDB) > cdbField {
		// Cannot fail: MaxCDBLength-16 is far below maxAHSData.
		r.AHS, _ = AppendAHS(r.AHS, AHS{Type: AHSExtendedCDB, Data: m.CDB[cdbField:]})
	}
	return finish(r, OpSCSICommand, m.Data)
}

func (m *SCSICommand) Decode(r *Raw) error {
	if err := expect(r, OpSCSICommand); err != nil {
		return err
	}
	h := &r.BHS
	var ext []byte
	for rest := r.AHS; len(rest) > 0; {
		a, next, err := nextAHS(rest)
		if err != nil {
			return err
		}
		if a.Type&0x3f == AHSExtendedCDB {
			if ext != nil {
				return &ProtocolError{Op: "decode SCSI Command", Reason: "more than one Extended CDB AHS"}
			}
			ext = a.Data
			if ext == nil {
				ext = []byte{}
			}
		}
		rest = next
	}
	*m = SCSICommand{
		Immediate:                  h.Immediate(),
		Final:                      h[1]&flagFinal != 0,
		Read:                       h[1]&cmdFlagRead != 0,
		Write:                      h[1]&cmdFlagWrite != 0,
		Attr:                       h[1] & attrMask,
		LUN:                        h.LUN(),
		ITT:                        h.ITT(),
		ExpectedDataTransferLength: be.Uint32(h[20:24]),
		Data:                       dataOf(r),
	}
	m.CmdSN, m.ExpStatSN = h.commandSNs()
	m.CDB = make([]byte, 0, cdbField+len(ext))
	m.CDB = append(append(m.CDB, h[32:48]...), ext...)
	return nil
}

// SCSI Response codes (RFC 7143 §11.4.3).
const (
	RespCommandCompleted = 0x00
	RespTargetFailure    = 0x01
)

// SCSIResponse is the SCSI Response PDU (opcode 0x21, RFC 7143 §11.4).
type SCSIResponse struct {
	BidiOverflow          bool // o
	BidiUnderflow         bool // u
	Overflow              bool // O
	Underflow             bool // U
	Response              uint8
	Status                uint8
	ITT                   uint32
	SNACKTag              uint32
	StatSN                uint32
	ExpCmdSN              uint32
	MaxCmdSN              uint32
	ExpDataSN             uint32
	BidiReadResidualCount uint32
	ResidualCount         uint32
	Data                  []byte // SenseLength (2 bytes) + sense data, then response data
}

const (
	respFlagBidiOverflow  = 0x10
	respFlagBidiUnderflow = 0x08
	flagOverflow          = 0x04 // O in SCSI Response and Data-In
	flagUnderflow         = 0x02 // U in SCSI Response and Data-In
)

func (m *SCSIResponse) Opcode() Opcode { return OpSCSIResponse }

func (m *SCSIResponse) Encode(r *Raw) error {
	flags := flagFinal | bitIf(m.BidiOverflow, respFlagBidiOverflow) | bitIf(m.BidiUnderflow, respFlagBidiUnderflow) |
		bitIf(m.Overflow, flagOverflow) | bitIf(m.Underflow, flagUnderflow)
	h := begin(r, OpSCSIResponse, false, flags)
	h[2] = m.Response
	h[3] = m.Status
	be.PutUint32(h[16:20], m.ITT)
	be.PutUint32(h[20:24], m.SNACKTag)
	h.putStatusSNs(m.StatSN, m.ExpCmdSN, m.MaxCmdSN)
	be.PutUint32(h[36:40], m.ExpDataSN)
	be.PutUint32(h[40:44], m.BidiReadResidualCount)
	be.PutUint32(h[44:48], m.ResidualCount)
	return finish(r, OpSCSIResponse, m.Data)
}

func (m *SCSIResponse) Decode(r *Raw) error {
	if err := expect(r, OpSCSIResponse); err != nil {
		return err
	}
	h := &r.BHS
	*m = SCSIResponse{
		BidiOverflow:          h[1]&respFlagBidiOverflow != 0,
		BidiUnderflow:         h[1]&respFlagBidiUnderflow != 0,
		Overflow:              h[1]&flagOverflow != 0,
		Underflow:             h[1]&flagUnderflow != 0,
		Response:              h[2],
		Status:                h[3],
		ITT:                   h.ITT(),
		SNACKTag:              be.Uint32(h[20:24]),
		ExpDataSN:             be.Uint32(h[36:40]),
		BidiReadResidualCount: be.Uint32(h[40:44]),
		ResidualCount:         be.Uint32(h[44:48]),
		Data:                  dataOf(r),
	}
	m.StatSN, m.ExpCmdSN, m.MaxCmdSN = h.statusSNs()
	return nil
}

// SenseData returns the sense bytes of the data segment (RFC 7143 §11.4.7:
// a 2-byte SenseLength, then the sense data). It returns nil, nil when there
// is no data segment or SenseLength is 0, and an error when SenseLength
// promises more bytes than the segment holds. The result aliases m.Data.
func (m *SCSIResponse) SenseData() ([]byte, error) {
	if len(m.Data) == 0 {
		return nil, nil
	}
	if len(m.Data) < 2 {
		return nil, &ProtocolError{Op: "SCSI Response sense data", Reason: "data segment shorter than SenseLength"}
	}
	n := int(be.Uint16(m.Data[0:2]))
	if n == 0 {
		return nil, nil
	}
	if 2+n > len(m.Data) {
		return nil, &ProtocolError{Op: "SCSI Response sense data", Reason: "SenseLength exceeds the data segment"}
	}
	return m.Data[2 : 2+n : 2+n], nil
}

// SetSenseData sets Data to a SenseLength field followed by sense (at most
// 65535 bytes; longer sense is truncated).
func (m *SCSIResponse) SetSenseData(sense []byte) {
	if len(sense) > 0xffff {
		sense = sense[:0xffff]
	}
	d := make([]byte, 2+len(sense))
	be.PutUint16(d, uint16(len(sense)))
	copy(d[2:], sense)
	m.Data = d
}
