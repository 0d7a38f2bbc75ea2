package initiator

import (
	"context"
	"sync"
)

// owner starts goroutines and lets its owner wait for them: every
// goroutine of a connection is started by the connection's owner, every
// goroutine of a session (recovery, LUN refreshes) by the session's. Once
// stopped it starts none, so that a wait cannot miss one started meanwhile.
// The zero owner is ready to use.
type owner struct {
	mu      sync.Mutex
	running int
	stopped bool
	idle    chan struct{} // closed once stopped and nothing runs
}

// goroutine runs f in a goroutine of the owner. After stop it runs nothing
// and returns false.
func (o *owner) goroutine(f func()) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stopped {
		return false
	}
	o.running++
	go func() {
		defer o.exited()
		f()
	}()
	return true
}

func (o *owner) exited() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.running--
	o.signalLocked()
}

// stop makes goroutine refuse from now on.
func (o *owner) stop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stopped = true
	o.signalLocked()
}

func (o *owner) signalLocked() {
	if o.stopped && o.running == 0 {
		select {
		case <-o.idleLocked():
		default:
			close(o.idle)
		}
	}
}

func (o *owner) idleLocked() chan struct{} {
	if o.idle == nil {
		o.idle = make(chan struct{})
	}
	return o.idle
}

// wait stops the owner and waits until its goroutines have returned, no
// longer than ctx allows.
func (o *owner) wait(ctx context.Context) error {
	o.stop()
	o.mu.Lock()
	idle := o.idleLocked()
	o.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
