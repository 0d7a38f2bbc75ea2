package initiator

import (
	"sync"
	"time"

	"github.com/iscsifs/iscsifs/initiator/pdu"
)

// taskKind says what a registered initiator task tag is waiting for.
type taskKind int

const (
	taskSCSI taskKind = iota
	taskText
	taskNOP
	taskLogout
	taskTMF
)

// task is one outstanding exchange identified by its Initiator Task Tag.
//
// The goroutine reading the connection (see conn.await) fills readBuf from
// Data-In PDUs while holding mu; a caller that gives up detaches the task
// under mu, after which the reader discards further data. So a caller's buffer is never written after the
// caller returned, and the task keeps its ITT until the target has answered.
type task struct {
	kind    taskKind
	itt     uint32
	keepITT bool // send reuses itt (Text continuations keep the sequence's ITT)
	cmdSN   uint32
	lun     [8]byte

	mu        sync.Mutex
	readBuf   []byte // Data-In destination (SCSI reads)
	detached  bool
	received  int    // Data-In bytes placed
	expDataSN uint32 // next Data-In DataSN

	writeBuf []byte        // Data-Out source (SCSI writes)
	r2ts     chan *pdu.R2T // R2Ts handed from the reader to the Data-Out sender

	timeout  time.Duration // command timeout, 0 = none
	deadline int64         // unix nanoseconds, fixed before the task is registered
	expired  bool          // the sweeper took the task, guarded by conn.mu

	done   chan struct{}
	result taskResult
}

// taskResult is what completed a task.
type taskResult struct {
	err      error
	status   uint8
	response uint8 // SCSI Response byte, or TMF/Logout response
	sense    []byte
	residual uint32
	under    bool
	over     bool
	msg      pdu.Message // Text, Logout, TMF or NOP-In response
}

func newTask(kind taskKind) *task {
	return &task{kind: kind, done: make(chan struct{})}
}

// detach makes sure the reader no longer touches the caller's buffers.
func (t *task) detach() {
	t.mu.Lock()
	t.detached = true
	t.readBuf = nil
	t.mu.Unlock()
}
