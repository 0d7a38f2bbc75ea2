package scsi

import (
	"encoding/binary"
	"errors"
)

// ReadCapacity10Overflow is the RETURNED LOGICAL BLOCK ADDRESS of READ
// CAPACITY(10) for a medium too large for it: use READ CAPACITY(16).
const ReadCapacity10Overflow = 0xffffffff

// Capacity is the answer of READ CAPACITY (SBC-3).
type Capacity struct {
	LastLBA     uint64 // RETURNED LOGICAL BLOCK ADDRESS: the last block
	BlockSize   uint32 // LOGICAL BLOCK LENGTH IN BYTES
	ProtEnabled bool   // PROT_EN: protection information is on (RC16)
	ProtType    uint8  // P_TYPE (RC16)
	LBPME       bool   // logical block provisioning enabled (RC16)
	LBPRZ       bool   // unmapped blocks read zeros (RC16)
	// PhysicalExponent is LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT:
	// 2^PhysicalExponent logical blocks make one physical block (RC16).
	PhysicalExponent uint8
	LowestAlignedLBA uint16 // LOWEST ALIGNED LOGICAL BLOCK ADDRESS (RC16)
}

// Blocks is the number of logical blocks: LastLBA+1.
func (c Capacity) Blocks() uint64 { return c.LastLBA + 1 }

// Bytes is the capacity in bytes: Blocks()*BlockSize.
func (c Capacity) Bytes() uint64 { return c.Blocks() * uint64(c.BlockSize) }

// Overflow10 reports whether this READ CAPACITY(10) answer says the medium
// is too large for it (LastLBA 0xFFFFFFFF): the real capacity needs READ
// CAPACITY(16).
func (c Capacity) Overflow10() bool { return c.LastLBA == ReadCapacity10Overflow }

var errZeroBlockSize = errors.New("scsi: READ CAPACITY: logical block length 0")

// ParseReadCapacity10 decodes the 8 bytes of READ CAPACITY(10) data. A block
// length of 0 is an error (no I/O could be sized by it).
func ParseReadCapacity10(b []byte) (Capacity, error) {
	if len(b) < 8 {
		return Capacity{}, errShort("READ CAPACITY(10) data", len(b), 8)
	}
	c := Capacity{
		LastLBA:   uint64(binary.BigEndian.Uint32(b[0:4])),
		BlockSize: binary.BigEndian.Uint32(b[4:8]),
	}
	if c.BlockSize == 0 {
		return Capacity{}, errZeroBlockSize
	}
	return c, nil
}

// ParseReadCapacity16 decodes READ CAPACITY(16) data. It needs the 12 bytes
// of LBA and block length; the flags of bytes 12-15 are decoded when present
// (a short answer leaves them false/0). A block length of 0 is an error.
func ParseReadCapacity16(b []byte) (Capacity, error) {
	if len(b) < 12 {
		return Capacity{}, errShort("READ CAPACITY(16) data", len(b), 12)
	}
	c := Capacity{
		LastLBA:   binary.BigEndian.Uint64(b[0:8]),
		BlockSize: binary.BigEndian.Uint32(b[8:12]),
	}
	if c.BlockSize == 0 {
		return Capacity{}, errZeroBlockSize
	}
	if len(b) >= 13 {
		c.ProtEnabled = b[12]&0x01 != 0
		c.ProtType = (b[12] >> 1) & 0x07
	}
	if len(b) >= 14 {
		c.PhysicalExponent = b[13] & 0x0f
	}
	if len(b) >= 15 {
		c.LBPME = b[14]&0x80 != 0
		c.LBPRZ = b[14]&0x40 != 0
	}
	if len(b) >= 16 {
		c.LowestAlignedLBA = binary.BigEndian.Uint16(b[14:16]) & 0x3fff
	}
	return c, nil
}
