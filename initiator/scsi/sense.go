package scsi

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Sense is decoded sense data (SPC-4), fixed or descriptor format.
type Sense struct {
	Key  SenseKey
	ASC  uint8 // ADDITIONAL SENSE CODE
	ASCQ uint8 // ADDITIONAL SENSE CODE QUALIFIER
	// Information is the INFORMATION field (for a medium error, the first
	// LBA in error); meaningful only with InformationValid.
	Information      uint64
	InformationValid bool
	Descriptor       bool // descriptor format (response code 0x72/0x73)
	Deferred         bool // deferred error (0x71/0x73): about an earlier command
}

// Sense data response codes (SPC-4).
const (
	senseFixedCurrent       = 0x70
	senseFixedDeferred      = 0x71
	senseDescriptorCurrent  = 0x72
	senseDescriptorDeferred = 0x73
)

var errEmptySense = errors.New("scsi: empty sense data")

// ParseSense decodes sense data:
//
//   - fixed format (response code 0x70/0x71): SENSE KEY in byte 2 bits 3-0,
//     ASC in byte 12, ASCQ in byte 13, INFORMATION in bytes 3-6 when the
//     VALID bit (byte 0 bit 7) is set;
//   - descriptor format (0x72/0x73): SENSE KEY in byte 1, ASC in byte 2,
//     ASCQ in byte 3, INFORMATION from an information descriptor (type 0)
//     among the descriptors from byte 8 (walked within both the ADDITIONAL
//     SENSE LENGTH and the data present).
//
// Short sense data gives what is present without error as long as the sense
// key is (3 bytes for fixed, 2 for descriptor format): a missing ASC/ASCQ
// reads as 0/0. Empty or shorter data, and unknown response codes, are
// errors. b is the sense data without iSCSI's 2-byte SenseLength.
func ParseSense(b []byte) (Sense, error) {
	if len(b) == 0 {
		return Sense{}, errEmptySense
	}
	code := b[0] & 0x7f
	switch code {
	case senseFixedCurrent, senseFixedDeferred:
		if len(b) < 3 {
			return Sense{}, errShort("fixed format sense data", len(b), 3)
		}
		s := Sense{Key: SenseKey(b[2] & 0x0f), Deferred: code == senseFixedDeferred}
		if len(b) >= 7 && b[0]&0x80 != 0 {
			s.Information = uint64(binary.BigEndian.Uint32(b[3:7]))
			s.InformationValid = true
		}
		if len(b) >= 13 {
			s.ASC = b[12]
		}
		if len(b) >= 14 {
			s.ASCQ = b[13]
		}
		return s, nil
	case senseDescriptorCurrent, senseDescriptorDeferred:
		if len(b) < 2 {
			return Sense{}, errShort("descriptor format sense data", len(b), 2)
		}
		s := Sense{Key: SenseKey(b[1] & 0x0f), Descriptor: true, Deferred: code == senseDescriptorDeferred}
		if len(b) >= 3 {
			s.ASC = b[2]
		}
		if len(b) >= 4 {
			s.ASCQ = b[3]
		}
		if len(b) >= 8 {
			end := min(len(b), 8+int(b[7]))
			for off := 8; off+2 <= end; {
				typ, n := b[off], int(b[off+1])
				if typ == 0x00 && n >= 0x0a && off+12 <= end {
					s.InformationValid = b[off+2]&0x80 != 0
					s.Information = binary.BigEndian.Uint64(b[off+4 : off+12])
					break
				}
				off += 2 + n
			}
		}
		return s, nil
	}
	return Sense{}, fmt.Errorf("scsi: sense data: unsupported response code 0x%02X", code)
}

// Description is the SPC-4 text of the ASC/ASCQ pair ("LOGICAL BLOCK
// ADDRESS OUT OF RANGE"), or "ASC 0xNN ASCQ 0xNN" for a pair not in the
// table (vendor specific codes among them).
func (s Sense) Description() string {
	if d, ok := ascText[uint16(s.ASC)<<8|uint16(s.ASCQ)]; ok {
		return d
	}
	switch {
	case s.ASC == 0x40 && s.ASCQ >= 0x80:
		return fmt.Sprintf("DIAGNOSTIC FAILURE ON COMPONENT %02XH", s.ASCQ)
	case s.ASC == 0x4d:
		return fmt.Sprintf("TAGGED OVERLAPPED COMMANDS (TASK TAG %02XH)", s.ASCQ)
	}
	return fmt.Sprintf("ASC 0x%02X ASCQ 0x%02X", s.ASC, s.ASCQ)
}

// String is "KEY: DESCRIPTION (KK/AA/QQ)", e.g.
// "ILLEGAL REQUEST: LOGICAL BLOCK ADDRESS OUT OF RANGE (05/21/00)".
func (s Sense) String() string {
	return fmt.Sprintf("%s: %s (%02X/%02X/%02X)", s.Key, s.Description(), uint8(s.Key), s.ASC, s.ASCQ)
}
