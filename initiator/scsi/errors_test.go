package scsi

import (
	"errors"
	"fmt"
	"testing"
)

func senseErr(t *testing.T, op []byte, data string) *StatusError {
	t.Helper()
	err := CheckStatus(op, StatusCheckCondition, hx(t, data))
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("CheckStatus gave %v", err)
	}
	return se
}

func TestCheckStatus(t *testing.T) {
	if err := CheckStatus(TestUnitReady(), StatusGood, nil); err != nil {
		t.Errorf("GOOD: %v", err)
	}
	if err := CheckStatus(TestUnitReady(), StatusConditionMet, nil); err != nil {
		t.Errorf("CONDITION MET: %v", err)
	}
	se := senseErr(t, Write(0, 1, false, false), capTgtSenseWP)
	if se.Op != "WRITE(10)" || se.Status != StatusCheckCondition || se.Sense == nil || se.RawSense != nil {
		t.Fatalf("got %+v", se)
	}
	if se.Sense.Key != SenseDataProtect || se.Sense.ASC != 0x27 {
		t.Errorf("sense %+v", se.Sense)
	}
	raw := hx(t, "7f 00 05")
	err := CheckStatus(Read(0, 1, false, false), StatusCheckCondition, raw)
	if !errors.As(err, &se) || se.Sense != nil || string(se.RawSense) != string(raw) {
		t.Fatalf("undecodable sense: %+v", err)
	}
	raw[0] = 0
	if se.RawSense[0] != 0x7f {
		t.Error("RawSense aliases the caller's buffer")
	}
}

func TestStatusErrorMessages(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{CheckStatus(Read(0, 1, false, false), StatusCheckCondition, hx(t, capTgtSenseWP)),
			"READ(10): CHECK CONDITION: DATA PROTECT: WRITE PROTECTED (07/27/00)"},
		{CheckStatus(Read(1<<33, 1, false, false), StatusCheckCondition, hx(t, capTgtSenseDescLBA)),
			"READ(16): CHECK CONDITION: ILLEGAL REQUEST: LOGICAL BLOCK ADDRESS OUT OF RANGE (05/21/00)"},
		{CheckStatus(Read(0, 1, false, false), StatusCheckCondition, nil),
			"READ(10): CHECK CONDITION without sense data"},
		{CheckStatus(Write(0, 1, false, false), StatusBusy, nil), "WRITE(10): BUSY"},
		{CheckStatus(Write(0, 1, false, false), StatusReservationConflict, nil), "WRITE(10): RESERVATION CONFLICT"},
		{CheckStatus(Read(0, 1, false, false), StatusCheckCondition, hx(t, "7f0005")),
			"READ(10): CHECK CONDITION with undecodable sense data (7f 00 05)"},
		{&StatusError{Status: StatusTaskSetFull}, "TASK SET FULL"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got  %q\nwant %q", got, tt.want)
		}
	}
}

