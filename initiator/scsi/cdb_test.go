package scsi

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// hx decodes hex with spaces for readable expected bytes.
func hx(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func TestCDBBuilders(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"TEST UNIT READY", TestUnitReady(), "00 00 00 00 00 00"},
		{"INQUIRY standard 36", Inquiry(false, 0, 36), "12 00 00 00 24 00"},
		{"INQUIRY standard ignores page", Inquiry(false, 0x83, 96), "12 00 00 00 60 00"},
		{"INQUIRY VPD 0x00", Inquiry(true, 0x00, 255), "12 01 00 00 ff 00"},
		{"INQUIRY VPD 0x83 big alloc", Inquiry(true, 0x83, 0x1234), "12 01 83 12 34 00"},
		{"REPORT LUNS 16", ReportLUNs(16), "a0 00 00 00 00 00 00 00 00 10 00 00"},
		{"REPORT LUNS large", ReportLUNs(0x01020304), "a0 00 00 00 00 00 01 02 03 04 00 00"},
		{"READ CAPACITY(10)", ReadCapacity10(), "25 00 00 00 00 00 00 00 00 00"},
		{"READ CAPACITY(16)", ReadCapacity16(32), "9e 10 00 00 00 00 00 00 00 00 00 00 00 20 00 00"},
		{"READ(10)", Read(0x12345678, 8, false, false), "28 00 12 34 56 78 00 00 08 00"},
		{"READ(10) FUA", Read(1, 0xffff, true, false), "28 08 00 00 00 01 00 ff ff 00"},
		{"READ(16) forced", Read(1, 2, false, true), "88 00 00 00 00 00 00 00 00 01 00 00 00 02 00 00"},
		{"READ(16) big LBA", Read(0x0102030405060708, 0x10, true, false), "88 08 01 02 03 04 05 06 07 08 00 00 00 10 00 00"},
		{"READ(16) long", Read(0, 0x10000, false, false), "88 00 00 00 00 00 00 00 00 00 00 01 00 00 00 00"},
		{"WRITE(10)", Write(0x100, 0x80, false, false), "2a 00 00 00 01 00 00 00 80 00"},
		{"WRITE(10) FUA", Write(0, 1, true, false), "2a 08 00 00 00 00 00 00 01 00"},
		{"WRITE(16)", Write(1<<32, 1, false, false), "8a 00 00 00 00 01 00 00 00 00 00 00 00 01 00 00"},
		{"WRITE(16) FUA forced", Write(7, 3, true, true), "8a 08 00 00 00 00 00 00 00 07 00 00 00 03 00 00"},
		{"SYNCHRONIZE CACHE(10) all", SynchronizeCache(0, 0), "35 00 00 00 00 00 00 00 00 00"},
		{"SYNCHRONIZE CACHE(10) range", SynchronizeCache(0x10, 0x20), "35 00 00 00 00 10 00 00 20 00"},
		{"SYNCHRONIZE CACHE(16)", SynchronizeCache(0x100000000, 0x20000), "91 00 00 00 00 01 00 00 00 00 00 02 00 00 00 00"},
		{"UNMAP", Unmap(24), "42 00 00 00 00 00 00 00 18 00"},
		{"WRITE SAME(16) unmap", WriteSame16(0x1000, 0x800, true), "93 08 00 00 00 00 00 00 10 00 00 00 08 00 00 00"},
		{"WRITE SAME(16)", WriteSame16(0xffffffffff, 1, false), "93 00 00 00 00 ff ff ff ff ff 00 00 00 01 00 00"},
		{"MODE SENSE(6) caching dbd", ModeSense6(0x08, 0, 0xff, true), "1a 08 08 00 ff 00"},
		{"MODE SENSE(6) all pages", ModeSense6(0x3f, 0, 0xff, false), "1a 00 3f 00 ff 00"},
		{"MODE SENSE(6) page masked to 6 bits", ModeSense6(0xca, 0x01, 0x20, false), "1a 00 0a 01 20 00"},
		{"MODE SENSE(10) caching dbd", ModeSense10(0x08, 0, 255, true), "5a 08 08 00 00 00 00 00 ff 00"},
		{"MODE SENSE(10) subpage", ModeSense10(0x3f, 0xff, 0x1000, false), "5a 00 3f ff 00 00 00 10 00 00"},
		{"GET LBA STATUS", GetLBAStatus(0x08, 24), "9e 12 00 00 00 00 00 00 00 08 00 00 00 18 00 00"},
		{"START STOP UNIT start", StartStopUnit(true, false), "1b 00 00 00 01 00"},
		{"START STOP UNIT stop immed", StartStopUnit(false, true), "1b 01 00 00 00 00"},
		{"REQUEST SENSE desc", RequestSense(true, 252), "03 01 00 00 fc 00"},
		{"REQUEST SENSE fixed", RequestSense(false, 18), "03 00 00 00 12 00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if want := hx(t, tt.want); !bytes.Equal(tt.got, want) {
				t.Errorf("got  % x\nwant % x", tt.got, want)
			}
		})
	}
}

