package pdu

// SNACK types (RFC 7143 §11.16.1).
const (
	SNACKData    = 0 // Data/R2T SNACK
	SNACKStatus  = 1
	SNACKDataACK = 2
	SNACKRData   = 3 // R-Data SNACK
)

const snackTypeMask = 0x0f

// SNACKReq is the SNACK Request PDU (opcode 0x10, RFC 7143 §11.16). It is
// only used at ErrorRecoveryLevel 1 and above.
type SNACKReq struct {
	Type      uint8
	LUN       [8]byte
	ITT       uint32
	TTT       uint32 // TTT for DataACK, SNACK Tag for R-Data, else ReservedTag
	ExpStatSN uint32
	BegRun    uint32
	RunLength uint32
}

func (m *SNACKReq) Opcode() Opcode { return OpSNACKReq }

func (m *SNACKReq) Encode(r *Raw) error {
	if m.Type > snackTypeMask {
		return rangeError(OpSNACKReq, "SNACK type")
	}
	h := begin(r, OpSNACKReq, false, flagFinal|m.Type)
	h.putTags(m.LUN, m.ITT, m.TTT)
	be.PutUint32(h[28:32], m.ExpStatSN)
	be.PutUint32(h[40:44], m.BegRun)
	be.PutUint32(h[44:48], m.RunLength)
	return finish(r, OpSNACKReq, nil)
}

func (m *SNACKReq) Decode(r *Raw) error {
	if err := expectBare(r, OpSNACKReq); err != nil {
		return err
	}
	h := &r.BHS
	*m = SNACKReq{
		Type:      h[1] & snackTypeMask,
		ExpStatSN: be.Uint32(h[28:32]),
		BegRun:    be.Uint32(h[40:44]),
		RunLength: be.Uint32(h[44:48]),
	}
	m.LUN, m.ITT, m.TTT = h.tags()
	return nil
}
