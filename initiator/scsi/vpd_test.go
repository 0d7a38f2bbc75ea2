package scsi

import (
	"bytes"
	"reflect"
	"testing"
)

func TestVPDLength(t *testing.T) {
	for _, tt := range []struct {
		data string
		want int
	}{
		{capTgtVPD83Cut64, 76},
		{capIstgtVPD83, 159},
		{"0083", 0},
		{"00b00100", 260},
		{"00b0ffff", 65539},
	} {
		if got := VPDLength(hx(t, tt.data)); got != tt.want {
			t.Errorf("VPDLength(%s) = %d, want %d", tt.data, got, tt.want)
		}
	}
}

func TestParseSupportedVPDPages(t *testing.T) {
	tests := []struct {
		name string
		data string
		want []uint8
		err  bool
	}{
		{"tgt", capTgtVPD00, []uint8{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}, false},
		{"tgt LUN 0 controller", capTgtVPD00LUN0, []uint8{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}, false},
		{"istgt", capIstgtVPD00, []uint8{0x00, 0x80, 0x83, 0x85, 0x86, 0x87, 0x88, 0xb0, 0xb1}, false},
		{"cut by allocation length", capIstgtVPD00[:14], []uint8{0x00, 0x80, 0x83}, false},
		{"page length shorter than data", "0000000200808383", []uint8{0x00, 0x80}, false},
		{"empty list", "00000000", []uint8{}, false},
		{"wrong page", capTgtVPD80, nil, true},
		{"short header", "000000", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSupportedVPDPages(hx(t, tt.data))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v", err)
			}
			if !tt.err && !bytes.Equal(got, tt.want) {
				t.Errorf("got % x, want % x", got, tt.want)
			}
		})
	}
	// The result must not alias the input.
	b := hx(t, capTgtVPD00)
	got, _ := ParseSupportedVPDPages(b)
	b[4] = 0xee
	if got[0] != 0 {
		t.Error("result aliases the input buffer")
	}
}

