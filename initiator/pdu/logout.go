package pdu

// Logout Request reason codes (RFC 7143 §11.14.1).
const (
	LogoutCloseSession     = 0
	LogoutCloseConnection  = 1
	LogoutRemoveConnection = 2 // remove the connection for recovery
)

// Logout Response codes (RFC 7143 §11.15.1).
const (
	LogoutRespSuccess              = 0
	LogoutRespCIDNotFound          = 1
	LogoutRespRecoveryNotSupported = 2
	LogoutRespCleanupFailed        = 3
)

const reasonMask = 0x7f // 7-bit Reason / Function field of byte 1

// LogoutReq is the Logout Request PDU (opcode 0x06, RFC 7143 §11.14).
type LogoutReq struct {
	Immediate bool
	Reason    uint8
	ITT       uint32
	CID       uint16 // for reasons 1 and 2
	CmdSN     uint32
	ExpStatSN uint32
}

func (m *LogoutReq) Opcode() Opcode { return OpLogoutReq }

func (m *LogoutReq) Encode(r *Raw) error {
	if m.Reason > reasonMask {
		return rangeError(OpLogoutReq, "reason code")
	}
	h := begin(r, OpLogoutReq, m.Immediate, flagFinal|m.Reason)
	be.PutUint32(h[16:20], m.ITT)
	be.PutUint16(h[20:22], m.CID)
	h.putCommandSNs(m.CmdSN, m.ExpStatSN)
	return finish(r, OpLogoutReq, nil)
}

func (m *LogoutReq) Decode(r *Raw) error {
	if err := expectBare(r, OpLogoutReq); err != nil {
		return err
	}
	h := &r.BHS
	*m = LogoutReq{
		Immediate: h.Immediate(),
		Reason:    h[1] & reasonMask,
		ITT:       h.ITT(),
		CID:       be.Uint16(h[20:22]),
	}
	m.CmdSN, m.ExpStatSN = h.commandSNs()
	return nil
}

// LogoutResp is the Logout Response PDU (opcode 0x26, RFC 7143 §11.15).
type LogoutResp struct {
	Response    uint8
	ITT         uint32
	StatSN      uint32
	ExpCmdSN    uint32
	MaxCmdSN    uint32
	Time2Wait   uint16
	Time2Retain uint16
}

func (m *LogoutResp) Opcode() Opcode { return OpLogoutResp }

func (m *LogoutResp) Encode(r *Raw) error {
	h := begin(r, OpLogoutResp, false, flagFinal)
	h[2] = m.Response
	be.PutUint32(h[16:20], m.ITT)
	h.putStatusSNs(m.StatSN, m.ExpCmdSN, m.MaxCmdSN)
	be.PutUint16(h[40:42], m.Time2Wait)
	be.PutUint16(h[42:44], m.Time2Retain)
	return finish(r, OpLogoutResp, nil)
}

func (m *LogoutResp) Decode(r *Raw) error {
	if err := expectBare(r, OpLogoutResp); err != nil {
		return err
	}
	h := &r.BHS
	*m = LogoutResp{
		Response:    h[2],
		ITT:         h.ITT(),
		Time2Wait:   be.Uint16(h[40:42]),
		Time2Retain: be.Uint16(h[42:44]),
	}
	m.StatSN, m.ExpCmdSN, m.MaxCmdSN = h.statusSNs()
	return nil
}
