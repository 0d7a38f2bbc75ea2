package scsi

import "encoding/binary"

// EncodeLUN turns a LUN number into the 8-byte LUN structure of SAM-5, as
// used in REPORT LUNS data and in the LUN field of iSCSI PDUs:
//
//   - lun < 256: peripheral device addressing (00b), byte 1 = lun;
//   - lun < 16384: flat space addressing (01b), bytes 0-1 = 0x4000|lun;
//   - anything else is the inverse of DecodeLUN for structures that are not
//     single-level peripheral or flat LUNs: 0x4000-0x7FFF is a single-level
//     peripheral LUN with a non-zero bus identifier ((lun>>8)&0x3F, lun&0xFF),
//     and from 0x8000 up the number is split into 16-bit levels, lowest first
//     (bits 0-15 → bytes 0-1, bits 16-31 → bytes 2-3, and so on), the way
//     Linux's scsilun_to_int packs them.
//
// DecodeLUN(EncodeLUN(n)) == n for every n that DecodeLUN can return, which
// is every uint64 except 0x4000-0x40FF; for those (never produced by
// DecodeLUN) EncodeLUN gives the peripheral LUN n&0xFF. EncodeLUN never fails.
func EncodeLUN(lun uint64) [8]byte {
	var b [8]byte
	switch {
	case lun < 256:
		b[1] = byte(lun)
	case lun < 0x4000:
		b[0] = 0x40 | byte(lun>>8)
		b[1] = byte(lun)
	case lun < 0x8000:
		b[0] = byte(lun>>8) & 0x3f
		b[1] = byte(lun)
	default:
		for i := 0; i < 8; i += 2 {
			binary.BigEndian.PutUint16(b[i:i+2], uint16(lun>>(8*i)))
		}
	}
	return b
}

// DecodeLUN turns an 8-byte LUN structure into a LUN number:
//
//   - single level (bytes 2-7 zero), peripheral device addressing with bus
//     identifier 0: byte 1 (0-255);
//   - single level, flat space addressing: the 14-bit LUN (0-16383);
//   - single level, peripheral device addressing with a non-zero bus
//     identifier: 0x4000 | bus<<8 | byte 1 (0x4100-0x7FFF);
//   - anything else (logical unit or extended addressing, several levels):
//     the 16-bit levels packed lowest first (bytes 0-1 → bits 0-15, bytes 2-3
//     → bits 16-31, ...), always 0x8000 or more.
//
// EncodeLUN(DecodeLUN(b)) == b for every b except a flat-addressed LUN below
// 256, which comes back in the equivalent peripheral form.
func DecodeLUN(b [8]byte) uint64 {
	if binary.BigEndian.Uint64(b[:])&0xffffffffffff == 0 {
		switch b[0] >> 6 {
		case 0:
			if b[0] == 0 {
				return uint64(b[1])
			}
			return 0x4000 | uint64(b[0])<<8 | uint64(b[1])
		case 1:
			return uint64(b[0]&0x3f)<<8 | uint64(b[1])
		}
	}
	var lun uint64
	for i := 0; i < 8; i += 2 {
		lun |= uint64(binary.BigEndian.Uint16(b[i:i+2])) << (8 * i)
	}
	return lun
}

// ParseReportLUNs decodes REPORT LUNS parameter data: an 8-byte header whose
// LUN LIST LENGTH (bytes 0-3) is returned as listLength, then 8 bytes per
// LUN, decoded with DecodeLUN. Only the LUNs both announced by LUN LIST
// LENGTH and present in b are returned. When listLength+8 is more than the
// allocation length used, the list was cut: re-issue REPORT LUNS with an
// allocation length of listLength+8. Fewer than 8 bytes is an error.
func ParseReportLUNs(b []byte) (luns []uint64, listLength uint32, err error) {
	if len(b) < 8 {
		return nil, 0, errShort("REPORT LUNS data", len(b), 8)
	}
	listLength = binary.BigEndian.Uint32(b[0:4])
	n := min(uint64(listLength)/8, uint64(len(b)-8)/8)
	luns = make([]uint64, 0, n)
	for i := uint64(0); i < n; i++ {
		luns = append(luns, DecodeLUN([8]byte(b[8+8*i:16+8*i])))
	}
	return luns, listLength, nil
}
