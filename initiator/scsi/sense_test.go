package scsi

import "testing"

func TestParseSense(t *testing.T) {
	tests := []struct {
		name string
		data string
		want Sense
		str  string
		err  bool
	}{
		{"tgt UA power on (fixed)", capTgtSenseUA29,
			Sense{Key: SenseUnitAttention, ASC: 0x29},
			"UNIT ATTENTION: POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (06/29/00)", false},
		{"tgt read past the end (fixed)", capTgtSenseLBA,
			Sense{Key: SenseIllegalRequest, ASC: 0x21},
			"ILLEGAL REQUEST: LOGICAL BLOCK ADDRESS OUT OF RANGE (05/21/00)", false},
		{"tgt write to read-only LUN (fixed)", capTgtSenseWP,
			Sense{Key: SenseDataProtect, ASC: 0x27},
			"DATA PROTECT: WRITE PROTECTED (07/27/00)", false},
		{"tgt invalid field", capTgtSenseBadCDB,
			Sense{Key: SenseIllegalRequest, ASC: 0x24},
			"ILLEGAL REQUEST: INVALID FIELD IN CDB (05/24/00)", false},
		{"tgt sense_format=1 (descriptor)", capTgtSenseDescLBA,
			Sense{Key: SenseIllegalRequest, ASC: 0x21, Descriptor: true},
			"ILLEGAL REQUEST: LOGICAL BLOCK ADDRESS OUT OF RANGE (05/21/00)", false},
		{"tgt descriptor UA", capTgtSenseDescUA,
			Sense{Key: SenseUnitAttention, ASC: 0x29, Descriptor: true},
			"UNIT ATTENTION: POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (06/29/00)", false},
		{"istgt invalid opcode (VALID set, information 0)", capIstgtSense2000,
			Sense{Key: SenseIllegalRequest, ASC: 0x20, InformationValid: true},
			"ILLEGAL REQUEST: INVALID COMMAND OPERATION CODE (05/20/00)", false},
		{"medium error with LBA", "f0 00 03 00123456 0a 00000000 11 00 00 000000",
			Sense{Key: SenseMediumError, ASC: 0x11, Information: 0x123456, InformationValid: true},
			"MEDIUM ERROR: UNRECOVERED READ ERROR (03/11/00)", false},
		{"information without VALID", "70 00 03 00123456 0a 00000000 11 00",
			Sense{Key: SenseMediumError, ASC: 0x11},
			"MEDIUM ERROR: UNRECOVERED READ ERROR (03/11/00)", false},
		{"deferred fixed", "71 00 04 00000000 0a 00000000 44 00",
			Sense{Key: SenseHardwareError, ASC: 0x44, Deferred: true},
			"HARDWARE ERROR: INTERNAL TARGET FAILURE (04/44/00)", false},
		{"not ready becoming ready", "70 00 02 00000000 0a 00000000 04 01",
			Sense{Key: SenseNotReady, ASC: 0x04, ASCQ: 0x01},
			"NOT READY: LOGICAL UNIT IS IN PROCESS OF BECOMING READY (02/04/01)", false},
		{"capacity changed", "70 00 06 00000000 0a 00000000 2a 09",
			Sense{Key: SenseUnitAttention, ASC: 0x2a, ASCQ: 0x09},
			"UNIT ATTENTION: CAPACITY DATA HAS CHANGED (06/2A/09)", false},
		{"descriptor with information descriptor", "72 03 11 00 000000 14" +
			"02 06 0000 800010 00" + // sense key specific, skipped
			"00 0a 80 00 0000000123456789", // information, VALID
			Sense{Key: SenseMediumError, ASC: 0x11, Information: 0x123456789, InformationValid: true, Descriptor: true},
			"MEDIUM ERROR: UNRECOVERED READ ERROR (03/11/00)", false},
		{"descriptor information cut by additional length", "72 03 11 00 000000 08" +
			"00 0a 80 00 0000000123456789",
			Sense{Key: SenseMediumError, ASC: 0x11, Descriptor: true},
			"MEDIUM ERROR: UNRECOVERED READ ERROR (03/11/00)", false},
		{"descriptor information cut by the data", "72 03 11 00 000000 0c 00 0a 80 00 00000001",
			Sense{Key: SenseMediumError, ASC: 0x11, Descriptor: true},
			"MEDIUM ERROR: UNRECOVERED READ ERROR (03/11/00)", false},
		{"deferred descriptor", "73 0b 47 7f 00000000",
			Sense{Key: SenseAbortedCommand, ASC: 0x47, ASCQ: 0x7f, Descriptor: true, Deferred: true},
			"ABORTED COMMAND: SOME COMMANDS CLEARED BY ISCSI PROTOCOL EVENT (0B/47/7F)", false},
		{"fixed, key only", "70 00 06",
			Sense{Key: SenseUnitAttention},
			"UNIT ATTENTION: NO ADDITIONAL SENSE INFORMATION (06/00/00)", false},
		{"fixed, ASC without ASCQ", "70 00 05 00000000 0a 00000000 25",
			Sense{Key: SenseIllegalRequest, ASC: 0x25},
			"ILLEGAL REQUEST: LOGICAL UNIT NOT SUPPORTED (05/25/00)", false},
		{"fixed, VALID but information cut", "f0 00 03 0012",
			Sense{Key: SenseMediumError},
			"MEDIUM ERROR: NO ADDITIONAL SENSE INFORMATION (03/00/00)", false},
		{"descriptor, key only", "72 07",
			Sense{Key: SenseDataProtect, Descriptor: true},
			"DATA PROTECT: NO ADDITIONAL SENSE INFORMATION (07/00/00)", false},
		{"descriptor, ASC only", "72 05 24",
			Sense{Key: SenseIllegalRequest, ASC: 0x24, Descriptor: true},
			"ILLEGAL REQUEST: INVALID FIELD IN CDB (05/24/00)", false},
		{"key bits above 4 masked", "70 00 e5 00000000 0a 00000000 21 00",
			Sense{Key: SenseIllegalRequest, ASC: 0x21},
			"ILLEGAL REQUEST: LOGICAL BLOCK ADDRESS OUT OF RANGE (05/21/00)", false},
		{"vendor specific ASC", "70 00 04 00000000 0a 00000000 80 01",
			Sense{Key: SenseHardwareError, ASC: 0x80, ASCQ: 0x01},
			"HARDWARE ERROR: ASC 0x80 ASCQ 0x01 (04/80/01)", false},
		{"diagnostic failure on component", "70 00 04 00000000 0a 00000000 40 81",
			Sense{Key: SenseHardwareError, ASC: 0x40, ASCQ: 0x81},
			"HARDWARE ERROR: DIAGNOSTIC FAILURE ON COMPONENT 81H (04/40/81)", false},
		{"fixed, 2 bytes", "70 00", Sense{}, "", true},
		{"descriptor, 1 byte", "72", Sense{}, "", true},
		{"empty (istgt sends CHECK CONDITION without sense)", "", Sense{}, "", true},
		{"vendor response code", "7f 00 05", Sense{}, "", true},
		{"unknown response code", "00 00 05", Sense{}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSense(hx(t, tt.data))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v", err)
			}
			if tt.err {
				return
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if s := got.String(); s != tt.str {
				t.Errorf("String() = %q\nwant       %q", s, tt.str)
			}
		})
	}
}

