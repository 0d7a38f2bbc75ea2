package scsi

import "testing"

func TestParseReadCapacity10(t *testing.T) {
	tests := []struct {
		name   string
		data   string
		want   Capacity
		blocks uint64
		bytes  uint64
		err    bool
	}{
		{"tgt 32 MiB", capTgtRC10, Capacity{LastLBA: 0xffff, BlockSize: 512}, 0x10000, 32 << 20, false},
		{"istgt 64 MiB", capIstgtRC10, Capacity{LastLBA: 0x1ffff, BlockSize: 512}, 0x20000, 64 << 20, false},
		{"tgt null 1 TiB", "7fffffff00000200", Capacity{LastLBA: 1<<31 - 1, BlockSize: 512}, 1 << 31, 1 << 40, false},
		{"4Kn", "000003ff00001000", Capacity{LastLBA: 1023, BlockSize: 4096}, 1024, 4 << 20, false},
		{"extra bytes ignored", capTgtRC10 + "ffff", Capacity{LastLBA: 0xffff, BlockSize: 512}, 0x10000, 32 << 20, false},
		{"short", "0000ffff000002", Capacity{}, 0, 0, true},
		{"block length 0", "0000ffff00000000", Capacity{}, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseReadCapacity10(hx(t, tt.data))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v", err)
			}
			if tt.err {
				return
			}
			if got != tt.want || got.Blocks() != tt.blocks || got.Bytes() != tt.bytes {
				t.Errorf("got %+v (%d blocks, %d bytes), want %+v (%d, %d)", got, got.Blocks(), got.Bytes(), tt.want, tt.blocks, tt.bytes)
			}
			if got.Overflow10() {
				t.Error("Overflow10 for a small capacity")
			}
		})
	}
	c, err := ParseReadCapacity10(hx(t, "ffffffff00000200"))
	if err != nil || !c.Overflow10() {
		t.Errorf("0xFFFFFFFF: %+v, %v: want Overflow10", c, err)
	}
}

func TestParseReadCapacity16(t *testing.T) {
	tests := []struct {
		name string
		data string
		want Capacity
		err  bool
	}{
		{"tgt thin (LBPME, LBPRZ, 4K physical)", capTgtRC16Thin, Capacity{
			LastLBA: 0xffff, BlockSize: 512, PhysicalExponent: 3, LBPME: true, LBPRZ: true,
		}, false},
		{"istgt", capIstgtRC16, Capacity{LastLBA: 0x1ffff, BlockSize: 512}, false},
		{"beyond 2 TiB with protection", "0000000200000000 00000200 05 01 8007 0000", Capacity{
			LastLBA: 1 << 33, BlockSize: 512, ProtEnabled: true, ProtType: 2,
			PhysicalExponent: 1, LBPME: true, LowestAlignedLBA: 7,
		}, false},
		{"12 bytes: no flags", "000000000000ffff00000200", Capacity{LastLBA: 0xffff, BlockSize: 512}, false},
		{"13 bytes", "000000000000ffff00000200 01", Capacity{LastLBA: 0xffff, BlockSize: 512, ProtEnabled: true}, false},
		{"15 bytes: no lowest aligned LBA", "000000000000ffff00000200 00 03 ff", Capacity{
			LastLBA: 0xffff, BlockSize: 512, PhysicalExponent: 3, LBPME: true, LBPRZ: true,
		}, false},
		{"short", "000000000000ffff000002", Capacity{}, true},
		{"block length 0", "000000000000ffff00000000", Capacity{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseReadCapacity16(hx(t, tt.data))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v", err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
	c, _ := ParseReadCapacity16(hx(t, capTgtRC16Thin))
	if c.Blocks() != 0x10000 || c.Bytes() != 32<<20 {
		t.Errorf("Blocks %d Bytes %d", c.Blocks(), c.Bytes())
	}
}
