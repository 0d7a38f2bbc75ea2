package pdu

// AsyncEvent codes (RFC 7143 §11.9.1).
const (
	AsyncEventSCSI            = 0   // SCSI asynchronous event; sense data in Data
	AsyncEventLogoutRequest   = 1   // target requests logout within Parameter3 seconds
	AsyncEventConnectionDrop  = 2   // target will drop connection Parameter1
	AsyncEventSessionDrop     = 3   // target will drop all connections
	AsyncEventNegotiate       = 4   // target requests parameter negotiation
	AsyncEventTasksTerminated = 5   // all active tasks of the LU were terminated
	AsyncEventVendor          = 255 // vendor specific
)

// AsyncMsg is the Asynchronous Message PDU (opcode 0x32, RFC 7143 §11.9).
// Its ITT is always ReservedTag on the wire.
type AsyncMsg struct {
	LUN        [8]byte
	StatSN     uint32
	ExpCmdSN   uint32
	MaxCmdSN   uint32
	AsyncEvent uint8
	AsyncVCode uint8
	Parameter1 uint16
	Parameter2 uint16
	Parameter3 uint16
	Data       []byte // sense data and/or iSCSI event data
}

func (m *AsyncMsg) Opcode() Opcode { return OpAsyncMsg }

func (m *AsyncMsg) Encode(r *Raw) error {
	h := begin(r, OpAsyncMsg, false, flagFinal)
	copy(h[8:16], m.LUN[:])
	be.PutUint32(h[16:20], ReservedTag)
	h.putStatusSNs(m.StatSN, m.ExpCmdSN, m.MaxCmdSN)
	h[36] = m.AsyncEvent
	h[37] = m.AsyncVCode
	be.PutUint16(h[38:40], m.Parameter1)
	be.PutUint16(h[40:42], m.Parameter2)
	be.PutUint16(h[42:44], m.Parameter3)
	return finish(r, OpAsyncMsg, m.Data)
}

func (m *AsyncMsg) Decode(r *Raw) error {
	if err := expect(r, OpAsyncMsg); err != nil {
		return err
	}
	h := &r.BHS
	*m = AsyncMsg{
		LUN:        h.LUN(),
		AsyncEvent: h[36],
		AsyncVCode: h[37],
		Parameter1: be.Uint16(h[38:40]),
		Parameter2: be.Uint16(h[40:42]),
		Parameter3: be.Uint16(h[42:44]),
		Data:       dataOf(r),
	}
	m.StatSN, m.ExpCmdSN, m.MaxCmdSN = h.statusSNs()
	return nil
}
