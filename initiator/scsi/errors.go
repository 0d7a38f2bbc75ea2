package scsi

import (
	"errors"
	"fmt"
)

// Sentinel errors matched by StatusError.Is, so that callers classify a
// failed command with errors.Is(err, scsi.ErrWriteProtected) and the like.
var (
	ErrWriteProtected   = errors.New("scsi: write protected")                    // DATA PROTECT 27/xx
	ErrLBAOutOfRange    = errors.New("scsi: logical block address out of range") // ILLEGAL REQUEST 21/00
	ErrInvalidOpcode    = errors.New("scsi: invalid command operation code")     // ILLEGAL REQUEST 20/00
	ErrInvalidField     = errors.New("scsi: invalid field in CDB or parameters") // ILLEGAL REQUEST 24/00, 26/00
	ErrLUNotSupported   = errors.New("scsi: logical unit not supported")         // ILLEGAL REQUEST 25/00
	ErrMediumError      = errors.New("scsi: medium error")                       // MEDIUM ERROR
	ErrHardwareError    = errors.New("scsi: hardware error")                     // HARDWARE ERROR
	ErrNotReady         = errors.New("scsi: logical unit not ready")             // NOT READY
	ErrMediumNotPresent = errors.New("scsi: medium not present")                 // NOT READY 3A/xx
	ErrStartRequired    = errors.New("scsi: initializing command required")      // NOT READY 04/02: START STOP UNIT
	ErrUnitAttention    = errors.New("scsi: unit attention")                     // UNIT ATTENTION
	ErrReset            = errors.New("scsi: power on, reset or I_T nexus loss")  // UNIT ATTENTION 29/xx
	ErrCapacityChanged  = errors.New("scsi: capacity data has changed")          // UNIT ATTENTION 2A/09
	ErrModeChanged      = errors.New("scsi: mode parameters changed")            // UNIT ATTENTION 2A/01
	ErrAccessChanged    = errors.New("scsi: asymmetric access state changed")    // UNIT ATTENTION 2A/06
	ErrLUNsChanged      = errors.New("scsi: reported LUNs data has changed")     // UNIT ATTENTION 3F/0E
	ErrAbortedCommand   = errors.New("scsi: aborted command")                    // ABORTED COMMAND, or status TASK ABORTED
	ErrBusy             = errors.New("scsi: busy")                               // status BUSY or TASK SET FULL
	ErrReservation      = errors.New("scsi: reservation conflict")               // status RESERVATION CONFLICT
	ErrNoSense          = errors.New("scsi: check condition without sense data") // CHECK CONDITION, no sense (istgt)
)

// StatusError is a command that completed at the target with a status other
// than GOOD or CONDITION MET.
type StatusError struct {
	Op     string // the command, as OpName gives it
	Status Status
	// Sense is the decoded sense data; nil when the target sent none (istgt
	// answers CHECK CONDITION without sense for several errors) or sent
	// sense data that ParseSense could not decode (kept in RawSense).
	Sense *Sense
	// RawSense holds sense data that could not be decoded; nil otherwise.
	RawSense []byte
}

// CheckStatus turns the outcome of the command cdb into an error: nil for
// GOOD and CONDITION MET, else a *StatusError whose Sense is decoded from
// sense (the sense data without iSCSI's SenseLength field; may be empty).
func CheckStatus(cdb []byte, status Status, sense []byte) error {
	if status == StatusGood || status == StatusConditionMet {
		return nil
	}
	e := &StatusError{Op: OpName(cdb), Status: status}
	if len(sense) > 0 {
		if s, err := ParseSense(sense); err == nil {
			e.Sense = &s
		} else {
			e.RawSense = append([]byte(nil), sense...)
		}
	}
	return e
}

// Error is "OP: STATUS: SENSE", e.g. "READ(10): CHECK CONDITION: DATA
// PROTECT: WRITE PROTECTED (07/27/00)", "READ(10): CHECK CONDITION without
// sense data" or "WRITE(10): BUSY".
func (e *StatusError) Error() string {
	msg := e.Status.String()
	switch {
	case e.Sense != nil:
		msg += ": " + e.Sense.String()
	case len(e.RawSense) > 0:
		msg += fmt.Sprintf(" with undecodable sense data (% x)", e.RawSense[:min(len(e.RawSense), 8)])
	case e.Status == StatusCheckCondition:
		msg += " without sense data"
	}
	if e.Op == "" {
		return msg
	}
	return e.Op + ": " + msg
}

// notReadyTransient are the NOT READY 04/xx qualifiers of a logical unit on
// its way to becoming ready by itself: retrying later helps. 04/00 (cause
// not reportable), 04/02 (needs START STOP UNIT), 04/03 (manual
// intervention), 04/0B/0C (port standby/unavailable) and 04/12 (offline)
// do not go away by waiting.
var notReadyTransient = map[uint8]bool{
	0x01: true, // becoming ready
	0x04: true, // format in progress
	0x05: true, // rebuild in progress
	0x06: true, // recalculation in progress
	0x07: true, // operation in progress
	0x08: true, // long write in progress
	0x09: true, // self-test in progress
	0x0a: true, // asymmetric access state transition
	0x13: true, // SA creation in progress
	0x14: true, // space allocation in progress
	0x1a: true, // START STOP UNIT in progress
	0x1b: true, // sanitize in progress
}

