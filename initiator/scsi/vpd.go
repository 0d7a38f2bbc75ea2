package scsi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// VPD page codes (SPC-4, SBC-3).
const (
	VPDSupportedPages           = 0x00
	VPDUnitSerial               = 0x80
	VPDDeviceIdentification     = 0x83
	VPDExtendedInquiry          = 0x86
	VPDBlockLimits              = 0xb0
	VPDBlockCharacteristics     = 0xb1
	VPDLogicalBlockProvisioning = 0xb2
)

// VPDLength is the size of the whole VPD page whose first bytes are b:
// 4 + PAGE LENGTH (bytes 2-3). It is 0 when b is shorter than the 4-byte
// header. When it exceeds len(b), the page was cut by the allocation length:
// re-issue INQUIRY with VPDLength as allocation length to read all of it.
func VPDLength(b []byte) int {
	if len(b) < 4 {
		return 0
	}
	return 4 + (int(b[2])<<8 | int(b[3]))
}

// vpdPayload checks the header of VPD page code and returns the page's
// payload: the bytes after the 4-byte header, limited both by the PAGE
// LENGTH and by the data present (a page cut by the allocation length gives
// a shorter payload, not an error).
func vpdPayload(b []byte, code uint8, name string) ([]byte, error) {
	if len(b) < 4 {
		return nil, errShort(name, len(b), 4)
	}
	if b[1] != code {
		return nil, fmt.Errorf("scsi: %s: got VPD page 0x%02X, want 0x%02X", name, b[1], code)
	}
	end := min(VPDLength(b), len(b))
	return b[4:end], nil
}

// ParseSupportedVPDPages decodes VPD page 0x00, the list of supported VPD
// page codes (tgt: 00 80 83 B0 B1 B2; istgt: 00 80 83 85 86 87 88 B0 B1).
// A list cut short by the allocation length gives the codes present.
func ParseSupportedVPDPages(b []byte) ([]uint8, error) {
	p, err := vpdPayload(b, VPDSupportedPages, "supported VPD pages")
	if err != nil {
		return nil, err
	}
	return append([]uint8(nil), p...), nil
}

// ParseUnitSerial decodes VPD page 0x80, the PRODUCT SERIAL NUMBER, with
// surrounding spaces and NULs removed (tgt pads on the left).
func ParseUnitSerial(b []byte) (string, error) {
	p, err := vpdPayload(b, VPDUnitSerial, "unit serial number VPD page")
	if err != nil {
		return "", err
	}
	return trimField(p), nil
}

// Designator code sets (SPC-4 device identification VPD page).
const (
	CodeSetBinary = 1
	CodeSetASCII  = 2
	CodeSetUTF8   = 3
)

// Designator associations.
const (
	AssocLU           = 0 // the logical unit
	AssocTargetPort   = 1 // the target port the command came through
	AssocTargetDevice = 2 // the SCSI target device (iSCSI: the target node)
)

// Designator types.
const (
	DesigVendorSpecific       = 0x0
	DesigT10VendorID          = 0x1
	DesigEUI64                = 0x2
	DesigNAA                  = 0x3
	DesigRelativeTargetPort   = 0x4
	DesigTargetPortGroup      = 0x5
	DesigLogicalUnitGroup     = 0x6
	DesigMD5LogicalUnit       = 0x7
	DesigSCSIName             = 0x8
	DesigProtocolSpecificPort = 0x9
	DesigUUID                 = 0xa
)

// Designator is one designation descriptor of VPD page 0x83. Protocol is
// meaningful only when PIV is set and Association is not AssocLU (5 =
// iSCSI). Value is a copy of the DESIGNATOR bytes.
type Designator struct {
	CodeSet     uint8
	Association uint8
	Type        uint8
	PIV         bool
	Protocol    uint8
	Value       []byte
}

// ParseDeviceIdentification decodes VPD page 0x83 into its designation
// descriptors, in page order. A page cut short by the allocation length
// gives the descriptors that are complete (see VPDLength to read it all);
// a descriptor whose length runs past the end of the page ends the list
// the same way.
func ParseDeviceIdentification(b []byte) ([]Designator, error) {
	p, err := vpdPayload(b, VPDDeviceIdentification, "device identification VPD page")
	if err != nil {
		return nil, err
	}
	var ds []Designator
	for len(p) >= 4 {
		n := int(p[3])
		if 4+n > len(p) {
			break
		}
		ds = append(ds, Designator{
			Protocol:    p[0] >> 4,
			CodeSet:     p[0] & 0x0f,
			PIV:         p[1]&0x80 != 0,
			Association: (p[1] >> 4) & 0x03,
			Type:        p[1] & 0x0f,
			Value:       append([]byte(nil), p[4:4+n]...),
		})
		p = p[4+n:]
	}
	return ds, nil
}

// designatorText renders a designator as text: binary values in lower-case
// hex, text values with trailing NULs and surrounding spaces removed.
func designatorText(d Designator) string {
	if d.CodeSet == CodeSetBinary {
		return fmt.Sprintf("%x", d.Value)
	}
	return strings.Trim(string(d.Value), " \x00")
}

