package scsi

import "encoding/binary"

// Provisioning status of an LBA status descriptor (SBC-3).
const (
	LBAMapped      = 0 // mapped (or unknown)
	LBADeallocated = 1
	LBAAnchored    = 2
)

// LBAStatus is one LBA status descriptor of GET LBA STATUS: Blocks blocks
// from LBA share the provisioning Status (LBAMapped, LBADeallocated,
// LBAAnchored).
type LBAStatus struct {
	LBA    uint64
	Blocks uint32
	Status uint8
}

// ParseGetLBAStatus decodes GET LBA STATUS parameter data: an 8-byte header
// whose PARAMETER DATA LENGTH (bytes 0-3) counts the bytes after byte 3, then
// 16-byte descriptors. Only descriptors both announced and wholly present are
// returned (tgt announces more than fit in a short allocation length).
// Fewer than 8 bytes is an error.
func ParseGetLBAStatus(b []byte) ([]LBAStatus, error) {
	if len(b) < 8 {
		return nil, errShort("GET LBA STATUS data", len(b), 8)
	}
	end := uint64(binary.BigEndian.Uint32(b[0:4])) + 4
	end = min(end, uint64(len(b)))
	var ds []LBAStatus
	for off := uint64(8); off+16 <= end; off += 16 {
		d := b[off : off+16]
		ds = append(ds, LBAStatus{
			LBA:    binary.BigEndian.Uint64(d[0:8]),
			Blocks: binary.BigEndian.Uint32(d[8:12]),
			Status: d[12] & 0x0f,
		})
	}
	return ds, nil
}