func TestBuildersReturnFreshSlices(t *testing.T) {
	a := TestUnitReady()
	a[0] = 0xff
	if b := TestUnitReady(); b[0] != 0 {
		t.Fatal("TestUnitReady shares its slice between calls")
	}
	r := Read(0, 1, false, false)
	r[0] = 0
	if Read(0, 1, false, false)[0] != OpRead10 {
		t.Fatal("Read shares its slice between calls")
	}
}

func TestReadWrite10Or16Boundaries(t *testing.T) {
	tests := []struct {
		lba    uint64
		blocks uint32
		want16 bool
	}{
		{0, 0, false},
		{0, 1, false},
		{0, 65535, false},
		{0, 65536, true},
		{1<<32 - 1, 1, false},         // last addressable block: lba+blocks == 2^32
		{1<<32 - 65535, 65535, false}, // longest transfer ending at 2^32
		{1<<32 - 65535, 65536, true},
		{1<<32 - 1, 2, true}, // would run past 2^32
		{1 << 32, 0, true},   // LBA itself does not fit 32 bits
		{1 << 32, 1, true},
		{1<<32 - 1, 0, false},
		{1<<64 - 1, 1, true}, // lba+blocks overflows uint64: still 16
		{1<<64 - 1, 0xffffffff, true},
	}
	for _, tt := range tests {
		for _, op := range []struct {
			name  string
			build func(uint64, uint32, bool, bool) []byte
			op10  byte
			op16  byte
		}{
			{"READ", Read, OpRead10, OpRead16},
			{"WRITE", Write, OpWrite10, OpWrite16},
		} {
			cdb := op.build(tt.lba, tt.blocks, false, false)
			want := op.op10
			if tt.want16 {
				want = op.op16
			}
			if cdb[0] != want {
				t.Errorf("%s lba=%#x blocks=%#x: opcode %#x, want %#x", op.name, tt.lba, tt.blocks, cdb[0], want)
			}
			if forced := op.build(tt.lba, tt.blocks, false, true); forced[0] != op.op16 || len(forced) != 16 {
				t.Errorf("%s forced 16: got % x", op.name, forced)
			}
		}
		sc := SynchronizeCache(tt.lba, tt.blocks)
		if (sc[0] == OpSynchronizeCache16) != tt.want16 {
			t.Errorf("SYNCHRONIZE CACHE lba=%#x blocks=%#x: got opcode %#x", tt.lba, tt.blocks, sc[0])
		}
		if Fits10(tt.lba, tt.blocks) == tt.want16 {
			t.Errorf("Fits10(%#x, %#x) = %v", tt.lba, tt.blocks, !tt.want16)
		}
	}
}

