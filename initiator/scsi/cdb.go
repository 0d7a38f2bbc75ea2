package scsi

import (
	"encoding/binary"
	"fmt"
)

// Operation codes (SPC-4, SBC-3) of the commands this package builds or names.
const (
	OpTestUnitReady          = 0x00
	OpRequestSense           = 0x03
	OpFormatUnit             = 0x04
	OpRead6                  = 0x08
	OpWrite6                 = 0x0a
	OpInquiry                = 0x12
	OpModeSelect6            = 0x15
	OpReserve6               = 0x16
	OpRelease6               = 0x17
	OpModeSense6             = 0x1a
	OpStartStopUnit          = 0x1b
	OpReceiveDiagnostic      = 0x1c
	OpSendDiagnostic         = 0x1d
	OpPreventAllowRemoval    = 0x1e
	OpReadCapacity10         = 0x25
	OpRead10                 = 0x28
	OpWrite10                = 0x2a
	OpWriteAndVerify10       = 0x2e
	OpVerify10               = 0x2f
	OpPreFetch10             = 0x34
	OpSynchronizeCache10     = 0x35
	OpWriteBuffer            = 0x3b
	OpReadBuffer             = 0x3c
	OpWriteSame10            = 0x41
	OpUnmap                  = 0x42
	OpLogSelect              = 0x4c
	OpLogSense               = 0x4d
	OpModeSelect10           = 0x55
	OpReserve10              = 0x56
	OpRelease10              = 0x57
	OpModeSense10            = 0x5a
	OpPersistentReserveIn    = 0x5e
	OpPersistentReserveOut   = 0x5f
	OpVariableLength         = 0x7f
	OpExtendedCopy           = 0x83
	OpReceiveCopyResults     = 0x84
	OpRead16                 = 0x88
	OpCompareAndWrite        = 0x89
	OpWrite16                = 0x8a
	OpWriteAndVerify16       = 0x8e
	OpVerify16               = 0x8f
	OpPreFetch16             = 0x90
	OpSynchronizeCache16     = 0x91
	OpWriteSame16            = 0x93
	OpServiceActionIn16      = 0x9e
	OpServiceActionOut16     = 0x9f
	OpReportLUNs             = 0xa0
	OpMaintenanceIn          = 0xa3
	OpMaintenanceOut         = 0xa4
	OpRead12                 = 0xa8
	OpWrite12                = 0xaa
	OpWriteAndVerify12       = 0xae
	OpVerify12               = 0xaf
	SAReadCapacity16         = 0x10 // SERVICE ACTION IN(16)
	SAGetLBAStatus           = 0x12 // SERVICE ACTION IN(16)
	SAReportTargetPortGroups = 0x0a // MAINTENANCE IN
	SAReportSupportedOpcodes = 0x0c // MAINTENANCE IN
	SAReportSupportedTMFs    = 0x0d // MAINTENANCE IN
)

// Flag bits of READ/WRITE byte 1 (SBC-3).
const (
	cdbFUA = 0x08
)

// TestUnitReady builds TEST UNIT READY (SPC-4): six zero bytes.
func TestUnitReady() []byte {
	return make([]byte, 6)
}

// Inquiry builds INQUIRY (SPC-4). With evpd false the standard INQUIRY data is
// requested and page is ignored (SPC-4 requires PAGE CODE zero when EVPD is
// zero; a target answers a non-zero one with ILLEGAL REQUEST 24/00). With evpd
// true page selects the vital product data page.
func Inquiry(evpd bool, page uint8, alloc uint16) []byte {
	cdb := make([]byte, 6)
	cdb[0] = OpInquiry
	if evpd {
		cdb[1] = 0x01
		cdb[2] = page
	}
	binary.BigEndian.PutUint16(cdb[3:5], alloc)
	return cdb
}

// ReportLUNs builds REPORT LUNS (SPC-4) with SELECT REPORT 0 (all logical
// units that are addressable). SPC-4 requires an allocation length of at
// least 16.
func ReportLUNs(alloc uint32) []byte {
	cdb := make([]byte, 12)
	cdb[0] = OpReportLUNs
	binary.BigEndian.PutUint32(cdb[6:10], alloc)
	return cdb
}

// ReadCapacity10 builds READ CAPACITY(10) (SBC-3); the answer is 8 bytes.
func ReadCapacity10() []byte {
	cdb := make([]byte, 10)
	cdb[0] = OpReadCapacity10
	return cdb
}

