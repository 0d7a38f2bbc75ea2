package pdu

// NOPOut is the NOP-Out PDU (opcode 0x00, RFC 7143 §11.18): a ping from the
// initiator (ITT set, TTT = ReservedTag) or the answer to a target's NOP-In
// (ITT = ReservedTag, TTT copied from the NOP-In).
type NOPOut struct {
	Immediate bool
	LUN       [8]byte
	ITT       uint32
	TTT       uint32
	CmdSN     uint32
	ExpStatSN uint32
	Data      []byte // ping data
}

func (m *NOPOut) Opcode() Opcode { return OpNOPOut }

func (m *NOPOut) Encode(r *Raw) error {
	h := begin(r, OpNOPOut, m.Immediate, flagFinal)
	h.putTags(m.LUN, m.ITT, m.TTT)
	h.putCommandSNs(m.CmdSN, m.ExpStatSN)
	return finish(r, OpNOPOut, m.Data)
}

func (m *NOPOut) Decode(r *Raw) error {
	if err := expect(r, OpNOPOut); err != nil {
		return err
	}
	h := &r.BHS
	*m = NOPOut{
		Immediate: h.Immediate(),
		Data:      dataOf(r),
	}
	m.LUN, m.ITT, m.TTT = h.tags()
	m.CmdSN, m.ExpStatSN = h.commandSNs()
	return nil
}

// NOPIn is the NOP-In PDU (opcode 0x20, RFC 7143 §11.19): the answer to a
// NOP-Out ping, or a ping from the target (TTT other than ReservedTag).
type NOPIn struct {
	LUN      [8]byte
	ITT      uint32
	TTT      uint32
	StatSN   uint32
	ExpCmdSN uint32
	MaxCmdSN uint32
	Data     []byte
}

func (m *NOPIn) Opcode() Opcode { return OpNOPIn }

func (m *NOPIn) Encode(r *Raw) error {
	h := begin(r, OpNOPIn, false, flagFinal)
	h.putTags(m.LUN, m.ITT, m.TTT)
	h.putStatusSNs(m.StatSN, m.ExpCmdSN, m.MaxCmdSN)
	return finish(r, OpNOPIn, m.Data)
}

func (m *NOPIn) Decode(r *Raw) error {
	if err := expect(r, OpNOPIn); err != nil {
		return err
	}
	h := &r.BHS
	*m = NOPIn{
		Data: dataOf(r),
	}
	m.LUN, m.ITT, m.TTT = h.tags()
	m.StatSN, m.ExpCmdSN, m.MaxCmdSN = h.statusSNs()
	return nil
}
