package pdu

// Task management functions (RFC 7143 §11.5.1).
const (
	TMFAbortTask        = 1
	TMFAbortTaskSet     = 2
	TMFClearACA         = 3
	TMFClearTaskSet     = 4
	TMFLogicalUnitReset = 5
	TMFTargetWarmReset  = 6
	TMFTargetColdReset  = 7
	TMFTaskReassign     = 8
)

// Task management responses (RFC 7143 §11.6.1).
const (
	TMFRespComplete     = 0
	TMFRespNoTask       = 1
	TMFRespNoLUN        = 2
	TMFRespAllegiant    = 3
	TMFRespNoReassign   = 4
	TMFRespNotSupported = 5
	TMFRespAuthFailed   = 6
	TMFRespRejected     = 255
)

// TaskMgmtReq is the Task Management Function Request PDU (opcode 0x02,
// RFC 7143 §11.5).
type TaskMgmtReq struct {
	Immediate         bool
	Function          uint8
	LUN               [8]byte
	ITT               uint32
	ReferencedTaskTag uint32 // ABORT TASK, TASK REASSIGN; else ReservedTag
	CmdSN             uint32
	ExpStatSN         uint32
	RefCmdSN          uint32
	ExpDataSN         uint32
}

func (m *TaskMgmtReq) Opcode() Opcode { return OpTaskMgmtReq }

func (m *TaskMgmtReq) Encode(r *Raw) error {
	if m.Function > reasonMask {
		return rangeError(OpTaskMgmtReq, "function")
	}
	h := begin(r, OpTaskMgmtReq, m.Immediate, flagFinal|m.Function)
	copy(h[8:16], m.LUN[:])
	be.PutUint32(h[16:20], m.ITT)
	be.PutUint32(h[20:24], m.ReferencedTaskTag)
	h.putCommandSNs(m.CmdSN, m.ExpStatSN)
	be.PutUint32(h[32:36], m.RefCmdSN)
	be.PutUint32(h[36:40], m.ExpDataSN)
	return finish(r, OpTaskMgmtReq, nil)
}

func (m *TaskMgmtReq) Decode(r *Raw) error {
	if err := expectBare(r, OpTaskMgmtReq); err != nil {
		return err
	}
	h := &r.BHS
	*m = TaskMgmtReq{
		Immediate:         h.Immediate(),
		Function:          h[1] & reasonMask,
		LUN:               h.LUN(),
		ITT:               h.ITT(),
		ReferencedTaskTag: be.Uint32(h[20:24]),
		RefCmdSN:          be.Uint32(h[32:36]),
		ExpDataSN:         be.Uint32(h[36:40]),
	}
	m.CmdSN, m.ExpStatSN = h.commandSNs()
	return nil
}

// TaskMgmtResp is the Task Management Function Response PDU (opcode 0x22,
// RFC 7143 §11.6).
type TaskMgmtResp struct {
	Response uint8
	ITT      uint32
	StatSN   uint32
	ExpCmdSN uint32
	MaxCmdSN uint32
}

func (m *TaskMgmtResp) Opcode() Opcode { return OpTaskMgmtResp }

func (m *TaskMgmtResp) Encode(r *Raw) error {
	h := begin(r, OpTaskMgmtResp, false, flagFinal)
	h[2] = m.Response
	be.PutUint32(h[16:20], m.ITT)
	h.putStatusSNs(m.StatSN, m.ExpCmdSN, m.MaxCmdSN)
	return finish(r, OpTaskMgmtResp, nil)
}

func (m *TaskMgmtResp) Decode(r *Raw) error {
	if err := expectBare(r, OpTaskMgmtResp); err != nil {
		return err
	}
	h := &r.BHS
	*m = TaskMgmtResp{Response: h[2], ITT: h.ITT()}
	m.StatSN, m.ExpCmdSN, m.MaxCmdSN = h.statusSNs()
	return nil
}
