package pdu

// DataIn is the SCSI Data-In PDU (opcode 0x25, RFC 7143 §11.7). With
// StatusPresent (the S bit) it also carries the command's status, StatSN and
// residual; without it those fields are reserved.
type DataIn struct {
	Final         bool
	Acknowledge   bool
	Overflow      bool
	Underflow     bool
	StatusPresent bool
	Status        uint8
	LUN           [8]byte
	ITT           uint32
	TTT           uint32
	StatSN        uint32
	ExpCmdSN      uint32
	MaxCmdSN      uint32
	DataSN        uint32
	BufferOffset  uint32
	ResidualCount uint32
	Data          []byte
}

const (
	dataInFlagAck    = 0x40 // A
	dataInFlagStatus = 0x01 // S
)

func (m *DataIn) Opcode() Opcode { return OpDataIn }

func (m *DataIn) Encode(r *Raw) error {
	if m.StatusPresent && !m.Final {
		return &ProtocolError{Op: "encode SCSI Data-In", Reason: "S bit without F bit"}
	}
	flags := bitIf(m.Final, flagFinal) | bitIf(m.Acknowledge, dataInFlagAck) | bitIf(m.Overflow, flagOverflow) |
		bitIf(m.Underflow, flagUnderflow) | bitIf(m.StatusPresent, dataInFlagStatus)
	h := begin(r, OpDataIn, false, flags)
	h[3] = m.Status
	h.putTags(m.LUN, m.ITT, m.TTT)
	h.putStatusSNs(m.StatSN, m.ExpCmdSN, m.MaxCmdSN)
	be.PutUint32(h[36:40], m.DataSN)
	be.PutUint32(h[40:44], m.BufferOffset)
	be.PutUint32(h[44:48], m.ResidualCount)
	return finish(r, OpDataIn, m.Data)
}

func (m *DataIn) Decode(r *Raw) error {
	if err := expect(r, OpDataIn); err != nil {
		return err
	}
	h := &r.BHS
	*m = DataIn{
		Final:         h[1]&flagFinal != 0,
		Acknowledge:   h[1]&dataInFlagAck != 0,
		Overflow:      h[1]&flagOverflow != 0,
		Underflow:     h[1]&flagUnderflow != 0,
		StatusPresent: h[1]&dataInFlagStatus != 0,
		Status:        h[3],
		DataSN:        be.Uint32(h[36:40]),
		BufferOffset:  be.Uint32(h[40:44]),
		ResidualCount: be.Uint32(h[44:48]),
		Data:          dataOf(r),
	}
	m.LUN, m.ITT, m.TTT = h.tags()
	m.StatSN, m.ExpCmdSN, m.MaxCmdSN = h.statusSNs()
	return nil
}

// DataOut is the SCSI Data-Out PDU (opcode 0x05, RFC 7143 §11.7).
type DataOut struct {
	Final        bool
	LUN          [8]byte
	ITT          uint32
	TTT          uint32 // from the R2T, ReservedTag for unsolicited data
	ExpStatSN    uint32
	DataSN       uint32
	BufferOffset uint32
	Data         []byte
}

func (m *DataOut) Opcode() Opcode { return OpDataOut }

func (m *DataOut) Encode(r *Raw) error {
	h := begin(r, OpDataOut, false, bitIf(m.Final, flagFinal))
	h.putTags(m.LUN, m.ITT, m.TTT)
	be.PutUint32(h[28:32], m.ExpStatSN)
	be.PutUint32(h[36:40], m.DataSN)
	be.PutUint32(h[40:44], m.BufferOffset)
	return finish(r, OpDataOut, m.Data)
}

func (m *DataOut) Decode(r *Raw) error {
	if err := expect(r, OpDataOut); err != nil {
		return err
	}
	h := &r.BHS
	*m = DataOut{
		Final:        h[1]&flagFinal != 0,
		ExpStatSN:    be.Uint32(h[28:32]),
		DataSN:       be.Uint32(h[36:40]),
		BufferOffset: be.Uint32(h[40:44]),
		Data:         dataOf(r),
	}
	m.LUN, m.ITT, m.TTT = h.tags()
	return nil
}

// R2T is the Ready To Transfer PDU (opcode 0x31, RFC 7143 §11.8).
type R2T struct {
	LUN                       [8]byte
	ITT                       uint32
	TTT                       uint32
	StatSN                    uint32
	ExpCmdSN                  uint32
	MaxCmdSN                  uint32
	R2TSN                     uint32
	BufferOffset              uint32
	DesiredDataTransferLength uint32
}

func (m *R2T) Opcode() Opcode { return OpR2T }

func (m *R2T) Encode(r *Raw) error {
	h := begin(r, OpR2T, false, flagFinal)
	h.putTags(m.LUN, m.ITT, m.TTT)
	h.putStatusSNs(m.StatSN, m.ExpCmdSN, m.MaxCmdSN)
	be.PutUint32(h[36:40], m.R2TSN)
	be.PutUint32(h[40:44], m.BufferOffset)
	be.PutUint32(h[44:48], m.DesiredDataTransferLength)
	return finish(r, OpR2T, nil)
}

func (m *R2T) Decode(r *Raw) error {
	if err := expectBare(r, OpR2T); err != nil {
		return err
	}
	h := &r.BHS
	*m = R2T{
		R2TSN:                     be.Uint32(h[36:40]),
		BufferOffset:              be.Uint32(h[40:44]),
		DesiredDataTransferLength: be.Uint32(h[44:48]),
	}
	m.LUN, m.ITT, m.TTT = h.tags()
	m.StatSN, m.ExpCmdSN, m.MaxCmdSN = h.statusSNs()
	return nil
}