// ReadCapacity16 builds READ CAPACITY(16), SERVICE ACTION IN(16) with service
// action 0x10 (SBC-3). The answer is 32 bytes; 12 are enough for the capacity.
func ReadCapacity16(alloc uint32) []byte {
	cdb := make([]byte, 16)
	cdb[0] = OpServiceActionIn16
	cdb[1] = SAReadCapacity16
	binary.BigEndian.PutUint32(cdb[10:14], alloc)
	return cdb
}

// Fits10 reports whether a transfer of blocks logical blocks starting at lba
// can be expressed by a 10-byte READ, WRITE or SYNCHRONIZE CACHE: a 32-bit
// LBA field (lba < 2^32 and lba+blocks <= 2^32, so that every addressed block
// has a 32-bit address) and a 16-bit length field (blocks <= 65535).
func Fits10(lba uint64, blocks uint32) bool {
	return blocks <= 0xffff && lba <= 0xffffffff && lba <= 1<<32-uint64(blocks)
}

// rw builds the 10- or 16-byte form of a READ or WRITE style command whose
// byte 1 holds flags, with the LBA and length at the SBC-3 offsets.
func rw(op10, op16 uint8, lba uint64, blocks uint32, flags uint8, force16 bool) []byte {
	if !force16 && Fits10(lba, blocks) {
		cdb := make([]byte, 10)
		cdb[0] = op10
		cdb[1] = flags
		binary.BigEndian.PutUint32(cdb[2:6], uint32(lba))
		binary.BigEndian.PutUint16(cdb[7:9], uint16(blocks))
		return cdb
	}
	cdb := make([]byte, 16)
	cdb[0] = op16
	cdb[1] = flags
	binary.BigEndian.PutUint64(cdb[2:10], lba)
	binary.BigEndian.PutUint32(cdb[10:14], blocks)
	return cdb
}

// flag is v when set is true, else 0: one bit of a CDB flags byte.
func flag(set bool, v uint8) uint8 {
	if set {
		return v
	}
	return 0
}

// Read builds READ(10) when Fits10(lba, blocks) and !force16, else READ(16)
// (SBC-3). fua sets FORCE UNIT ACCESS (read from the medium, not the cache).
// blocks 0 transfers nothing and is not an error.
func Read(lba uint64, blocks uint32, fua, force16 bool) []byte {
	return rw(OpRead10, OpRead16, lba, blocks, flag(fua, cdbFUA), force16)
}

// Write builds WRITE(10) when Fits10(lba, blocks) and !force16, else
// WRITE(16) (SBC-3). fua sets FORCE UNIT ACCESS: the data is on the medium
// when the command completes (O_SYNC/O_DSYNC writes).
func Write(lba uint64, blocks uint32, fua, force16 bool) []byte {
	return rw(OpWrite10, OpWrite16, lba, blocks, flag(fua, cdbFUA), force16)
}

// SynchronizeCache builds SYNCHRONIZE CACHE(10) when Fits10(lba, blocks),
// else SYNCHRONIZE CACHE(16) (SBC-3), without IMMED: the command completes
// when the cache is on the medium. blocks 0 means from lba to the end of the
// medium, so SynchronizeCache(0, 0) flushes everything.
func SynchronizeCache(lba uint64, blocks uint32) []byte {
	return rw(OpSynchronizeCache10, OpSynchronizeCache16, lba, blocks, 0, false)
}

// Unmap builds UNMAP (SBC-3) with a parameter list of paramLen bytes, as
// returned by UnmapParameterList (len of it).
func Unmap(paramLen uint16) []byte {
	cdb := make([]byte, 10)
	cdb[0] = OpUnmap
	binary.BigEndian.PutUint16(cdb[7:9], paramLen)
	return cdb
}

// Extent is a range of logical blocks.
type Extent struct {
	LBA    uint64
	Blocks uint32
}

// MaxUnmapDescriptors is the most block descriptors one UNMAP parameter list
// can carry: its UNMAP DATA LENGTH field is 16 bits (6 + 16×4095 = 65526).
// Targets may allow fewer (BlockLimits.MaxUnmapDescriptorCount) or report
// "no limit" (tgt reports 0xFFFFFFFF): split by the smaller of the two.
const MaxUnmapDescriptors = (0xffff - 6) / 16

