package scsi

import "fmt"

// Status is the SCSI status byte of a completed command (SAM-5).
type Status uint8

// Status codes (SAM-5). INTERMEDIATE (0x10), INTERMEDIATE-CONDITION MET
// (0x14) and COMMAND TERMINATED (0x22) are obsolete and only named.
const (
	StatusGood                Status = 0x00
	StatusCheckCondition      Status = 0x02
	StatusConditionMet        Status = 0x04
	StatusBusy                Status = 0x08
	StatusIntermediate        Status = 0x10
	StatusIntermediateCondMet Status = 0x14
	StatusReservationConflict Status = 0x18
	StatusCommandTerminated   Status = 0x22
	StatusTaskSetFull         Status = 0x28
	StatusACAActive           Status = 0x30
	StatusTaskAborted         Status = 0x40
)

var statusNames = map[Status]string{
	StatusGood:                "GOOD",
	StatusCheckCondition:      "CHECK CONDITION",
	StatusConditionMet:        "CONDITION MET",
	StatusBusy:                "BUSY",
	StatusIntermediate:        "INTERMEDIATE",
	StatusIntermediateCondMet: "INTERMEDIATE-CONDITION MET",
	StatusReservationConflict: "RESERVATION CONFLICT",
	StatusCommandTerminated:   "COMMAND TERMINATED",
	StatusTaskSetFull:         "TASK SET FULL",
	StatusACAActive:           "ACA ACTIVE",
	StatusTaskAborted:         "TASK ABORTED",
}

// String is the SAM-5 name of the status ("CHECK CONDITION"), or
// "STATUS 0xNN" for a reserved value.
func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("STATUS 0x%02X", uint8(s))
}

// SenseKey is the SENSE KEY of sense data (SPC-4).
type SenseKey uint8

// Sense keys (SPC-4; 0xC is obsolete, 0xF COMPLETED comes from SPC-5).
const (
	SenseNoSense        SenseKey = 0x0
	SenseRecoveredError SenseKey = 0x1
	SenseNotReady       SenseKey = 0x2
	SenseMediumError    SenseKey = 0x3
	SenseHardwareError  SenseKey = 0x4
	SenseIllegalRequest SenseKey = 0x5
	SenseUnitAttention  SenseKey = 0x6
	SenseDataProtect    SenseKey = 0x7
	SenseBlankCheck     SenseKey = 0x8
	SenseVendorSpecific SenseKey = 0x9
	SenseCopyAborted    SenseKey = 0xa
	SenseAbortedCommand SenseKey = 0xb
	SenseEqual          SenseKey = 0xc
	SenseVolumeOverflow SenseKey = 0xd
	SenseMiscompare     SenseKey = 0xe
	SenseCompleted      SenseKey = 0xf
)

var senseKeyNames = [16]string{
	"NO SENSE", "RECOVERED ERROR", "NOT READY", "MEDIUM ERROR",
	"HARDWARE ERROR", "ILLEGAL REQUEST", "UNIT ATTENTION", "DATA PROTECT",
	"BLANK CHECK", "VENDOR SPECIFIC", "COPY ABORTED", "ABORTED COMMAND",
	"EQUAL", "VOLUME OVERFLOW", "MISCOMPARE", "COMPLETED",
}

// String is the SPC-4 name of the sense key ("ILLEGAL REQUEST"), or
// "SENSE KEY 0xNN" for a value that does not fit in 4 bits.
func (k SenseKey) String() string {
	if int(k) < len(senseKeyNames) {
		return senseKeyNames[k]
	}
	return fmt.Sprintf("SENSE KEY 0x%02X", uint8(k))
}
