package scsi

import "encoding/binary"

// Asymmetric logical unit access (ALUA, SPC-4 5.16): a logical unit with
// TPGS != 0 in its INQUIRY data groups its target ports into target port
// groups, each in an asymmetric access state that says whether (and how
// well) the ports of the group serve the logical unit. VPD page 0x83 names
// the port a command came through (relative target port and target port
// group designators); REPORT TARGET PORT GROUPS gives the state of every
// group.

// Asymmetric access states (REPORT TARGET PORT GROUPS descriptor byte 0,
// bits 3-0).
const (
	AccessActiveOptimized    = 0x0
	AccessActiveNonOptimized = 0x1
	AccessStandby            = 0x2
	AccessUnavailable        = 0x3
	AccessLBADependent       = 0x4
	AccessOffline            = 0xe
	AccessTransitioning      = 0xf
)

// TargetPortGroup is one target port group descriptor of REPORT TARGET
// PORT GROUPS parameter data.
type TargetPortGroup struct {
	ID        uint16 // TARGET PORT GROUP
	State     uint8  // ASYMMETRIC ACCESS STATE (AccessXxx)
	Preferred bool   // PREF: a preferred group for the logical unit
	// Supported is the byte of supported states: T_SUP 0x80, O_SUP 0x40,
	// LBD_SUP 0x10, U_SUP 0x08, S_SUP 0x04, AN_SUP 0x02, AO_SUP 0x01.
	Supported  uint8
	StatusCode uint8 // why the state last changed (0: no status)
	// Ports are the RELATIVE TARGET PORT IDENTIFIERs of the group's ports.
	Ports []uint16
}

// RTPGLength is the size of the whole REPORT TARGET PORT GROUPS parameter
// data whose first bytes are b: 4 + RETURN DATA LENGTH. It is 0 when b is
// shorter than the 4-byte header; when it exceeds len(b), re-issue the
// command with it as the allocation length.
func RTPGLength(b []byte) int64 {
	if len(b) < 4 {
		return 0
	}
	return 4 + int64(binary.BigEndian.Uint32(b[0:4]))
}

// ParseReportTargetPortGroups decodes REPORT TARGET PORT GROUPS parameter
// data in the length-only format (the one ReportTargetPortGroups asks for):
// a 4-byte RETURN DATA LENGTH, then 8-byte group descriptors each followed
// by TARGET PORT COUNT 4-byte port entries. It needs the header. Lengths in
// the data only ever shorten what is read: data cut by the allocation
// length gives the groups whose 8-byte descriptor is present, the last one
// with the port entries present, and ends there (see RTPGLength to read it
// all).
func ParseReportTargetPortGroups(b []byte) ([]TargetPortGroup, error) {
	if len(b) < 4 {
		return nil, errShort("REPORT TARGET PORT GROUPS data", len(b), 4)
	}
	end := len(b)
	if n := RTPGLength(b); n < int64(end) {
		end = int(n)
	}
	var groups []TargetPortGroup
	for off := 4; off+8 <= end; {
		d := b[off : off+8]
		g := TargetPortGroup{
			ID:         binary.BigEndian.Uint16(d[2:4]),
			State:      d[0] & 0x0f,
			Preferred:  d[0]&0x80 != 0,
			Supported:  d[1],
			StatusCode: d[5],
		}
		off += 8
		count := int(d[7])
		for i := 0; i < count && off+4 <= end; i++ {
			g.Ports = append(g.Ports, binary.BigEndian.Uint16(b[off+2:off+4]))
			off += 4
		}
		groups = append(groups, g)
		if len(g.Ports) < count {
			break // cut short
		}
	}
	return groups, nil
}

// TargetPort is what the designators of VPD page 0x83 say of the target
// port the INQUIRY came through: its relative target port identifier
// (designator type 4) and its target port group (type 5), each valid only
// when its Has flag is set.
type TargetPort struct {
	RelativePort    uint16
	HasRelativePort bool
	Group           uint16
	HasGroup        bool
}

// TargetPortIdentity picks the relative target port and target port group
// designators (association: target port) out of the designators of VPD page
// 0x83 (ParseDeviceIdentification). Both carry their 16-bit value in bytes
// 2-3 of a 4-byte designator; shorter ones are ignored, the first of each
// type wins.
func TargetPortIdentity(ds []Designator) TargetPort {
	var tp TargetPort
	for _, d := range ds {
		if d.Association != AssocTargetPort || len(d.Value) < 4 {
			continue
		}
		v := binary.BigEndian.Uint16(d.Value[2:4])
		switch {
		case d.Type == DesigRelativeTargetPort && !tp.HasRelativePort:
			tp.RelativePort, tp.HasRelativePort = v, true
		case d.Type == DesigTargetPortGroup && !tp.HasGroup:
			tp.Group, tp.HasGroup = v, true
		}
	}
	return tp
}