func TestStatusErrorIsAndRetryable(t *testing.T) {
	all := []error{
		ErrWriteProtected, ErrLBAOutOfRange, ErrInvalidOpcode, ErrInvalidField, ErrLUNotSupported,
		ErrMediumError, ErrHardwareError, ErrNotReady, ErrMediumNotPresent, ErrStartRequired,
		ErrUnitAttention, ErrReset, ErrCapacityChanged, ErrModeChanged, ErrLUNsChanged,
		ErrAbortedCommand, ErrBusy, ErrReservation, ErrNoSense,
	}
	cc := func(data string) error {
		return CheckStatus(Read(0, 1, false, false), StatusCheckCondition, hx(t, data))
	}
	st := func(s Status) error { return CheckStatus(Read(0, 1, false, false), s, nil) }
	tests := []struct {
		name      string
		err       error
		is        []error
		retryable bool
	}{
		{"tgt write to ro", cc(capTgtSenseWP), []error{ErrWriteProtected}, false},
		{"hardware write protected 27/01", cc("70 00 07 00000000 0a 00000000 27 01"), []error{ErrWriteProtected}, false},
		{"tgt read past end", cc(capTgtSenseLBA), []error{ErrLBAOutOfRange}, false},
		{"descriptor read past end", cc(capTgtSenseDescLBA), []error{ErrLBAOutOfRange}, false},
		{"istgt invalid opcode", cc(capIstgtSense2000), []error{ErrInvalidOpcode}, false},
		{"invalid field in CDB", cc(capTgtSenseBadCDB), []error{ErrInvalidField}, false},
		{"invalid field in parameter list", cc("70 00 05 00000000 0a 00000000 26 00"), []error{ErrInvalidField}, false},
		{"parameter value invalid 26/02", cc("70 00 05 00000000 0a 00000000 26 02"), nil, false},
		{"LU not supported", cc("70 00 05 00000000 0a 00000000 25 00"), []error{ErrLUNotSupported}, false},
		{"medium error", cc("f0 00 03 00000010 0a 00000000 11 00"), []error{ErrMediumError}, false},
		{"hardware error", cc("70 00 04 00000000 0a 00000000 44 00"), []error{ErrHardwareError}, false},
		{"not ready becoming ready", cc("70 00 02 00000000 0a 00000000 04 01"), []error{ErrNotReady}, true},
		{"not ready ALUA transition", cc("70 00 02 00000000 0a 00000000 04 0a"), []error{ErrNotReady}, true},
		{"not ready cause not reportable", cc("70 00 02 00000000 0a 00000000 04 00"), []error{ErrNotReady}, false},
		{"not ready initializing command required", cc("70 00 02 00000000 0a 00000000 04 02"), []error{ErrNotReady, ErrStartRequired}, false},
		{"not ready manual intervention", cc("70 00 02 00000000 0a 00000000 04 03"), []error{ErrNotReady}, false},
		{"medium not present", cc("70 00 02 00000000 0a 00000000 3a 00"), []error{ErrNotReady, ErrMediumNotPresent}, false},
		{"tgt UA 29/00", cc(capTgtSenseUA29), []error{ErrUnitAttention, ErrReset}, true},
		{"UA I_T nexus loss 29/07", cc("70 00 06 00000000 0a 00000000 29 07"), []error{ErrUnitAttention, ErrReset}, true},
		{"UA capacity changed", cc("70 00 06 00000000 0a 00000000 2a 09"), []error{ErrUnitAttention, ErrCapacityChanged}, true},
		{"UA mode parameters changed", cc("70 00 06 00000000 0a 00000000 2a 01"), []error{ErrUnitAttention, ErrModeChanged}, true},
		{"UA reported LUNs changed", cc("70 00 06 00000000 0a 00000000 3f 0e"), []error{ErrUnitAttention, ErrLUNsChanged}, true},
		{"UA microcode changed", cc("70 00 06 00000000 0a 00000000 3f 01"), []error{ErrUnitAttention}, true},
		{"aborted command", cc("70 00 0b 00000000 0a 00000000 47 7f"), []error{ErrAbortedCommand}, true},
		{"recovered error", cc("70 00 01 00000000 0a 00000000 17 01"), nil, false},
		{"istgt check condition without sense", st(StatusCheckCondition), []error{ErrNoSense}, false},
		{"busy", st(StatusBusy), []error{ErrBusy}, true},
		{"task set full", st(StatusTaskSetFull), []error{ErrBusy}, true},
		{"task aborted", st(StatusTaskAborted), []error{ErrAbortedCommand}, true},
		{"reservation conflict", st(StatusReservationConflict), []error{ErrReservation}, false},
		{"ACA active", st(StatusACAActive), nil, false},
		// Sense data with a non-CHECK CONDITION status classifies by status only.
		{"busy with sense", CheckStatus(nil, StatusBusy, hx(t, capTgtSenseUA29)), []error{ErrBusy}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Through a wrapper, as the session returns it.
			err := fmt.Errorf("lun 1: %w", tt.err)
			for _, target := range all {
				want := false
				for _, w := range tt.is {
					want = want || w == target
				}
				if got := errors.Is(err, target); got != want {
					t.Errorf("errors.Is(%v, %q) = %v", tt.err, target, got)
				}
			}
			var se *StatusError
			if !errors.As(err, &se) {
				t.Fatal("not a *StatusError")
			}
			if se.Retryable() != tt.retryable {
				t.Errorf("Retryable() = %v", se.Retryable())
			}
		})
	}
}
