package scsi

import "testing"

func TestParseModeSense6(t *testing.T) {
	tests := []struct {
		name string
		data string
		want ModeParameters
		err  bool
	}{
		{"tgt all pages", capTgtModeSense6, ModeParameters{
			DPOFUA: true, WriteCacheEnabled: true, HaveCachingPage: true, BlockDescriptorLength: 8,
		}, false},
		{"tgt read-only LUN", capTgtModeSense6RO, ModeParameters{
			WriteProtected: true, DPOFUA: true, WriteCacheEnabled: true, HaveCachingPage: true, BlockDescriptorLength: 8,
		}, false},
		{"tgt control page only, DBD, read-only", capTgtModeSense6ControlRO, ModeParameters{
			WriteProtected: true, DPOFUA: true,
		}, false},
		{"istgt all pages (caching page with PS bit)", capIstgtModeSense6, ModeParameters{
			WriteCacheEnabled: true, HaveCachingPage: true, BlockDescriptorLength: 8,
		}, false},
		{"caching page only, DBD, WCE off, RCD on", "17000000 0812 01000000000000000000000000000000 0000", ModeParameters{
			ReadCacheDisabled: true, HaveCachingPage: true,
		}, false},
		{"caching page after a subpage-format page", "1f000000 4a010004 00000000 0812 04000000000000000000000000000000 0000", ModeParameters{
			WriteCacheEnabled: true, HaveCachingPage: true,
		}, false},
		{"subpage 0x08/0x01 is not the caching page", "0b000000 48010004 04000000", ModeParameters{}, false},
		{"caching page cut before its flags", "05000000 0812", ModeParameters{}, false},
		{"caching page cut after its flags", "06000000 0812 04", ModeParameters{WriteCacheEnabled: true, HaveCachingPage: true}, false},
		{"mode data length hides the caching page", "03000000 0812 04000000", ModeParameters{}, false},
		{"block descriptor length past the end", "0b0000ff 0812 04000000", ModeParameters{BlockDescriptorLength: 255}, false},
		{"header only, WP", "03008000", ModeParameters{WriteProtected: true}, false},
		{"short", "030080", ModeParameters{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseModeSense6(hx(t, tt.data))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v", err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseModeSense10(t *testing.T) {
	tests := []struct {
		name string
		data string
		want ModeParameters
		err  bool
	}{
		{"caching page with DBD", "001a 00 90 0000 0000 0812 14000000000000000000000000000000 0000", ModeParameters{
			WriteProtected: true, DPOFUA: true, WriteCacheEnabled: true, HaveCachingPage: true,
		}, false},
		{"block descriptor then caching page", "0022 00 00 0000 0008 0000000000000200 8812 04000000000000000000000000000000 0000", ModeParameters{
			WriteCacheEnabled: true, HaveCachingPage: true, BlockDescriptorLength: 8,
		}, false},
		{"long LBA block descriptor", "002a 00 00 0100 0010 00000000000000000000000000000200 0812 00000000000000000000000000000000 0000", ModeParameters{
			HaveCachingPage: true, BlockDescriptorLength: 16,
		}, false},
		{"header only", "0006 00 80 0000 0000", ModeParameters{WriteProtected: true}, false},
		{"6-byte header given to the 10 parser", "03008000", ModeParameters{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseModeSense10(hx(t, tt.data))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v", err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