// UnmapParameterList builds the UNMAP parameter list (SBC-3): an 8-byte
// header (UNMAP DATA LENGTH, UNMAP BLOCK DESCRIPTOR DATA LENGTH) followed by
// one 16-byte descriptor (LBA, number of blocks) per extent, in order.
//
// It panics if len(extents) > MaxUnmapDescriptors: such a list cannot be
// described by the 16-bit length fields, and silently dropping extents would
// leave blocks mapped that the caller asked to release.
func UnmapParameterList(extents []Extent) []byte {
	if len(extents) > MaxUnmapDescriptors {
		panic(fmt.Sprintf("scsi: UnmapParameterList: %d extents exceed MaxUnmapDescriptors (%d)", len(extents), MaxUnmapDescriptors))
	}
	descLen := 16 * len(extents)
	p := make([]byte, 8+descLen)
	binary.BigEndian.PutUint16(p[0:2], uint16(6+descLen))
	binary.BigEndian.PutUint16(p[2:4], uint16(descLen))
	for i, e := range extents {
		d := p[8+16*i:]
		binary.BigEndian.PutUint64(d[0:8], e.LBA)
		binary.BigEndian.PutUint32(d[8:12], e.Blocks)
	}
	return p
}

// WriteSame16 builds WRITE SAME(16) (SBC-3). The Data-Out buffer is one
// logical block that is written to every block of the range (NDOB is never
// set). With unmap the device server may instead unmap the range (when the
// block is zeros and LBPWS=1). blocks 0 means to the end of the medium unless
// BlockLimits.WSNZ is set, in which case the target rejects it.
func WriteSame16(lba uint64, blocks uint32, unmap bool) []byte {
	cdb := make([]byte, 16)
	cdb[0] = OpWriteSame16
	cdb[1] = flag(unmap, 0x08)
	binary.BigEndian.PutUint64(cdb[2:10], lba)
	binary.BigEndian.PutUint32(cdb[10:14], blocks)
	return cdb
}

// ModeSense6 builds MODE SENSE(6) (SPC-4) for the current values (PC 00b) of
// page (6 bits; 0x3F = all pages) and subpage. dbd asks the device server not
// to return block descriptors.
func ModeSense6(page, subpage uint8, alloc uint8, dbd bool) []byte {
	cdb := make([]byte, 6)
	cdb[0] = OpModeSense6
	cdb[1] = flag(dbd, 0x08)
	cdb[2] = page & 0x3f
	cdb[3] = subpage
	cdb[4] = alloc
	return cdb
}

// ModeSense10 builds MODE SENSE(10) (SPC-4) for the current values of page
// and subpage; LLBAA is not set. dbd asks for no block descriptors.
func ModeSense10(page, subpage uint8, alloc uint16, dbd bool) []byte {
	cdb := make([]byte, 10)
	cdb[0] = OpModeSense10
	cdb[1] = flag(dbd, 0x08)
	cdb[2] = page & 0x3f
	cdb[3] = subpage
	binary.BigEndian.PutUint16(cdb[7:9], alloc)
	return cdb
}

// GetLBAStatus builds GET LBA STATUS, SERVICE ACTION IN(16) with service
// action 0x12 (SBC-3), starting at lba. The answer is an 8-byte header and
// 16 bytes per descriptor.
func GetLBAStatus(lba uint64, alloc uint32) []byte {
	cdb := make([]byte, 16)
	cdb[0] = OpServiceActionIn16
	cdb[1] = SAGetLBAStatus
	binary.BigEndian.PutUint64(cdb[2:10], lba)
	binary.BigEndian.PutUint32(cdb[10:14], alloc)
	return cdb
}

// StartStopUnit builds START STOP UNIT (SBC-3) with power condition 0 and
// LOEJ clear: start true asks the logical unit to become ready (the cure for
// NOT READY 04/02 "initializing command required"), false to stop. immed
// lets the command complete before the operation does.
func StartStopUnit(start, immed bool) []byte {
	cdb := make([]byte, 6)
	cdb[0] = OpStartStopUnit
	cdb[1] = flag(immed, 0x01)
	cdb[4] = flag(start, 0x01)
	return cdb
}

// RequestSense builds REQUEST SENSE (SPC-4); desc asks for descriptor format
// sense data.
func RequestSense(desc bool, alloc uint8) []byte {
	cdb := make([]byte, 6)
	cdb[0] = OpRequestSense
	cdb[1] = flag(desc, 0x01)
	cdb[4] = alloc
	return cdb
}

// ReportTargetPortGroups builds REPORT TARGET PORT GROUPS (SPC-4 6.36):
// MAINTENANCE IN, service action 0x0A, PARAMETER DATA FORMAT 000b (the
// length-only header that ParseReportTargetPortGroups reads). The answer
// is 4 + RETURN DATA LENGTH bytes (RTPGLength).
func ReportTargetPortGroups(alloc uint32) []byte {
	cdb := make([]byte, 12)
	cdb[0] = OpMaintenanceIn
	cdb[1] = SAReportTargetPortGroups
	binary.BigEndian.PutUint32(cdb[6:10], alloc)
	return cdb
}