func TestSenseDescriptions(t *testing.T) {
	// The codes the initiator reacts to must have their SPC-4 text.
	for _, c := range []struct{ asc, ascq uint8 }{
		{0x04, 0x00}, {0x04, 0x01}, {0x04, 0x02}, {0x04, 0x03}, {0x04, 0x07}, {0x04, 0x0a},
		{0x0c, 0x00}, {0x11, 0x00}, {0x1a, 0x00}, {0x20, 0x00}, {0x21, 0x00}, {0x24, 0x00},
		{0x25, 0x00}, {0x26, 0x00}, {0x27, 0x00}, {0x28, 0x00},
		{0x29, 0x00}, {0x29, 0x01}, {0x29, 0x02}, {0x29, 0x03}, {0x29, 0x04}, {0x29, 0x05}, {0x29, 0x06}, {0x29, 0x07},
		{0x2a, 0x01}, {0x2a, 0x09}, {0x3a, 0x00}, {0x3f, 0x01}, {0x3f, 0x0e}, {0x44, 0x00}, {0x47, 0x7f},
	} {
		d := Sense{ASC: c.asc, ASCQ: c.ascq}.Description()
		if d == "" || d[:4] == "ASC " {
			t.Errorf("%02X/%02X has no description (%q)", c.asc, c.ascq, d)
		}
	}
	if d := (Sense{ASC: 0x4d, ASCQ: 0x12}).Description(); d != "TAGGED OVERLAPPED COMMANDS (TASK TAG 12H)" {
		t.Errorf("4D/12: %q", d)
	}
	if d := (Sense{ASC: 0x40, ASCQ: 0x01}).Description(); d != "ASC 0x40 ASCQ 0x01" {
		t.Errorf("40/01: %q", d)
	}
}

func TestStatusAndSenseKeyStrings(t *testing.T) {
	for s, want := range map[Status]string{
		StatusGood: "GOOD", StatusCheckCondition: "CHECK CONDITION", StatusConditionMet: "CONDITION MET",
		StatusBusy: "BUSY", StatusReservationConflict: "RESERVATION CONFLICT", StatusTaskSetFull: "TASK SET FULL",
		StatusACAActive: "ACA ACTIVE", StatusTaskAborted: "TASK ABORTED", 0x01: "STATUS 0x01",
	} {
		if got := s.String(); got != want {
			t.Errorf("Status(%#x) = %q, want %q", uint8(s), got, want)
		}
	}
	for k, want := range map[SenseKey]string{
		SenseNoSense: "NO SENSE", SenseRecoveredError: "RECOVERED ERROR", SenseNotReady: "NOT READY",
		SenseMediumError: "MEDIUM ERROR", SenseHardwareError: "HARDWARE ERROR", SenseIllegalRequest: "ILLEGAL REQUEST",
		SenseUnitAttention: "UNIT ATTENTION", SenseDataProtect: "DATA PROTECT", SenseBlankCheck: "BLANK CHECK",
		SenseVendorSpecific: "VENDOR SPECIFIC", SenseCopyAborted: "COPY ABORTED", SenseAbortedCommand: "ABORTED COMMAND",
		SenseEqual: "EQUAL", SenseVolumeOverflow: "VOLUME OVERFLOW", SenseMiscompare: "MISCOMPARE", SenseCompleted: "COMPLETED",
		0x10: "SENSE KEY 0x10",
	} {
		if got := k.String(); got != want {
			t.Errorf("SenseKey(%#x) = %q, want %q", uint8(k), got, want)
		}
	}
}
