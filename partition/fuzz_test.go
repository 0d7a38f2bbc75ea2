package partition

import (
	"bytes"
	"flag"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzRead reads a sparse disk: 440 zero bytes (the MBR's boot code, which
// nothing reads), head, zeros to the end of the sector, gapSectors sectors
// of zeros, then tail zero-padded to whole sectors. A disk's tables sit at
// its two ends, so inputs stay under a kilobyte or two where a whole GPT
// disk is kilobytes: the fuzzer minimizes each new input in O(n^2) runs,
// and stalls for a minute on 4 KiB. With fixCRCs the GPT CRCs are recomputed
// before reading, so mutations get past the CRC checks.
//
// The seeds in testdata/fuzz/FuzzRead are made by fuzzSeeds;
// `go test -run TestFuzzSeeds -write-fuzz-seeds` rewrites them.
var writeFuzzSeeds = flag.Bool("write-fuzz-seeds", false, "rewrite testdata/fuzz/FuzzRead from fuzzSeeds")

func FuzzRead(f *testing.F) {
	f.Fuzz(func(t *testing.T, head, tail []byte, gapSectors uint16, shift uint8, fixCRCs bool) {
		sectorSize := fuzzSectorSize(shift)
		disk := newSparseDisk(bytes.Clone(head), bytes.Clone(tail), gapSectors, sectorSize)
		if fixCRCs {
			disk.fixGPTCRCs()
		}
		table, err := Read(disk, disk.size, sectorSize)
		if err != nil {
			t.Fatalf("error from a reader that only fails outside the disk: %v", err)
		}
		checkInvariants(t, table, disk.size, sectorSize)
		again, err := Read(disk, disk.size, sectorSize)
		if err != nil || !reflect.DeepEqual(table, again) {
			t.Fatalf("second Read differs: %+v, %v; first %+v", again, err, table)
		}
	})
}

// fuzzSectorSize maps the fuzzer's byte onto the sector sizes Read accepts.
func fuzzSectorSize(shift uint8) int { return 512 << (shift % 8) }

// sparseDisk is zeros, head, zeros, tail; it fails reads outside its size.
type sparseDisk struct {
	head, tail []byte
	tailOffset int64 // the head starts at sparseHeadOffset
	size       int64
	sectorSize int64
}

// sparseHeadOffset is where the head starts: the MBR's disk ID at 440.
const sparseHeadOffset = 440

func newSparseDisk(head, tail []byte, gapSectors uint16, sectorSize int) *sparseDisk {
	ss := int64(sectorSize)
	wholeSectors := func(n int) int64 { return (int64(n) + ss - 1) / ss * ss }
	tailOffset := wholeSectors(sparseHeadOffset+len(head)) + int64(gapSectors)*ss
	return &sparseDisk{head: head, tail: tail, tailOffset: tailOffset, size: tailOffset + wholeSectors(len(tail)), sectorSize: ss}
}

func (d *sparseDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || int64(len(p)) > d.size-off {
		return 0, fmt.Errorf("read of %d bytes at %d outside the disk of %d bytes", len(p), off, d.size)
	}
	clear(p)
	if from := max(off, sparseHeadOffset); from-sparseHeadOffset < int64(len(d.head)) && from < off+int64(len(p)) {
		copy(p[from-off:], d.head[from-sparseHeadOffset:])
	}
	if end := off + int64(len(p)); end > d.tailOffset {
		from := max(off, d.tailOffset)
		if from-d.tailOffset < int64(len(d.tail)) {
			copy(p[from-off:], d.tail[from-d.tailOffset:])
		}
	}
	return len(p), nil
}

// bytesAt returns the n bytes at off when they lie within head or tail,
// for writing; nil when they do not.
func (d *sparseDisk) bytesAt(off int64, n int) []byte {
	switch {
	case off >= sparseHeadOffset && off-sparseHeadOffset+int64(n) <= int64(len(d.head)):
		return d.head[off-sparseHeadOffset : off-sparseHeadOffset+int64(n)]
	case off >= d.tailOffset && off-d.tailOffset+int64(n) <= int64(len(d.tail)):
		return d.tail[off-d.tailOffset : off-d.tailOffset+int64(n)]
	}
	return nil
}

// fixGPTCRCs recomputes the entries and header CRC32s of the GPT headers at
// LBA 1 and at the last LBA, where their fields allow.
func (d *sparseDisk) fixGPTCRCs() {
	lastLBA := d.size/d.sectorSize - 1
	for _, lba := range []int64{1, lastLBA} {
		header := d.bytesAt(lba*d.sectorSize, gptMinHeaderSize)
		if lba < 1 || header == nil {
			continue
		}
		entriesLBA := le.Uint64(header[72:80])
		arrayBytes := uint64(le.Uint32(header[80:84])) * uint64(le.Uint32(header[84:88]))
		if arrayBytes <= MaxGPTEntriesBytes && entriesLBA <= uint64(lastLBA) &&
			int64(arrayBytes) <= d.size-int64(entriesLBA)*d.sectorSize {
			array := make([]byte, arrayBytes)
			d.ReadAt(array, int64(entriesLBA)*d.sectorSize)
			le.PutUint32(header[88:92], crc32.ChecksumIEEE(array))
		}
		if size := le.Uint32(header[12:16]); size >= gptMinHeaderSize && int64(size) <= d.sectorSize {
			if header = d.bytesAt(lba*d.sectorSize, int(size)); header != nil {
				le.PutUint32(header[16:20], 0)
				le.PutUint32(header[16:20], crc32.ChecksumIEEE(header))
			}
		}
	}
}

// checkInvariants checks what every table Read returns must satisfy.
func checkInvariants(t *testing.T, table *Table, size int64, sectorSize int) {
	ss := int64(sectorSize)
	diskBytes := size / ss * ss
	if table.SectorSize != sectorSize {
		t.Fatalf("SectorSize %d, read with %d", table.SectorSize, sectorSize)
	}
	if len(table.Warnings) > MaxWarnings+1 {
		t.Fatalf("%d warnings", len(table.Warnings))
	}
	switch table.Scheme {
	case None:
		if len(table.Partitions) != 0 || table.DiskID != "" || table.BackupGPT {
			t.Fatalf("no table but %+v", table)
		}
	case DOS, GPT:
	default:
		t.Fatalf("scheme %q", table.Scheme)
	}
	if table.BackupGPT && table.Scheme != GPT {
		t.Fatalf("BackupGPT for scheme %q", table.Scheme)
	}
	for i, p := range table.Partitions {
		if p.Start < 0 || p.Size < ss || p.Start%ss != 0 || p.Size%ss != 0 || p.Size > diskBytes-p.Start {
			t.Fatalf("partition %+v is not whole sectors of %d within the disk of %d bytes", p, ss, diskBytes)
		}
		if i > 0 && p.Number <= table.Partitions[i-1].Number {
			t.Fatalf("partition numbers not increasing: %d after %d", p.Number, table.Partitions[i-1].Number)
		}
		if found, ok := table.Find(p.Number); !ok || found != p {
			t.Fatalf("Find(%d) = %+v, %v", p.Number, found, ok)
		}
		switch {
		case table.Scheme == GPT:
			if p.Kind != Primary || p.Number < 1 || len(p.Type) != 36 || len(p.UUID) != 36 || p.Bootable {
				t.Fatalf("GPT partition %+v", p)
			}
		case p.Number >= 1 && p.Number <= 4:
			if p.Kind == Logical || len(p.Type) != 2 {
				t.Fatalf("MBR slot partition %+v", p)
			}
		case p.Number < 5 || p.Number >= 5+MaxEBRs || p.Kind != Logical || len(p.Type) != 2:
			t.Fatalf("logical partition %+v", p)
		}
	}
}

type fuzzSeed struct {
	name       string
	image      []byte // the whole disk, which the sparse form must read as
	head, tail []byte
	gapSectors uint16
	shift      uint8 // fuzzSectorSize(shift) is the sector size
	fixCRCs    bool
}

// splitSeed makes the sparse form of img: its first headSectors and last
// tailSectors sectors, trailing zeros trimmed (within the tail's last
// sector only, so the tail keeps its place at the end).
func splitSeed(name string, img []byte, shift uint8, headSectors, tailSectors int, fixCRCs bool) fuzzSeed {
	ss := fuzzSectorSize(shift)
	head := bytes.TrimRight(img[sparseHeadOffset:headSectors*ss], "\x00")
	tail := img[len(img)-tailSectors*ss:]
	tail = tail[:max(len(bytes.TrimRight(tail, "\x00")), (tailSectors-1)*ss+1)]
	headWhole := (sparseHeadOffset + len(head) + ss - 1) / ss
	return fuzzSeed{name, img, head, tail, uint16(len(img)/ss - headWhole - tailSectors), shift, fixCRCs}
}

// fuzzSeeds are small disks holding each kind of table Read knows.
func fuzzSeeds(t testing.TB) []fuzzSeed {
	const sectors = 8
	gpt := buildGPT(t, gptLayout{512, sectors}, []testGPTPart{
		{espType, "A0000000-0000-0000-0000-000000000001", 3, 3, "esp"},
		{linuxFSType, "A0000000-0000-0000-0000-000000000002", 4, 5, "root"},
	})
	hybrid := bytes.Clone(gpt)
	putMBREntry(hybrid, 1, 0x80, 0x0c, 3, 1)
	backup := bytes.Clone(gpt)
	backup[512+60] ^= 0xff

	// The extended partition holds its EBRs at LBAs 1 and 2, next to the MBR.
	dosRecords := []mbrRecord{
		{0, 0, 0x80, 0x83, 6, 2},
		{0, 1, 0, 0x05, 1, 5},
		{1, 0, 0, 0x83, 2, 1}, // LBA 3
		{1, 1, 0, 0x05, 1, 4}, // next EBR at 1+1
		{2, 0, 0, 0x82, 2, 2}, // LBAs 4-5
	}
	dos := mbrImage(sectors, 512, dosRecords...)
	loop := mbrImage(sectors, 512, append(dosRecords, mbrRecord{2, 1, 0, 0x05, 0, 5})...) // back to the first EBR
	dos1024 := mbrImage(4, 1024, mbrRecord{0, 0, 0, 0x0f, 1, 3}, mbrRecord{1, 0, 0, 0x83, 1, 2})

	return []fuzzSeed{
		splitSeed("gpt", gpt, 0, 3, 2, true),
		splitSeed("gpt_hybrid", hybrid, 0, 3, 2, true),
		splitSeed("gpt_backup", backup, 0, 3, 2, false),
		splitSeed("dos_logicals", dos, 0, 3, 0, false),
		splitSeed("dos_ebr_loop", loop, 0, 3, 0, false),
		splitSeed("dos_1024", dos1024, 1, 2, 0, false),
	}
}

func encodeFuzzSeed(s fuzzSeed) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n[]byte(%q)\nuint16(%d)\nbyte(%q)\nbool(%t)\n",
		s.head, s.tail, s.gapSectors, s.shift, s.fixCRCs)
}

// TestFuzzSeeds keeps the checked-in seeds equal to fuzzSeeds, and checks
// each parses to a table.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzRead")
	for _, s := range fuzzSeeds(t) {
		path := filepath.Join(dir, s.name)
		want := encodeFuzzSeed(s)
		if *writeFuzzSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is missing or stale (%v): run go test -run TestFuzzSeeds -write-fuzz-seeds", path, err)
		}
		ss := fuzzSectorSize(s.shift)
		disk := newSparseDisk(s.head, s.tail, s.gapSectors, ss)
		table, err := Read(disk, disk.size, ss)
		if err != nil {
			t.Fatalf("seed %s: %v", s.name, err)
		}
		checkInvariants(t, table, disk.size, ss)
		if table.Scheme == None || len(table.Partitions) < 2 {
			t.Errorf("seed %s: %+v", s.name, table)
		}
		if whole := mustRead(t, s.image, ss); !reflect.DeepEqual(table, whole) {
			t.Errorf("seed %s reads as %+v, the whole image as %+v", s.name, table, whole)
		}
	}
}