var opNames = map[uint8]string{
	OpTestUnitReady:        "TEST UNIT READY",
	OpRequestSense:         "REQUEST SENSE",
	OpFormatUnit:           "FORMAT UNIT",
	OpRead6:                "READ(6)",
	OpWrite6:               "WRITE(6)",
	OpInquiry:              "INQUIRY",
	OpModeSelect6:          "MODE SELECT(6)",
	OpReserve6:             "RESERVE(6)",
	OpRelease6:             "RELEASE(6)",
	OpModeSense6:           "MODE SENSE(6)",
	OpStartStopUnit:        "START STOP UNIT",
	OpReceiveDiagnostic:    "RECEIVE DIAGNOSTIC RESULTS",
	OpSendDiagnostic:       "SEND DIAGNOSTIC",
	OpPreventAllowRemoval:  "PREVENT ALLOW MEDIUM REMOVAL",
	OpReadCapacity10:       "READ CAPACITY(10)",
	OpRead10:               "READ(10)",
	OpWrite10:              "WRITE(10)",
	OpWriteAndVerify10:     "WRITE AND VERIFY(10)",
	OpVerify10:             "VERIFY(10)",
	OpPreFetch10:           "PRE-FETCH(10)",
	OpSynchronizeCache10:   "SYNCHRONIZE CACHE(10)",
	OpWriteBuffer:          "WRITE BUFFER",
	OpReadBuffer:           "READ BUFFER",
	OpWriteSame10:          "WRITE SAME(10)",
	OpUnmap:                "UNMAP",
	OpLogSelect:            "LOG SELECT",
	OpLogSense:             "LOG SENSE",
	OpModeSelect10:         "MODE SELECT(10)",
	OpReserve10:            "RESERVE(10)",
	OpRelease10:            "RELEASE(10)",
	OpModeSense10:          "MODE SENSE(10)",
	OpPersistentReserveIn:  "PERSISTENT RESERVE IN",
	OpPersistentReserveOut: "PERSISTENT RESERVE OUT",
	OpVariableLength:       "VARIABLE LENGTH CDB",
	OpExtendedCopy:         "EXTENDED COPY",
	OpReceiveCopyResults:   "RECEIVE COPY RESULTS",
	OpRead16:               "READ(16)",
	OpCompareAndWrite:      "COMPARE AND WRITE",
	OpWrite16:              "WRITE(16)",
	OpWriteAndVerify16:     "WRITE AND VERIFY(16)",
	OpVerify16:             "VERIFY(16)",
	OpPreFetch16:           "PRE-FETCH(16)",
	OpSynchronizeCache16:   "SYNCHRONIZE CACHE(16)",
	OpWriteSame16:          "WRITE SAME(16)",
	OpServiceActionIn16:    "SERVICE ACTION IN(16)",
	OpServiceActionOut16:   "SERVICE ACTION OUT(16)",
	OpReportLUNs:           "REPORT LUNS",
	OpMaintenanceIn:        "MAINTENANCE IN",
	OpMaintenanceOut:       "MAINTENANCE OUT",
	OpRead12:               "READ(12)",
	OpWrite12:              "WRITE(12)",
	OpWriteAndVerify12:     "WRITE AND VERIFY(12)",
	OpVerify12:             "VERIFY(12)",
}

// OpName names the command in cdb for messages: "READ(10)", "WRITE(16)",
// "READ CAPACITY(16)" (service actions of SERVICE ACTION IN(16) and
// MAINTENANCE IN are resolved), "OPCODE 0xNN" for an unknown operation code
// and "EMPTY CDB" for an empty one.
func OpName(cdb []byte) string {
	if len(cdb) == 0 {
		return "EMPTY CDB"
	}
	if len(cdb) > 1 {
		sa := cdb[1] & 0x1f
		switch {
		case cdb[0] == OpServiceActionIn16 && sa == SAReadCapacity16:
			return "READ CAPACITY(16)"
		case cdb[0] == OpServiceActionIn16 && sa == SAGetLBAStatus:
			return "GET LBA STATUS"
		case cdb[0] == OpMaintenanceIn && sa == SAReportTargetPortGroups:
			return "REPORT TARGET PORT GROUPS"
		case cdb[0] == OpMaintenanceIn && sa == SAReportSupportedOpcodes:
			return "REPORT SUPPORTED OPERATION CODES"
		case cdb[0] == OpMaintenanceIn && sa == SAReportSupportedTMFs:
			return "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS"
		}
	}
	if name, ok := opNames[cdb[0]]; ok {
		return name
	}
	return fmt.Sprintf("OPCODE 0x%02X", cdb[0])
}
