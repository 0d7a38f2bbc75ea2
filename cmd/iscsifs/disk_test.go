package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/iscsifs/iscsifs/cache"
	"github.com/iscsifs/iscsifs/initiator"
	"github.com/iscsifs/iscsifs/partition"
)

// memDevice is a cache.Device in memory.
type memDevice struct{ data []byte }

func (d *memDevice) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return copy(p, d.data[off:]), nil
}
func (d *memDevice) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return copy(d.data[off:], p), nil
}
func (d *memDevice) SyncContext(ctx context.Context) error { return nil }
func (d *memDevice) Size() int64                           { return int64(len(d.data)) }
func (d *memDevice) BlockSize() int                        { return 512 }

func testLUNFile(t *testing.T, size int) (*lunFile, *memDevice) {
	t.Helper()
	dev := &memDevice{data: make([]byte, size)}
	c, err := cache.New(dev, cache.Options{Size: 4 << 20, WriteThrough: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return &lunFile{Cache: c, path: "lun1"}, dev
}

// TestTouchesTable: writes at either end of the LUN, and into an extended
// partition outside its logical ones (where EBRs live), mark the table for a
// re-read; writes inside partitions do not.
func TestTouchesTable(t *testing.T) {
	const mib = 1 << 20
	f, _ := testLUNFile(t, 64*mib)
	f.disk.setAreas(&partition.Table{Partitions: []partition.Partition{
		{Number: 1, Kind: partition.Primary, Start: 1 * mib, Size: 8 * mib},
		{Number: 2, Kind: partition.Extended, Start: 9 * mib, Size: 50 * mib},
		{Number: 5, Kind: partition.Logical, Start: 10 * mib, Size: 8 * mib},
	}})
	for _, tc := range []struct {
		name     string
		off, end int64
		want     bool
	}{
		{"MBR", 0, 512, true},
		{"primary GPT entries", 1024, 17408, true},
		{"backup GPT", 64*mib - 512, 64 * mib, true},
		{"inside partition 1", 2 * mib, 2*mib + 4096, false},
		{"inside logical 5", 11 * mib, 11*mib + 4096, false},
		{"EBR before logical 5", 9 * mib, 9*mib + 512, true},
		{"gap after logical 5", 30 * mib, 30*mib + 512, true},
		{"across logical 5's end", 18*mib - 512, 18*mib + 512, true},
		{"after the extended partition", 60 * mib, 60*mib + 4096, false},
	} {
		if got := f.touchesTable(tc.off, tc.end); got != tc.want {
			t.Errorf("%s [%d, %d): touchesTable %v, want %v", tc.name, tc.off, tc.end, got, tc.want)
		}
	}
}

// TestPartFileWindow: a part file reads and writes its window of the LUN
// only: at the end it returns io.EOF and refuses writes past it.
func TestPartFileWindow(t *testing.T) {
	f, dev := testLUNFile(t, 1<<20)
	for i := range dev.data {
		dev.data[i] = byte(i / 512)
	}
	p := &partFile{lun: f, part: partition.Partition{Number: 1, Start: 64 << 10, Size: 128 << 10}, path: "lun1-part1"}
	ctx := context.Background()
	buf := make([]byte, 1024)
	if n, err := p.ReadAtContext(ctx, buf, 0); n != 1024 || err != nil || !bytes.Equal(buf, dev.data[64<<10:64<<10+1024]) {
		t.Errorf("read at 0: %d %v, or wrong data", n, err)
	}
	if n, err := p.ReadAtContext(ctx, buf, 128<<10-512); n != 512 || !errors.Is(err, io.EOF) {
		t.Errorf("read across the end: %d %v, want 512 and io.EOF", n, err)
	}
	if n, err := p.ReadAtContext(ctx, buf, 128<<10); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("read at the end: %d %v", n, err)
	}
	data := bytes.Repeat([]byte{0xee}, 700)
	if _, err := p.WriteAtContext(ctx, data, 1000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dev.data[64<<10+1000:64<<10+1700], data) || dev.data[64<<10+999] == 0xee || dev.data[64<<10+1700] == 0xee {
		t.Errorf("write at 1000 did not land at the partition's offset + 1000 alone")
	}
	var re *initiator.RangeError
	if _, err := p.WriteAtContext(ctx, data, 128<<10-100); !errors.As(err, &re) {
		t.Errorf("write across the end: %v, want a RangeError", err)
	}
	if _, err := p.WriteAtContext(ctx, data, -1); !errors.As(err, &re) {
		t.Errorf("write at -1: %v, want a RangeError", err)
	}
}
