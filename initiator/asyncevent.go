package initiator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/iscsifs/iscsifs/initiator/pdu"
)

// Asynchronous Messages that end the connection (RFC 7143 §11.9.1).
//
// Event 1, the target requests a logout within Parameter3 seconds: no new
// command is sent on the connection (they wait as during recovery), those in
// flight get a bounded time to finish, then a Logout Request goes out, and
// once it is answered (or not, in bounded time) the connection is closed and
// recovery logs in again at once, re-issuing what had not completed.
//
// Events 2 and 3, the target will drop the connection or the session: the
// connection is closed at once and recovery waits Time2Wait (Parameter2)
// before it logs in again.
const (
	// logoutRequestDefault is the time allowed when Parameter3 is 0.
	logoutRequestDefault = 2 * time.Second
	// logoutRequestMax caps Parameter3: a target may ask for minutes, but
	// commands wait meanwhile.
	logoutRequestMax = 4 * time.Second
	// logoutResponseWait bounds the wait for the Logout Response.
	logoutResponseWait = 2 * time.Second
	// closeLogoutWait bounds the Logout of Session.Close.
	closeLogoutWait = 5 * time.Second
	// maxTime2Wait caps the Time2Wait of events 2 and 3 (up to 65535 s on
	// the wire).
	maxTime2Wait = 60 * time.Second
	// drainPoll is how often the commands in flight are counted while the
	// connection drains.
	drainPoll = 10 * time.Millisecond
)

// errLogoutPending is a command that was not sent, or that the target
// refused ("waiting for logout"), because the target asked for a logout: it
// is issued again on the next connection.
var errLogoutPending = errors.New("the target asked for a logout; the command waits for the next login")

// errLoggedOut ends a connection after its Logout Response.
var errLoggedOut = errors.New("logged out")

// asyncDropError ends a connection the target asked to give up (event 1) or
// announced it would drop (events 2 and 3).
type asyncDropError struct {
	event     uint8
	at        time.Time     // when the message arrived
	time2Wait time.Duration // no login before at+time2Wait
}

func (e *asyncDropError) Error() string {
	switch e.event {
	case pdu.AsyncEventLogoutRequest:
		return "logged out at the target's request (async event 1)"
	case pdu.AsyncEventConnectionDrop:
		return fmt.Sprintf("the target drops the connection (async event 2, Time2Wait %v)", e.time2Wait)
	}
	return fmt.Sprintf("the target drops the session's connections (async event %d, Time2Wait %v)", e.event, e.time2Wait)
}

func seconds(n uint16) time.Duration { return time.Duration(n) * time.Second }

// logoutRequested handles event 1 in the reader: it stops new commands and
// leaves the logout to another goroutine (the reader never writes).
func (c *conn) logoutRequested(param3 uint16) {
	limit := logoutRequestDefault
	if param3 > 0 {
		limit = min(seconds(param3), logoutRequestMax)
	}
	cause := &asyncDropError{event: pdu.AsyncEventLogoutRequest, at: time.Now()}
	c.mu.Lock()
	if c.state != connOpen {
		c.mu.Unlock()
		return
	}
	c.state = connDraining
	c.drainCause = cause
	close(c.drainCh)
	c.mu.Unlock()
	c.log.Info("target requests a logout; letting the commands in flight finish, then logging out and in again", "event", pdu.AsyncEventLogoutRequest, "param3", param3, "within", limit)
	// A quarter of the time is left for the Logout Request to reach the
	// target before it gives up on us.
	c.goroutine(func() { c.logoutOnRequest(limit-limit/4, cause) })
}

// logoutOnRequest waits up to drain for the commands in flight, then logs
// out and closes the connection. If the target drops the connection first,
// ordinary recovery has already taken over.
func (c *conn) logoutOnRequest(drain time.Duration, cause error) {
	deadline := time.NewTimer(drain)
	defer deadline.Stop()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
wait:
	for n := c.outstanding(); n > 0; n = c.outstanding() {
		select {
		case <-c.dead:
			return
		case <-deadline.C:
			c.log.Warn("commands still in flight at the logout deadline; they are re-issued after the new login", "outstanding", n, "after", drain)
			break wait
		case <-tick.C:
		}
	}
	// Reason "close the session", not "close the connection": on a
	// single-connection ERL 0 session a successful close-session logout
	// ends the session and terminates its tasks at the target for certain,
	// so the login that follows with the same ISID and TSIH 0 simply starts
	// a new session. After a close-connection logout of the last connection
	// the target may keep the session (and the tasks not yet done) for
	// Time2Retain, waiting for a reassignment we cannot do at ERL 0.
	if err := c.logout(context.Background(), logoutResponseWait); err != nil {
		c.log.Warn("logout at the target's request failed; closing the connection", "err", err)
	}
	c.fail(cause) // no-op when the Logout Response already ended it
}

// outstanding counts the tasks waiting for an answer on the connection.
func (c *conn) outstanding() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.tasks)
}

// isDraining reports whether the target asked for a logout.
func (c *conn) isDraining() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == connDraining
}

// loggedOut is the error that ends the connection after a Logout Response.
func (c *conn) loggedOut() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.drainCause != nil {
		return c.drainCause
	}
	return errLoggedOut
}
