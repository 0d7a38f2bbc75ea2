package scsi

import "encoding/binary"

// Mode page codes (SPC-4, SBC-3).
const (
	ModePageCaching  = 0x08
	ModePageControl  = 0x0a
	ModePageAllPages = 0x3f
)

// ModeParameters is what an initiator of a block device needs from MODE
// SENSE data: the mode parameter header and the caching mode page.
type ModeParameters struct {
	// WriteProtected is the WP bit of the DEVICE-SPECIFIC PARAMETER: the
	// medium is write-protected (mount read-only).
	WriteProtected bool
	// DPOFUA: the device server supports the DPO and FUA bits.
	DPOFUA bool
	// WriteCacheEnabled is WCE of the caching page: SYNCHRONIZE CACHE is
	// needed for data to be durable. Meaningful only with HaveCachingPage.
	WriteCacheEnabled bool
	// ReadCacheDisabled is RCD of the caching page.
	ReadCacheDisabled bool
	// HaveCachingPage is set when the data holds the caching page (0x08)
	// with its flags byte.
	HaveCachingPage bool
	// BlockDescriptorLength is BLOCK DESCRIPTOR LENGTH from the header.
	BlockDescriptorLength int
}

// ParseModeSense6 decodes MODE SENSE(6) data: the 4-byte header (byte 2 bit
// 7 = WP, bit 4 = DPOFUA), block descriptors, then mode pages, which are
// walked for the caching page. Fewer than 4 bytes is an error; pages are
// looked at only within both the MODE DATA LENGTH and the data present, and
// a caching page cut before its flags byte is treated as absent.
func ParseModeSense6(b []byte) (ModeParameters, error) {
	if len(b) < 4 {
		return ModeParameters{}, errShort("MODE SENSE(6) data", len(b), 4)
	}
	end := min(len(b), int(b[0])+1)
	return parseModeData(b, end, 4, b[2], int(b[3])), nil
}

// ParseModeSense10 decodes MODE SENSE(10) data like ParseModeSense6, with
// the 8-byte header (byte 3 = DEVICE-SPECIFIC PARAMETER, bytes 6-7 = BLOCK
// DESCRIPTOR LENGTH). Fewer than 8 bytes is an error.
func ParseModeSense10(b []byte) (ModeParameters, error) {
	if len(b) < 8 {
		return ModeParameters{}, errShort("MODE SENSE(10) data", len(b), 8)
	}
	end := min(len(b), int(binary.BigEndian.Uint16(b[0:2]))+2)
	return parseModeData(b, end, 8, b[3], int(binary.BigEndian.Uint16(b[6:8]))), nil
}

// parseModeData decodes the device-specific parameter and walks the mode
// pages that start after the header (hdr bytes) and bdl bytes of block
// descriptors, up to end.
func parseModeData(b []byte, end, hdr int, devSpecific byte, bdl int) ModeParameters {
	m := ModeParameters{
		WriteProtected:        devSpecific&0x80 != 0,
		DPOFUA:                devSpecific&0x10 != 0,
		BlockDescriptorLength: bdl,
	}
	for off := hdr + bdl; off+2 <= end; {
		code := b[off] & 0x3f
		var body, n int
		if b[off]&0x40 != 0 { // SPF: sub_page format, 4-byte page header
			if off+4 > end {
				break
			}
			body, n = off+4, int(binary.BigEndian.Uint16(b[off+2:off+4]))
		} else {
			body, n = off+2, int(b[off+1])
			if code == ModePageCaching && body < end && !m.HaveCachingPage {
				m.HaveCachingPage = true
				m.WriteCacheEnabled = b[body]&0x04 != 0
				m.ReadCacheDisabled = b[body]&0x01 != 0
			}
		}
		off = body + n
	}
	return m
}
