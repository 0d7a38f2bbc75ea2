package scsi

import (
	"fmt"
	"strings"
)

// Peripheral device types (SPC-4 INQUIRY byte 0 bits 4-0), the ones an
// initiator meets on iSCSI targets.
const (
	TypeDisk                   = 0x00 // direct-access block device (SBC)
	TypeTape                   = 0x01
	TypePrinter                = 0x02
	TypeProcessor              = 0x03
	TypeWriteOnce              = 0x04
	TypeCDROM                  = 0x05
	TypeScanner                = 0x06
	TypeOptical                = 0x07
	TypeMediumChanger          = 0x08
	TypeComm                   = 0x09
	TypeStorageArrayController = 0x0c // tgt's LUN 0
	TypeEnclosure              = 0x0d
	TypeRBC                    = 0x0e
	TypeOCRW                   = 0x0f
	TypeBridge                 = 0x10
	TypeOSD                    = 0x11
	TypeADC                    = 0x12
	TypeSecurityManager        = 0x13
	TypeZBC                    = 0x14
	TypeWellKnownLU            = 0x1e
	TypeUnknown                = 0x1f // unknown or no device type
)

// Peripheral qualifiers (SPC-4 INQUIRY byte 0 bits 7-5).
const (
	QualifierConnected    = 0 // a device of the reported type is connected
	QualifierNotConnected = 1 // supported but not connected now
	QualifierNotSupported = 3 // no logical unit here
)

// TARGET PORT GROUP SUPPORT values (SPC-4 standard INQUIRY byte 5): how the
// logical unit supports asymmetric logical unit access (ALUA).
const (
	TPGSNone     = 0 // no ALUA: every port serves the logical unit alike
	TPGSImplicit = 1 // the device changes the access states itself
	TPGSExplicit = 2 // only SET TARGET PORT GROUPS changes them
	TPGSBoth     = 3
)

// InquiryData is the standard INQUIRY data (SPC-4).
type InquiryData struct {
	PeripheralQualifier uint8
	DeviceType          uint8
	Removable           bool
	Version             uint8
	// AdditionalLength is the ADDITIONAL LENGTH field: the device has
	// AdditionalLength+5 bytes of INQUIRY data in all; re-issue INQUIRY with
	// that allocation length when more than what was read is needed.
	AdditionalLength int
	// TPGS is the TARGET PORT GROUP SUPPORT field (byte 5 bits 5-4): 0
	// (TPGSNone) when the logical unit has no asymmetric logical unit
	// access (tgt, istgt), else it answers REPORT TARGET PORT GROUPS.
	TPGS uint8
	// Vendor, Product and Revision are the T10 VENDOR IDENTIFICATION,
	// PRODUCT IDENTIFICATION and PRODUCT REVISION LEVEL with surrounding
	// spaces and NULs removed; empty when the data is too short to hold them.
	Vendor, Product, Revision string
}

// DirectAccess reports whether the logical unit is a connected direct-access
// block device (qualifier 0, type 0): the only kind iscsifs turns into files.
func (d InquiryData) DirectAccess() bool {
	return d.PeripheralQualifier == QualifierConnected && d.DeviceType == TypeDisk
}

// errShort is the error of a parser that did not get enough bytes.
func errShort(what string, got, need int) error {
	return fmt.Errorf("scsi: %s: %d bytes, need at least %d", what, got, need)
}

// trimField turns a fixed-width ASCII field into text: surrounding spaces and
// NULs are removed.
func trimField(b []byte) string {
	return strings.Trim(string(b), " \x00")
}

// ParseInquiry decodes standard INQUIRY data. It needs 5 bytes (through
// ADDITIONAL LENGTH); each of Vendor (bytes 8-15), Product (16-31) and
// Revision (32-35) is filled only when its whole field is present, so data
// of 5 to 15 bytes gives empty strings.
func ParseInquiry(b []byte) (InquiryData, error) {
	if len(b) < 5 {
		return InquiryData{}, errShort("INQUIRY data", len(b), 5)
	}
	d := InquiryData{
		PeripheralQualifier: b[0] >> 5,
		DeviceType:          b[0] & 0x1f,
		Removable:           b[1]&0x80 != 0,
		Version:             b[2],
		AdditionalLength:    int(b[4]),
	}
	if len(b) >= 6 {
		d.TPGS = b[5] >> 4 & 0x03
	}
	if len(b) >= 16 {
		d.Vendor = trimField(b[8:16])
	}
	if len(b) >= 32 {
		d.Product = trimField(b[16:32])
	}
	if len(b) >= 36 {
		d.Revision = trimField(b[32:36])
	}
	return d, nil
}