func TestUnmapParameterList(t *testing.T) {
	tests := []struct {
		name    string
		extents []Extent
		want    string
	}{
		{"empty", nil, "00 06 00 00 00 00 00 00"},
		{"one", []Extent{{LBA: 0x1000, Blocks: 0x800}},
			"00 16 00 10 00 00 00 00" +
				"00 00 00 00 00 00 10 00 00 00 08 00 00 00 00 00"},
		{"two", []Extent{{LBA: 1, Blocks: 2}, {LBA: 0x0102030405060708, Blocks: 0xffffffff}},
			"00 26 00 20 00 00 00 00" +
				"00 00 00 00 00 00 00 01 00 00 00 02 00 00 00 00" +
				"01 02 03 04 05 06 07 08 ff ff ff ff 00 00 00 00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := UnmapParameterList(tt.extents)
			if want := hx(t, tt.want); !bytes.Equal(got, want) {
				t.Errorf("got  % x\nwant % x", got, want)
			}
		})
	}
}

func TestUnmapParameterListLimit(t *testing.T) {
	p := UnmapParameterList(make([]Extent, MaxUnmapDescriptors))
	if len(p) != 8+16*MaxUnmapDescriptors || len(p) > 0xffff+2 {
		t.Fatalf("len %d", len(p))
	}
	if dl := int(p[0])<<8 | int(p[1]); dl != len(p)-2 {
		t.Fatalf("UNMAP DATA LENGTH %d, want %d", dl, len(p)-2)
	}
	if bl := int(p[2])<<8 | int(p[3]); bl != 16*MaxUnmapDescriptors {
		t.Fatalf("BLOCK DESCRIPTOR DATA LENGTH %d", bl)
	}
	// The CDB's PARAMETER LIST LENGTH must hold the whole list.
	if cdb := Unmap(uint16(len(p))); int(cdb[7])<<8|int(cdb[8]) != len(p) {
		t.Fatalf("UNMAP CDB % x cannot carry %d bytes", cdb, len(p))
	}
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for MaxUnmapDescriptors+1 extents")
		}
	}()
	UnmapParameterList(make([]Extent, MaxUnmapDescriptors+1))
}

func TestOpName(t *testing.T) {
	tests := []struct {
		cdb  []byte
		want string
	}{
		{TestUnitReady(), "TEST UNIT READY"},
		{Inquiry(true, 0x80, 255), "INQUIRY"},
		{ReportLUNs(16), "REPORT LUNS"},
		{ReadCapacity10(), "READ CAPACITY(10)"},
		{ReadCapacity16(32), "READ CAPACITY(16)"},
		{GetLBAStatus(0, 24), "GET LBA STATUS"},
		{Read(0, 1, false, false), "READ(10)"},
		{Read(0, 1, false, true), "READ(16)"},
		{Write(0, 1, false, false), "WRITE(10)"},
		{Write(0, 1, false, true), "WRITE(16)"},
		{SynchronizeCache(0, 0), "SYNCHRONIZE CACHE(10)"},
		{SynchronizeCache(1<<40, 0), "SYNCHRONIZE CACHE(16)"},
		{Unmap(24), "UNMAP"},
		{WriteSame16(0, 1, true), "WRITE SAME(16)"},
		{ModeSense6(8, 0, 255, true), "MODE SENSE(6)"},
		{ModeSense10(8, 0, 255, true), "MODE SENSE(10)"},
		{StartStopUnit(true, false), "START STOP UNIT"},
		{RequestSense(false, 18), "REQUEST SENSE"},
		{[]byte{0x9e, 0x11}, "SERVICE ACTION IN(16)"},
		{[]byte{0x9e}, "SERVICE ACTION IN(16)"},
		{[]byte{0xa3, 0x0c, 0x80}, "REPORT SUPPORTED OPERATION CODES"},
		{[]byte{0xa3, 0x0a}, "REPORT TARGET PORT GROUPS"},
		{[]byte{0xa3, 0x0d}, "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS"},
		{[]byte{0xa3, 0x05}, "MAINTENANCE IN"},
		{[]byte{0x89}, "COMPARE AND WRITE"},
		{[]byte{0xc0}, "OPCODE 0xC0"},
		{nil, "EMPTY CDB"},
	}
	for _, tt := range tests {
		if got := OpName(tt.cdb); got != tt.want {
			t.Errorf("OpName(% x) = %q, want %q", tt.cdb, got, tt.want)
		}
	}
}