// LUIdentifier picks the best logical-unit designator and renders it the way
// Linux shows a device's wwid: "naa.<hex>" (an NAA designator; the longest
// one wins, so a 16-byte NAA 6 beats an 8-byte NAA 3), else "eui.<hex>"
// (EUI-64, longest first), else "t10.<vendor id text>" (T10 vendor ID, e.g.
// tgt's "t10.IET     00010001"), else a SCSI name string as it is ("iqn....").
// Designators of target ports and target devices are never used: they name
// the path, not the logical unit. It returns "" when there is none.
func LUIdentifier(ds []Designator) string {
	prefer := []struct {
		typ    uint8
		prefix string
	}{
		{DesigNAA, "naa."},
		{DesigEUI64, "eui."},
		{DesigT10VendorID, "t10."},
		{DesigSCSIName, ""},
	}
	for _, p := range prefer {
		best := -1
		for i, d := range ds {
			if d.Association != AssocLU || d.Type != p.typ || len(d.Value) == 0 {
				continue
			}
			if best < 0 || len(d.Value) > len(ds[best].Value) {
				best = i
			}
		}
		if best >= 0 {
			if s := designatorText(ds[best]); s != "" {
				return p.prefix + s
			}
		}
	}
	return ""
}

// BlockLimits is the Block Limits VPD page 0xB0 (SBC-3). Lengths are in
// logical blocks; 0 means not reported. For MaxUnmapLBACount and
// MaxUnmapDescriptorCount 0xFFFFFFFF means no limit (tgt reports that).
type BlockLimits struct {
	MaxTransferLength         uint32
	OptimalTransferLength     uint32
	OptimalGranularity        uint32 // OPTIMAL TRANSFER LENGTH GRANULARITY
	MaxUnmapLBACount          uint32
	MaxUnmapDescriptorCount   uint32
	UnmapGranularity          uint32 // OPTIMAL UNMAP GRANULARITY
	UnmapGranularityAlignment uint32
	UGAValid                  bool
	MaxWriteSameLength        uint64
	// WSNZ set: WRITE SAME with NUMBER OF LOGICAL BLOCKS 0 is rejected.
	WSNZ bool
	// MaxCompareAndWriteLength is the MAXIMUM COMPARE AND WRITE LENGTH.
	MaxCompareAndWriteLength uint8
}

// ParseBlockLimits decodes VPD page 0xB0. It accepts the short SPC-3 page
// (PAGE LENGTH 0x0C: only up to OPTIMAL TRANSFER LENGTH) and pages cut by
// the allocation length: every field whose bytes are present within the
// page is decoded, the others stay 0.
func ParseBlockLimits(b []byte) (BlockLimits, error) {
	p, err := vpdPayload(b, VPDBlockLimits, "block limits VPD page")
	if err != nil {
		return BlockLimits{}, err
	}
	// Offsets are those of the page (header included); the page ends at
	// 4+len(p), never beyond len(b).
	end := 4 + len(p)
	u32 := func(off int) uint32 {
		if off+4 > end {
			return 0
		}
		return binary.BigEndian.Uint32(b[off : off+4])
	}
	var l BlockLimits
	if end >= 5 {
		l.WSNZ = b[4]&0x01 != 0
	}
	if end >= 6 {
		l.MaxCompareAndWriteLength = b[5]
	}
	if end >= 8 {
		l.OptimalGranularity = uint32(binary.BigEndian.Uint16(b[6:8]))
	}
	l.MaxTransferLength = u32(8)
	l.OptimalTransferLength = u32(12)
	l.MaxUnmapLBACount = u32(20)
	l.MaxUnmapDescriptorCount = u32(24)
	l.UnmapGranularity = u32(28)
	uga := u32(32)
	l.UGAValid = uga&0x80000000 != 0
	l.UnmapGranularityAlignment = uga & 0x7fffffff
	if end >= 44 {
		l.MaxWriteSameLength = binary.BigEndian.Uint64(b[36:44])
	}
	return l, nil
}

// Provisioning types (SBC-3 VPD 0xB2 PROVISIONING TYPE).
const (
	ProvisioningFull     = 0 // not reported, or fully provisioned
	ProvisioningResource = 1
	ProvisioningThin     = 2
)

// Provisioning is the Logical Block Provisioning VPD page 0xB2 (SBC-3).
type Provisioning struct {
	LBPU    bool // UNMAP supported
	LBPWS   bool // WRITE SAME(16) with UNMAP supported
	LBPWS10 bool // WRITE SAME(10) with UNMAP supported
	// LBPRZ: unmapped blocks read as zeros (bit 2 of byte 5, the low bit of
	// SBC-4's 3-bit LBPRZ field, whose value 1 means zeros).
	LBPRZ            bool
	ANCSup           bool // ANCHOR supported
	ProvisioningType uint8
}

// ParseLogicalBlockProvisioning decodes VPD page 0xB2. It needs the flags in
// byte 5; PROVISIONING TYPE (byte 6) is 0 when absent.
func ParseLogicalBlockProvisioning(b []byte) (Provisioning, error) {
	p, err := vpdPayload(b, VPDLogicalBlockProvisioning, "logical block provisioning VPD page")
	if err != nil {
		return Provisioning{}, err
	}
	if len(p) < 2 {
		return Provisioning{}, errors.New("scsi: logical block provisioning VPD page: no flags byte")
	}
	f := p[1]
	pr := Provisioning{
		LBPU:    f&0x80 != 0,
		LBPWS:   f&0x40 != 0,
		LBPWS10: f&0x20 != 0,
		LBPRZ:   f&0x04 != 0,
		ANCSup:  f&0x02 != 0,
	}
	if len(p) >= 3 {
		pr.ProvisioningType = p[2] & 0x07
	}
	return pr, nil
}