func TestParseUnitSerial(t *testing.T) {
	tests := []struct {
		name, data, want string
		err              bool
	}{
		{"tgt (left-padded)", capTgtVPD80, "beaf12", false},
		{"istgt", capIstgtVPD80, "10000001", false},
		{"NUL padded", "0080000641424300000000", "ABC", false},
		{"cut", capIstgtVPD80[:16], "1000", false},
		{"empty", "00800000", "", false},
		{"wrong page", capTgtVPD00, "", true},
		{"short", "0080", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseUnitSerial(hx(t, tt.data))
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("got %q, %v; want %q (err %v)", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestParseDeviceIdentificationTgt(t *testing.T) {
	ds, err := ParseDeviceIdentification(hx(t, capTgtVPD83))
	if err != nil {
		t.Fatal(err)
	}
	want := []Designator{
		{CodeSet: CodeSetASCII, Association: AssocLU, Type: DesigT10VendorID,
			Value: append([]byte("IET     00010002"), make([]byte, 20)...)},
		{CodeSet: CodeSetBinary, Association: AssocLU, Type: DesigNAA,
			Value: hx(t, "3000000100000002")},
		{CodeSet: CodeSetBinary, Association: AssocLU, Type: DesigNAA,
			Value: hx(t, "60000000000000000e00000000010002")},
	}
	if !reflect.DeepEqual(ds, want) {
		t.Fatalf("got  %+v\nwant %+v", ds, want)
	}
	if id := LUIdentifier(ds); id != "naa.60000000000000000e00000000010002" {
		t.Errorf("LUIdentifier = %q", id)
	}

	// Cut by a 64-byte allocation length: the last NAA is incomplete and
	// left out; the 8-byte NAA is then the best.
	cut, err := ParseDeviceIdentification(hx(t, capTgtVPD83Cut64))
	if err != nil {
		t.Fatal(err)
	}
	if len(cut) != 2 || !reflect.DeepEqual(cut, want[:2]) {
		t.Fatalf("cut page: got %+v", cut)
	}
	if id := LUIdentifier(cut); id != "naa.3000000100000002" {
		t.Errorf("LUIdentifier(cut) = %q", id)
	}
	if id := LUIdentifier(cut[:1]); id != "t10.IET     00010002" {
		t.Errorf("LUIdentifier(T10 only) = %q", id)
	}
}

func TestParseDeviceIdentificationIstgt(t *testing.T) {
	ds, err := ParseDeviceIdentification(hx(t, capIstgtVPD83))
	if err != nil {
		t.Fatal(err)
	}
	type short struct {
		CodeSet, Association, Type uint8
		PIV                        bool
		Protocol                   uint8
		Value                      string
	}
	var got []short
	for _, d := range ds {
		got = append(got, short{d.CodeSet, d.Association, d.Type, d.PIV, d.Protocol, string(bytes.TrimRight(d.Value, " \x00"))})
	}
	want := []short{
		{CodeSetBinary, AssocLU, DesigNAA, false, 0, string(hx(t, "3000000084ecd4dd"))},
		{CodeSetUTF8, AssocLU, DesigT10VendorID, false, 0, "FreeBSD iSCSI DISK      10000001"},
		{CodeSetUTF8, AssocTargetDevice, DesigSCSIName, true, 5, "iqn.2026-11.lab:plain"},
		{CodeSetUTF8, AssocTargetPort, DesigSCSIName, true, 5, "iqn.2026-11.lab:plain,t,0x0001"},
		{CodeSetBinary, AssocTargetPort, DesigRelativeTargetPort, true, 5, "\x00\x00\x00\x01"},
		{CodeSetBinary, AssocTargetPort, DesigTargetPortGroup, true, 5, "\x00\x00\x00\x01"},
		{CodeSetBinary, AssocTargetPort, DesigLogicalUnitGroup, true, 5, "\x00\x00\x00\x01"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if id := LUIdentifier(ds); id != "naa.3000000084ecd4dd" {
		t.Errorf("LUIdentifier = %q", id)
	}
	// Without the NAA designator the T10 vendor ID wins over the target's
	// SCSI name strings, which are not LU designators.
	if id := LUIdentifier(ds[1:]); id != "t10.FreeBSD iSCSI DISK      10000001" {
		t.Errorf("LUIdentifier without NAA = %q", id)
	}
	if id := LUIdentifier(ds[2:]); id != "" {
		t.Errorf("LUIdentifier of port/target designators = %q, want \"\"", id)
	}
}

func TestLUIdentifierPreference(t *testing.T) {
	lu := func(typ, codeSet uint8, v string) Designator {
		return Designator{Type: typ, CodeSet: codeSet, Association: AssocLU, Value: []byte(v)}
	}
	eui := lu(DesigEUI64, CodeSetBinary, "\x00\x11\x22\x33\x44\x55\x66\x77")
	naa := lu(DesigNAA, CodeSetBinary, "\x50\x01\x40\x50\x12\x34\x56\x78")
	t10 := lu(DesigT10VendorID, CodeSetASCII, "LIO-ORG 1234")
	name := lu(DesigSCSIName, CodeSetUTF8, "naa.5001405012345678\x00\x00\x00\x00")
	portNAA := naa
	portNAA.Association = AssocTargetPort
	tests := []struct {
		name string
		ds   []Designator
		want string
	}{
		{"NAA over EUI-64", []Designator{t10, eui, naa}, "naa.5001405012345678"},
		{"EUI-64 over T10", []Designator{t10, eui}, "eui.0011223344556677"},
		{"T10 over name", []Designator{name, t10}, "t10.LIO-ORG 1234"},
		{"name string", []Designator{name}, "naa.5001405012345678"},
		{"port NAA ignored", []Designator{portNAA, t10}, "t10.LIO-ORG 1234"},
		{"none", nil, ""},
		{"empty value skipped", []Designator{lu(DesigNAA, CodeSetBinary, ""), t10}, "t10.LIO-ORG 1234"},
		{"blank T10 falls through", []Designator{lu(DesigT10VendorID, CodeSetASCII, "   \x00"), name}, "naa.5001405012345678"},
		{"NAA as ASCII text", []Designator{lu(DesigNAA, CodeSetASCII, "6001405abcdef")}, "naa.6001405abcdef"},
	}
	for _, tt := range tests {
		if got := LUIdentifier(tt.ds); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestParseDeviceIdentificationErrors(t *testing.T) {
	if _, err := ParseDeviceIdentification(hx(t, capTgtVPD80)); err == nil {
		t.Error("no error for page 0x80")
	}
	if _, err := ParseDeviceIdentification(hx(t, "0083")); err == nil {
		t.Error("no error for a short header")
	}
	// A descriptor longer than the page ends the list, no panic.
	ds, err := ParseDeviceIdentification(hx(t, "0083000a 01030004 11223344 0103ff00"))
	if err != nil || len(ds) != 1 {
		t.Errorf("got %+v, %v", ds, err)
	}
	// The page length limits the walk even when more bytes follow.
	ds, err = ParseDeviceIdentification(hx(t, "00830008 01030004 11223344 01030004 55667788"))
	if err != nil || len(ds) != 1 {
		t.Errorf("got %+v, %v", ds, err)
	}
}

func TestParseBlockLimits(t *testing.T) {
	tests := []struct {
		name string
		data string
		want BlockLimits
		err  bool
	}{
		{"tgt", capTgtVPDB0, BlockLimits{
			MaxCompareAndWriteLength: 0x80,
			MaxUnmapLBACount:         0xffffffff,
			MaxUnmapDescriptorCount:  0xffffffff,
		}, false},
		{"istgt", capIstgtVPDB0, BlockLimits{
			MaxCompareAndWriteLength: 0xff,
			OptimalGranularity:       8,
			OptimalTransferLength:    0x800,
		}, false},
		{"every field", "00b0003c 01 10 0008 00000800 00000100 00000000 00400000 00000040 00000008 80000004 0000000100000000 00000000 00000000 00000000 00000000 0000000000000000", BlockLimits{
			WSNZ: true, MaxCompareAndWriteLength: 0x10, OptimalGranularity: 8,
			MaxTransferLength: 0x800, OptimalTransferLength: 0x100,
			MaxUnmapLBACount: 0x400000, MaxUnmapDescriptorCount: 0x40,
			UnmapGranularity: 8, UGAValid: true, UnmapGranularityAlignment: 4,
			MaxWriteSameLength: 1 << 32,
		}, false},
		{"SPC-3 short page", "00b0000c 0000 0010 00000400 00000080", BlockLimits{
			OptimalGranularity: 0x10, MaxTransferLength: 0x400, OptimalTransferLength: 0x80,
		}, false},
		{"short page length hides following bytes", "00b0000c 0000 0010 00000400 00000080 00000000 ffffffff", BlockLimits{
			OptimalGranularity: 0x10, MaxTransferLength: 0x400, OptimalTransferLength: 0x80,
		}, false},
		{"cut inside MAXIMUM WRITE SAME LENGTH", "00b0003c 0000 0000 00000000 00000000 00000000 00000001 00000002 00000000 00000000 00000001", BlockLimits{
			MaxUnmapLBACount: 1, MaxUnmapDescriptorCount: 2,
		}, false},
		{"header only", "00b0003c", BlockLimits{}, false},
		{"wrong page", capTgtVPDB2Thin, BlockLimits{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBlockLimits(hx(t, tt.data))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v", err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseLogicalBlockProvisioning(t *testing.T) {
	tests := []struct {
		name string
		data string
		want Provisioning
		err  bool
	}{
		{"tgt thin", capTgtVPDB2Thin, Provisioning{LBPU: true, LBPWS: true, LBPWS10: true, LBPRZ: true, ProvisioningType: ProvisioningThin}, false},
		{"tgt plain", capTgtVPDB2Plain, Provisioning{}, false},
		{"LBPU only, anchor, resource", "00b20004 00 82 01 00", Provisioning{LBPU: true, ANCSup: true, ProvisioningType: ProvisioningResource}, false},
		{"SBC-4 LBPRZ 010b is not zeros", "00b20004 00 08 00 00", Provisioning{}, false},
		{"no provisioning type byte", "00b20002 00 40", Provisioning{LBPWS: true}, false},
		{"no flags", "00b20001 00", Provisioning{}, true},
		{"wrong page", capTgtVPDB0, Provisioning{}, true},
		{"short", "00b2", Provisioning{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLogicalBlockProvisioning(hx(t, tt.data))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v", err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
