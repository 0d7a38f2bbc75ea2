package scsi

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func TestReportTargetPortGroupsCDB(t *testing.T) {
	tests := []struct {
		alloc uint32
		want  string
	}{
		{1024, "a3 0a 00 00 00 00 00 00 04 00 00 00"},
		{0x01020304, "a3 0a 00 00 00 00 01 02 03 04 00 00"},
	}
	for _, tt := range tests {
		got := ReportTargetPortGroups(tt.alloc)
		if !bytes.Equal(got, hx(t, tt.want)) {
			t.Errorf("ReportTargetPortGroups(%d) = % x, want %s", tt.alloc, got, tt.want)
		}
		if name := OpName(got); name != "REPORT TARGET PORT GROUPS" {
			t.Errorf("OpName = %q", name)
		}
	}
}

func TestParseInquiryTPGS(t *testing.T) {
	tests := []struct {
		name string
		data string
		want uint8
	}{
		{"tgt: none", capTgtInquiryDisk, TPGSNone},
		{"istgt: none", capIstgtInquiry, TPGSNone},
		{"implicit (LIO)", "000005121f10", TPGSImplicit},
		{"explicit", "000005121f20", TPGSExplicit},
		{"both, other bits set", "000005121fff", TPGSBoth},
		{"5 bytes: none", "000005121f", TPGSNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := ParseInquiry(hx(t, tt.data))
			if err != nil {
				t.Fatal(err)
			}
			if d.TPGS != tt.want {
				t.Errorf("TPGS = %d, want %d", d.TPGS, tt.want)
			}
		})
	}
}

// rtpgLIO is what LIO answers for a LU with two target port groups: group
// 1 (preferred, active/optimized, ports 1 and 2) and group 2 (standby,
// port 3), supported states T, O, U, S, AN, AO.
const rtpgLIO = "0000001c" +
	"80cf0001" + "00020002" + "00000001" + "00000002" +
	"02cf0002" + "00000001" + "00000003"

func TestParseReportTargetPortGroups(t *testing.T) {
	g1 := TargetPortGroup{ID: 1, State: AccessActiveOptimized, Preferred: true, Supported: 0xcf, StatusCode: 2, Ports: []uint16{1, 2}}
	g2 := TargetPortGroup{ID: 2, State: AccessStandby, Supported: 0xcf, Ports: []uint16{3}}
	tests := []struct {
		name    string
		data    string
		want    []TargetPortGroup
		wantLen int64
		wantErr bool
	}{
		{"two groups", rtpgLIO, []TargetPortGroup{g1, g2}, 32, false},
		{"no group", "00000000", nil, 4, false},
		{"3 bytes", "000000", nil, 0, true},
		{"empty", "", nil, 0, true},
		{"cut in the second descriptor", rtpgLIO[:2*(4+16+4)], []TargetPortGroup{g1}, 32, false},
		{"cut in the first port list", rtpgLIO[:2*(4+8+4)], []TargetPortGroup{{ID: 1, Preferred: true, Supported: 0xcf, StatusCode: 2, Ports: []uint16{1}}}, 32, false},
		{"return length shorter than the data", "00000008" + "80cf0001 00020002 00000001 00000002", []TargetPortGroup{{ID: 1, Preferred: true, Supported: 0xcf, StatusCode: 2}}, 12, false},
		{"return length of 4 GiB", "ffffffff" + "0e000007 00000000", []TargetPortGroup{{ID: 7, State: AccessOffline}}, 4 + 0xffffffff, false},
		{"255 ports announced, none there", "0000000c" + "0f000003 000000ff", []TargetPortGroup{{ID: 3, State: AccessTransitioning}}, 16, false},
		{"trailing bytes after the last group", "0000000c" + "01000004 00000000 0000", []TargetPortGroup{{ID: 4, State: AccessActiveNonOptimized}}, 16, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := hx(t, tt.data)
			got, err := ParseReportTargetPortGroups(b)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if n := RTPGLength(b); n != tt.wantLen {
				t.Errorf("RTPGLength = %d, want %d", n, tt.wantLen)
			}
		})
	}
}

func TestTargetPortIdentity(t *testing.T) {
	// desig builds one designation descriptor: code set binary, PIV set,
	// protocol iSCSI.
	desig := func(assoc, typ uint8, value string) string {
		return "51" + hexByte(0x80|assoc<<4|typ) + "00" + hexByte(uint8(len(value)/2)) + value
	}
	page := func(ds ...string) string {
		body := ""
		for _, d := range ds {
			body += d
		}
		return "0083" + hexByte(uint8(len(body)/2>>8)) + hexByte(uint8(len(body)/2)) + body
	}
	tests := []struct {
		name string
		page string
		want TargetPort
	}{
		{"istgt: port 1 in group 1", capIstgtVPD83, TargetPort{RelativePort: 1, HasRelativePort: true, Group: 1, HasGroup: true}},
		{"tgt: none", capTgtVPD83, TargetPort{}},
		{"LIO-like", page(desig(AssocTargetPort, DesigRelativeTargetPort, "00000002"), desig(AssocTargetPort, DesigTargetPortGroup, "00000000")),
			TargetPort{RelativePort: 2, HasRelativePort: true, Group: 0, HasGroup: true}},
		{"group only", page(desig(AssocTargetPort, DesigTargetPortGroup, "0000abcd")), TargetPort{Group: 0xabcd, HasGroup: true}},
		{"LU association ignored", page(desig(AssocLU, DesigTargetPortGroup, "00000009")), TargetPort{}},
		{"short designator ignored", page(desig(AssocTargetPort, DesigRelativeTargetPort, "0002"), desig(AssocTargetPort, DesigRelativeTargetPort, "00000005")),
			TargetPort{RelativePort: 5, HasRelativePort: true}},
		{"first of a type wins", page(desig(AssocTargetPort, DesigTargetPortGroup, "00000003"), desig(AssocTargetPort, DesigTargetPortGroup, "00000004")),
			TargetPort{Group: 3, HasGroup: true}},
		{"cut inside a designator", page(desig(AssocTargetPort, DesigTargetPortGroup, "00000003"))[:16], TargetPort{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds, err := ParseDeviceIdentification(hx(t, tt.page))
			if err != nil {
				t.Fatal(err)
			}
			if got := TargetPortIdentity(ds); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func hexByte(b uint8) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&0x0f]})
}

func TestErrAccessChanged(t *testing.T) {
	err := CheckStatus(ReadCapacity10(), StatusCheckCondition, fixedSenseBytes(0x06, 0x2a, 0x06))
	if !errors.Is(err, ErrAccessChanged) || !errors.Is(err, ErrUnitAttention) || errors.Is(err, ErrModeChanged) {
		t.Errorf("UA 2A/06: %v", err)
	}
	if err := CheckStatus(ReadCapacity10(), StatusCheckCondition, fixedSenseBytes(0x06, 0x2a, 0x01)); errors.Is(err, ErrAccessChanged) {
		t.Errorf("UA 2A/01 taken for 2A/06: %v", err)
	}
}

func fixedSenseBytes(key, asc, ascq uint8) []byte {
	b := make([]byte, 18)
	b[0], b[2], b[7], b[12], b[13] = 0x70, key, 10, asc, ascq
	return b
}