// Retryable reports whether issuing the same command again may succeed:
// BUSY, TASK SET FULL and TASK ABORTED status, UNIT ATTENTION (the condition
// is reported once and cleared), ABORTED COMMAND, and NOT READY 04/xx while
// the logical unit is becoming ready (04/01) or in another transition (see
// notReadyTransient). MEDIUM ERROR, HARDWARE ERROR, ILLEGAL REQUEST, DATA
// PROTECT, RESERVATION CONFLICT and CHECK CONDITION without sense data are
// not retryable. Callers bound their retries and back off.
func (e *StatusError) Retryable() bool {
	switch e.Status {
	case StatusBusy, StatusTaskSetFull, StatusTaskAborted:
		return true
	case StatusCheckCondition:
	default:
		return false
	}
	if e.Sense == nil {
		return false
	}
	switch e.Sense.Key {
	case SenseUnitAttention, SenseAbortedCommand:
		return true
	case SenseNotReady:
		return e.Sense.ASC == 0x04 && notReadyTransient[e.Sense.ASCQ]
	}
	return false
}

// Is makes errors.Is match the sentinel errors of this package:
// ErrWriteProtected (DATA PROTECT 27/xx), ErrLBAOutOfRange (ILLEGAL REQUEST
// 21/00), ErrInvalidOpcode (ILLEGAL REQUEST 20/00), ErrInvalidField
// (ILLEGAL REQUEST 24/00 or 26/00), ErrLUNotSupported (ILLEGAL REQUEST
// 25/00), ErrMediumError (MEDIUM ERROR), ErrHardwareError (HARDWARE ERROR),
// ErrNotReady (NOT READY), ErrMediumNotPresent (NOT READY 3A/xx),
// ErrStartRequired (NOT READY 04/02), ErrUnitAttention (UNIT ATTENTION),
// ErrReset (UNIT ATTENTION 29/xx), ErrCapacityChanged (UNIT ATTENTION
// 2A/09), ErrModeChanged (UNIT ATTENTION 2A/01), ErrAccessChanged (UNIT
// ATTENTION 2A/06), ErrLUNsChanged (UNIT
// ATTENTION 3F/0E), ErrAbortedCommand (ABORTED COMMAND or status TASK
// ABORTED), ErrBusy (status BUSY or TASK SET FULL), ErrReservation (status
// RESERVATION CONFLICT) and ErrNoSense (CHECK CONDITION without sense data).
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrBusy:
		return e.Status == StatusBusy || e.Status == StatusTaskSetFull
	case ErrReservation:
		return e.Status == StatusReservationConflict
	case ErrNoSense:
		return e.Status == StatusCheckCondition && e.Sense == nil
	case ErrAbortedCommand:
		if e.Status == StatusTaskAborted {
			return true
		}
	}
	if e.Status != StatusCheckCondition || e.Sense == nil {
		return false
	}
	s := e.Sense
	is := func(k SenseKey, asc uint8) bool { return s.Key == k && s.ASC == asc }
	switch target {
	case ErrWriteProtected:
		return is(SenseDataProtect, 0x27)
	case ErrLBAOutOfRange:
		return is(SenseIllegalRequest, 0x21) && s.ASCQ == 0x00
	case ErrInvalidOpcode:
		return is(SenseIllegalRequest, 0x20) && s.ASCQ == 0x00
	case ErrInvalidField:
		return (is(SenseIllegalRequest, 0x24) || is(SenseIllegalRequest, 0x26)) && s.ASCQ == 0x00
	case ErrLUNotSupported:
		return is(SenseIllegalRequest, 0x25) && s.ASCQ == 0x00
	case ErrMediumError:
		return s.Key == SenseMediumError
	case ErrHardwareError:
		return s.Key == SenseHardwareError
	case ErrNotReady:
		return s.Key == SenseNotReady
	case ErrMediumNotPresent:
		return is(SenseNotReady, 0x3a)
	case ErrStartRequired:
		return is(SenseNotReady, 0x04) && s.ASCQ == 0x02
	case ErrUnitAttention:
		return s.Key == SenseUnitAttention
	case ErrReset:
		return is(SenseUnitAttention, 0x29)
	case ErrCapacityChanged:
		return is(SenseUnitAttention, 0x2a) && s.ASCQ == 0x09
	case ErrModeChanged:
		return is(SenseUnitAttention, 0x2a) && s.ASCQ == 0x01
	case ErrAccessChanged:
		return is(SenseUnitAttention, 0x2a) && s.ASCQ == 0x06
	case ErrLUNsChanged:
		return is(SenseUnitAttention, 0x3f) && s.ASCQ == 0x0e
	case ErrAbortedCommand:
		return s.Key == SenseAbortedCommand
	}
	return false
}
