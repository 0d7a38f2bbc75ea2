package scsi

import (
	"reflect"
	"testing"
)

func TestParseGetLBAStatus(t *testing.T) {
	tests := []struct {
		name string
		data string
		want []LBAStatus
		err  bool
	}{
		{"tgt, cut by allocation length", capTgtGetLBAStatus, []LBAStatus{{LBA: 0, Blocks: 8, Status: LBADeallocated}}, false},
		{"three descriptors", "00000034 00000000" +
			"0000000000000000 00000008 00000000" +
			"0000000000000008 00000100 01000000" +
			"0000000000000108 0000fef8 02000000",
			[]LBAStatus{
				{LBA: 0, Blocks: 8, Status: LBAMapped},
				{LBA: 8, Blocks: 0x100, Status: LBADeallocated},
				{LBA: 0x108, Blocks: 0xfef8, Status: LBAAnchored},
			}, false},
		{"parameter data length hides the second", "00000014 00000000" +
			"0000000000000000 00000008 01000000" +
			"0000000000000008 00000008 00000000",
			[]LBAStatus{{LBA: 0, Blocks: 8, Status: LBADeallocated}}, false},
		{"reserved bits of the status byte ignored", "00000014 00000000 0000000000000010 00000001 f1000000",
			[]LBAStatus{{LBA: 0x10, Blocks: 1, Status: LBADeallocated}}, false},
		{"no descriptors", "00000004 00000000", nil, false},
		{"short", "00000004 000000", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseGetLBAStatus(hx(t, tt.data))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
