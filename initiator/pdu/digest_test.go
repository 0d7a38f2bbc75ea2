package pdu

import (
	"bytes"
	"testing"
)

// TestCRC32CExamples checks CRC32C and its wire byte order against the CRC
// examples of the iSCSI RFC (the value column is the bytes as sent).
func TestCRC32CExamples(t *testing.T) {
	inc := make([]byte, 32)
	dec := make([]byte, 32)
	for i := range inc {
		inc[i] = byte(i)
		dec[i] = byte(31 - i)
	}
	read10 := parseHex(t, `
		01 c0 00 00 00 00 00 00 00 00 00 00 00 00 00 00
		14 00 00 00 00 00 04 00 00 00 00 14 00 00 00 18
		28 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00`)
	tests := []struct {
		name string
		in   []byte
		wire string
	}{
		{"32 bytes of zeroes", make([]byte, 32), "aa 36 91 8a"},
		{"32 bytes of ones", bytes.Repeat([]byte{0xff}, 32), "43 ab a8 62"},
		{"32 incrementing bytes", inc, "4e 79 dd 46"},
		{"32 decrementing bytes", dec, "5c db 3f 11"},
		{"SCSI Read (10) command PDU", read10, "56 3a 96 d9"},
	}
	for _, tc := range tests {
		var got [4]byte
		putDigest(got[:], CRC32C(tc.in))
		if want := parseHex(t, tc.wire); !bytes.Equal(got[:], want) {
			t.Errorf("%s: wire digest %x, want %x", tc.name, got, want)
		}
		if getDigest(got[:]) != CRC32C(tc.in) {
			t.Errorf("%s: getDigest does not invert putDigest", tc.name)
		}
	}
	if got := CRC32C(make([]byte, 32)); got != 0x8a9136aa {
		t.Errorf("CRC32C(32 zero bytes) = %#x, want 0x8a9136aa", got)
	}
}

func TestCRC32CParts(t *testing.T) {
	data := []byte("iSCSI header and data digests")
	whole := CRC32C(data)
	for i := range data {
		if got := CRC32C(data[:i], nil, data[i:]); got != whole {
			t.Fatalf("split at %d: %#x, want %#x", i, got, whole)
		}
	}
	if CRC32C() != 0 {
		t.Error("CRC32C() of nothing is not 0")
	}
}
