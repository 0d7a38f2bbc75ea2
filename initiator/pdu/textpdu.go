package pdu

// textFlags builds byte 1 of a Text Request or Response: F C.
func textFlags(op Opcode, final, cont bool) (byte, error) {
	if final && cont {
		return 0, &ProtocolError{Op: "encode " + op.String(), Reason: "F and C bits both set"}
	}
	return bitIf(final, flagFinal) | bitIf(cont, flagContinue), nil
}

// textFlagsOf splits byte 1 of a Text Request or Response.
func textFlagsOf(b byte) (final, cont bool) {
	return b&flagFinal != 0, b&flagContinue != 0
}

// TextReq is the Text Request PDU (opcode 0x04, RFC 7143 §11.10).
type TextReq struct {
	Immediate bool
	Final     bool
	Continue  bool
	LUN       [8]byte
	ITT       uint32
	TTT       uint32 // ReservedTag, or the TTT of the Text Response being continued
	CmdSN     uint32
	ExpStatSN uint32
	Data      []byte // key=value text
}

func (m *TextReq) Opcode() Opcode { return OpTextReq }

func (m *TextReq) Encode(r *Raw) error {
	flags, err := textFlags(OpTextReq, m.Final, m.Continue)
	if err != nil {
		return err
	}
	h := begin(r, OpTextReq, m.Immediate, flags)
	h.putTags(m.LUN, m.ITT, m.TTT)
	h.putCommandSNs(m.CmdSN, m.ExpStatSN)
	return finish(r, OpTextReq, m.Data)
}

func (m *TextReq) Decode(r *Raw) error {
	if err := expect(r, OpTextReq); err != nil {
		return err
	}
	h := &r.BHS
	*m = TextReq{
		Immediate: h.Immediate(),
		Data:      dataOf(r),
	}
	m.Final, m.Continue = textFlagsOf(h[1])
	m.LUN, m.ITT, m.TTT = h.tags()
	m.CmdSN, m.ExpStatSN = h.commandSNs()
	return nil
}

// TextResp is the Text Response PDU (opcode 0x24, RFC 7143 §11.11).
type TextResp struct {
	Final    bool
	Continue bool
	LUN      [8]byte
	ITT      uint32
	TTT      uint32 // not ReservedTag while more response PDUs follow
	StatSN   uint32
	ExpCmdSN uint32
	MaxCmdSN uint32
	Data     []byte // key=value text
}

func (m *TextResp) Opcode() Opcode { return OpTextResp }

func (m *TextResp) Encode(r *Raw) error {
	flags, err := textFlags(OpTextResp, m.Final, m.Continue)
	if err != nil {
		return err
	}
	h := begin(r, OpTextResp, false, flags)
	h.putTags(m.LUN, m.ITT, m.TTT)
	h.putStatusSNs(m.StatSN, m.ExpCmdSN, m.MaxCmdSN)
	return finish(r, OpTextResp, m.Data)
}

func (m *TextResp) Decode(r *Raw) error {
	if err := expect(r, OpTextResp); err != nil {
		return err
	}
	h := &r.BHS
	*m = TextResp{
		Data: dataOf(r),
	}
	m.Final, m.Continue = textFlagsOf(h[1])
	m.LUN, m.ITT, m.TTT = h.tags()
	m.StatSN, m.ExpCmdSN, m.MaxCmdSN = h.statusSNs()
	return nil
}
