package initiator

import (
	"errors"
	"fmt"

	"github.com/iscsifs/iscsifs/initiator/pdu"
)

// LoginError is a login the target refused (RFC 7143 §11.13.5) or one that
// could not complete.
type LoginError struct {
	Target string // IQN, "" for a discovery session
	Portal string // host:port
	Class  uint8  // Status-Class of the Login Response
	Detail uint8  // Status-Detail
	Reason string // set for failures that are not a target status (e.g. mutual CHAP)
	auth   bool   // the initiator refused the target's authentication
}

func (e *LoginError) Error() string {
	what := "login"
	if e.Target != "" {
		what = "login to " + e.Target
	} else {
		what = "discovery login"
	}
	reason := e.Reason
	if reason == "" {
		reason = LoginStatusText(e.Class, e.Detail)
	}
	return fmt.Sprintf("%s at %s: %s", what, e.Portal, reason)
}

// Temporary reports whether retrying later may succeed (target errors, class 3).
func (e *LoginError) Temporary() bool { return e.Class == pdu.LoginStatusTargetError }

// IsAuthFailure reports an authentication or authorization failure.
func (e *LoginError) IsAuthFailure() bool {
	return e.Class == pdu.LoginStatusInitiatorError && (e.Detail == 0x01 || e.Detail == 0x02) || e.auth
}

// IsTargetNotFound reports a target the portal does not have (02/03 not
// found, 02/04 removed).
func (e *LoginError) IsTargetNotFound() bool {
	return e.Class == pdu.LoginStatusInitiatorError && (e.Detail == 0x03 || e.Detail == 0x04)
}

// LoginStatusText turns a Status-Class/Detail pair into words.
func LoginStatusText(class, detail uint8) string {
	switch class {
	case pdu.LoginStatusSuccess:
		return "success"
	case pdu.LoginStatusRedirect:
		switch detail {
		case 0x01:
			return "target moved temporarily"
		case 0x02:
			return "target moved permanently"
		}
		return fmt.Sprintf("redirect (detail 0x%02x)", detail)
	case pdu.LoginStatusInitiatorError:
		switch detail {
		case 0x00:
			return "initiator error (login rejected; with CHAP this usually means authentication failed)"
		case 0x01:
			return "authentication failed"
		case 0x02:
			return "authorization failed (initiator not allowed)"
		case 0x03:
			return "target not found"
		case 0x04:
			return "target removed"
		case 0x05:
			return "unsupported iSCSI version"
		case 0x06:
			return "too many connections"
		case 0x07:
			return "missing parameter"
		case 0x08:
			return "can't include connection in session"
		case 0x09:
			return "session type not supported"
		case 0x0a:
			return "session does not exist"
		case 0x0b:
			return "invalid request during login"
		}
		return fmt.Sprintf("initiator error (detail 0x%02x)", detail)
	case pdu.LoginStatusTargetError:
		switch detail {
		case 0x00:
			return "target error"
		case 0x01:
			return "service unavailable (target busy)"
		case 0x02:
			return "out of resources (target busy)"
		}
		return fmt.Sprintf("target error (detail 0x%02x)", detail)
	}
	return fmt.Sprintf("unknown login status class 0x%02x detail 0x%02x", class, detail)
}

// ConnectionError means the connection to the target failed: I/O error,
// protocol violation by the target, or a timeout. Outstanding commands fail
// with it (until recovery re-issues them).
type ConnectionError struct {
	Portal string
	Err    error
}

func (e *ConnectionError) Error() string {
	return fmt.Sprintf("connection to %s: %v", e.Portal, e.Err)
}
func (e *ConnectionError) Unwrap() error { return e.Err }

// ProtocolViolation is a target PDU that breaks RFC 7143 rules in a way that
// makes the connection unusable (unknown ITT with data, Data-In beyond the
// buffer, StatSN gap ...).
type ProtocolViolation struct {
	Reason string
}

func (e *ProtocolViolation) Error() string { return "protocol violation by target: " + e.Reason }

// CommandError is a SCSI command that failed; it names the target and LUN and
// wraps the cause (a *scsi.StatusError for a SCSI status, a *ConnectionError,
// a context error ...).
type CommandError struct {
	Target string
	LUN    uint64
	Op     string
	Err    error
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("%s LUN %d: %s: %v", e.Target, e.LUN, e.Op, e.Err)
}
func (e *CommandError) Unwrap() error { return e.Err }

// ErrSessionClosed is returned for commands issued after Close.
var ErrSessionClosed = errors.New("iscsi session closed")
