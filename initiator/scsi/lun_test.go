package scsi

import (
	"reflect"
	"testing"
)

func TestEncodeDecodeLUN(t *testing.T) {
	tests := []struct {
		lun  uint64
		want string
	}{
		{0, "0000000000000000"},
		{1, "0001000000000000"},
		{255, "00ff000000000000"},
		{256, "4100000000000000"},
		{0x1234, "5234000000000000"},
		{16383, "7fff000000000000"},
		{0x4100, "0100000000000000"}, // peripheral, bus 1, LUN 0
		{0x7fff, "3fff000000000000"}, // peripheral, bus 63, LUN 255
		{0x8000, "8000000000000000"}, // logical unit addressing
		{0xc123, "c123000000000000"}, // extended addressing
		{0x10000, "0000000100000000"},
		{0x0004000300020001, "0001000200030004"},
		{1<<64 - 1, "ffffffffffffffff"},
	}
	for _, tt := range tests {
		b := EncodeLUN(tt.lun)
		if want := hx(t, tt.want); !reflect.DeepEqual(b[:], want) {
			t.Errorf("EncodeLUN(%#x) = % x, want % x", tt.lun, b, want)
		}
		if got := DecodeLUN(b); got != tt.lun {
			t.Errorf("DecodeLUN(EncodeLUN(%#x)) = %#x", tt.lun, got)
		}
	}
}

func TestDecodeLUNForms(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
	}{
		{"0005000000000000", 5},                     // peripheral
		{"4005000000000000", 5},                     // flat LUN 5
		{"4101000000000000", 257},                   // flat LUN 257 (tgt's form above 255)
		{"0205000000000000", 0x4205},                // peripheral, bus 2
		{"0001000200000000", 0x00020001},            // two levels
		{"8123000000000000", 0x8123},                // logical unit addressing
		{"e200000000000001", 0x0001_0000_0000_e200}, // extended, several levels
	}
	for _, tt := range tests {
		b := [8]byte(hx(t, tt.in))
		if got := DecodeLUN(b); got != tt.want {
			t.Errorf("DecodeLUN(%s) = %#x, want %#x", tt.in, got, tt.want)
		}
	}
	// Flat LUN below 256 re-encodes in the equivalent peripheral form.
	if b := EncodeLUN(DecodeLUN([8]byte(hx(t, "4005000000000000")))); b != [8]byte(hx(t, "0005000000000000")) {
		t.Errorf("re-encoded flat LUN 5: % x", b)
	}
}

// TestLUNRoundTripExhaustiveFirstLevel checks both round trips over every
// single-level structure (bytes 0-1) and a few multi-level ones.
func TestLUNRoundTripExhaustiveFirstLevel(t *testing.T) {
	for v := 0; v < 1<<16; v++ {
		for _, tail := range []uint64{0, 1, 0x0100, 0xffff_0000_0000} {
			var b [8]byte
			b[0], b[1] = byte(v>>8), byte(v)
			b[2], b[3], b[4], b[5], b[6], b[7] = byte(tail>>40), byte(tail>>32), byte(tail>>24), byte(tail>>16), byte(tail>>8), byte(tail)
			n := DecodeLUN(b)
			back := EncodeLUN(n)
			flatLow := tail == 0 && b[0] == 0x40 // flat LUN 0-255
			if back != b && !flatLow {
				t.Fatalf("EncodeLUN(DecodeLUN(% x)) = % x", b, back)
			}
			if flatLow && back != [8]byte{0, b[1]} {
				t.Fatalf("flat % x re-encoded as % x", b, back)
			}
			if DecodeLUN(back) != n {
				t.Fatalf("DecodeLUN not stable for % x", b)
			}
		}
	}
	// DecodeLUN never returns 0x4000-0x40FF; every other number round-trips.
	for n := uint64(0); n < 1<<17; n++ {
		if got := DecodeLUN(EncodeLUN(n)); got != n && (n < 0x4000 || n > 0x40ff) {
			t.Fatalf("DecodeLUN(EncodeLUN(%#x)) = %#x", n, got)
		}
	}
}

func TestParseReportLUNs(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		luns    []uint64
		listLen uint32
		err     bool
	}{
		{"tgt LUNs 0,1,2", capTgtReportLUNs, []uint64{0, 1, 2}, 24, false},
		{"tgt cut at 16", capTgtReportLUNsCut, []uint64{0}, 24, false},
		{"istgt LUN 0", "00000008000000000000000000000000", []uint64{0}, 8, false},
		{"flat LUN 300", "00000010 00000000 0000000000000000 412c000000000000", []uint64{0, 300}, 16, false},
		{"list length shorter than data", "00000008 00000000 0000000000000000 0001000000000000", []uint64{0}, 8, false},
		{"list length not a multiple of 8", "0000000c 00000000 0000000000000000 0001000000000000", []uint64{0}, 12, false},
		{"partial trailing entry", "00000010 00000000 0000000000000000 00010000", []uint64{0}, 16, false},
		{"empty", "0000000000000000", []uint64{}, 0, false},
		{"huge list length", "ffffffff00000000 0007000000000000", []uint64{7}, 0xffffffff, false},
		{"short header", "00000008000000", nil, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			luns, n, err := ParseReportLUNs(hx(t, tt.data))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v", err)
			}
			if tt.err {
				return
			}
			if !reflect.DeepEqual(luns, tt.luns) || n != tt.listLen {
				t.Errorf("got %v, %d; want %v, %d", luns, n, tt.luns, tt.listLen)
			}
		})
	}
}
