package pdu

// Login stages, the CSG and NSG values (RFC 7143 §11.12.3).
const (
	StageSecurityNegotiation    = 0
	StageOperationalNegotiation = 1
	StageFullFeaturePhase       = 3
)

// Login Response Status-Class values (RFC 7143 §11.13.5); the Status-Detail
// codes are listed there.
const (
	LoginStatusSuccess        = 0
	LoginStatusRedirect       = 1
	LoginStatusInitiatorError = 2
	LoginStatusTargetError    = 3
)

const stageMask = 0x03

// loginFlags builds byte 1 of a Login Request or Response:
// T C . . CSG(2) NSG(2).
func loginFlags(op Opcode, transit, cont bool, csg, nsg uint8) (byte, error) {
	switch {
	case csg > stageMask:
		return 0, rangeError(op, "CSG")
	case nsg > stageMask:
		return 0, rangeError(op, "NSG")
	case transit && cont:
		return 0, &ProtocolError{Op: "encode " + op.String(), Reason: "T and C bits both set"}
	}
	return csg<<2 | nsg | bitIf(transit, flagTransit) | bitIf(cont, flagContinue), nil
}

// loginFlagsOf splits byte 1 of a Login Request or Response.
func loginFlagsOf(b byte) (transit, cont bool, csg, nsg uint8) {
	return b&flagTransit != 0, b&flagContinue != 0, b >> 2 & stageMask, b & stageMask
}

// putSessionIDs stores the two version bytes, ISID, TSIH and ITT, which both
// login PDUs keep at the same offsets.
func (h *BHS) putSessionIDs(version1, version2 uint8, isid [6]byte, tsih uint16, itt uint32) {
	h[2], h[3] = version1, version2
	copy(h[8:14], isid[:])
	be.PutUint16(h[14:16], tsih)
	be.PutUint32(h[16:20], itt)
}

func (h *BHS) sessionIDs() (version1, version2 uint8, isid [6]byte, tsih uint16, itt uint32) {
	return h[2], h[3], [6]byte(h[8:14]), be.Uint16(h[14:16]), h.ITT()
}

// LoginReq is the Login Request PDU (opcode 0x03, RFC 7143 §11.12). It is
// always sent with the I bit set.
type LoginReq struct {
	Transit    bool
	Continue   bool
	CSG        uint8
	NSG        uint8
	VersionMax uint8
	VersionMin uint8
	ISID       [6]byte
	TSIH       uint16
	ITT        uint32
	CID        uint16
	CmdSN      uint32
	ExpStatSN  uint32
	Data       []byte // key=value text
}

func (m *LoginReq) Opcode() Opcode { return OpLoginReq }

func (m *LoginReq) Encode(r *Raw) error {
	flags, err := loginFlags(OpLoginReq, m.Transit, m.Continue, m.CSG, m.NSG)
	if err != nil {
		return err
	}
	h := begin(r, OpLoginReq, true, flags)
	h.putSessionIDs(m.VersionMax, m.VersionMin, m.ISID, m.TSIH, m.ITT)
	be.PutUint16(h[20:22], m.CID)
	h.putCommandSNs(m.CmdSN, m.ExpStatSN)
	return finish(r, OpLoginReq, m.Data)
}

func (m *LoginReq) Decode(r *Raw) error {
	if err := expect(r, OpLoginReq); err != nil {
		return err
	}
	h := &r.BHS
	*m = LoginReq{
		CID:  be.Uint16(h[20:22]),
		Data: dataOf(r),
	}
	m.Transit, m.Continue, m.CSG, m.NSG = loginFlagsOf(h[1])
	m.VersionMax, m.VersionMin, m.ISID, m.TSIH, m.ITT = h.sessionIDs()
	m.CmdSN, m.ExpStatSN = h.commandSNs()
	return nil
}

// LoginResp is the Login Response PDU (opcode 0x23, RFC 7143 §11.13).
type LoginResp struct {
	Transit       bool
	Continue      bool
	CSG           uint8
	NSG           uint8
	VersionMax    uint8
	VersionActive uint8
	ISID          [6]byte
	TSIH          uint16
	ITT           uint32
	StatSN        uint32
	ExpCmdSN      uint32
	MaxCmdSN      uint32
	StatusClass   uint8
	StatusDetail  uint8
	Data          []byte // key=value text
}

func (m *LoginResp) Opcode() Opcode { return OpLoginResp }

func (m *LoginResp) Encode(r *Raw) error {
	flags, err := loginFlags(OpLoginResp, m.Transit, m.Continue, m.CSG, m.NSG)
	if err != nil {
		return err
	}
	h := begin(r, OpLoginResp, false, flags)
	h.putSessionIDs(m.VersionMax, m.VersionActive, m.ISID, m.TSIH, m.ITT)
	h.putStatusSNs(m.StatSN, m.ExpCmdSN, m.MaxCmdSN)
	h[36] = m.StatusClass
	h[37] = m.StatusDetail
	return finish(r, OpLoginResp, m.Data)
}

func (m *LoginResp) Decode(r *Raw) error {
	if err := expect(r, OpLoginResp); err != nil {
		return err
	}
	h := &r.BHS
	*m = LoginResp{
		StatusClass:  h[36],
		StatusDetail: h[37],
		Data:         dataOf(r),
	}
	m.Transit, m.Continue, m.CSG, m.NSG = loginFlagsOf(h[1])
	m.VersionMax, m.VersionActive, m.ISID, m.TSIH, m.ITT = h.sessionIDs()
	m.StatSN, m.ExpCmdSN, m.MaxCmdSN = h.statusSNs()
	return nil
}
