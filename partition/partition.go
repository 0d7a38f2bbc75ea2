package partition

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Scheme names a partition table type as sfdisk --json's "label" does.
type Scheme string

const (
	None Scheme = ""    // no partition table, or one Linux would not use
	DOS  Scheme = "dos" // MBR, with logical partitions in EBRs
	GPT  Scheme = "gpt" // GUID partition table behind a protective or hybrid MBR
)

// Kind says where an MBR partition is defined. GPT partitions are Primary.
type Kind int

const (
	Primary  Kind = iota // an MBR slot 1-4, or a GPT entry
	Extended             // the MBR container holding the EBR chain
	Logical              // defined by an EBR inside an extended partition
)

func (k Kind) String() string {
	switch k {
	case Primary:
		return "primary"
	case Extended:
		return "extended"
	case Logical:
		return "logical"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Partition is one partition as Linux would create it.
type Partition struct {
	// Number is the N of /dev/sdXN: MBR slot 1-4, logical partitions from 5
	// in chain order, GPT entry index plus one.
	Number int
	Kind   Kind
	Start  int64 // bytes from the start of the disk, a multiple of the sector size
	Size   int64 // bytes, a multiple of the sector size, at least one sector
	// Type is, for MBR, the type byte as two lower-case hex digits ("83",
	// "0c"; sfdisk drops the leading zero); for GPT, the type GUID in
	// upper-case canonical text.
	Type     string
	UUID     string // GPT unique partition GUID in upper case; "" for MBR
	Name     string // GPT partition name decoded from UTF-16LE; "" for MBR
	Bootable bool   // MBR boot indicator 0x80
}

// End is the byte offset just past the partition.
func (p Partition) End() int64 { return p.Start + p.Size }

// Table is a disk's partition table.
type Table struct {
	Scheme     Scheme
	SectorSize int    // the logical sector size the table was read with
	DiskID     string // MBR disk signature as "0x1234abcd", or the GPT disk GUID
	// Partitions are sorted by Number, which is unique. For DOS they include
	// the extended container (Kind Extended), which holds no file system.
	Partitions []Partition
	// BackupGPT says the primary GPT header or its entries were damaged and
	// the backup at the end of the disk was used.
	BackupGPT bool
	// Warnings say what was skipped, truncated or distrusted, and why a
	// table with a boot signature was not used. At most MaxWarnings+1.
	Warnings []string
}

// Find returns the partition numbered number.
func (t *Table) Find(number int) (Partition, bool) {
	i, ok := slices.BinarySearchFunc(t.Partitions, number, func(p Partition, n int) int { return p.Number - n })
	if !ok {
		return Partition{}, false
	}
	return t.Partitions[i], true
}

// Limits on what a hostile disk can make Read do.
const (
	// MaxGPTEntriesBytes bounds NumberOfPartitionEntries*SizeOfPartitionEntry:
	// 8192 entries of 128 bytes. Tools write 16 KiB (128 entries); a larger
	// array is refused as damaged.
	MaxGPTEntriesBytes = 1 << 20
	// MaxEBRs bounds the EBRs read in all chains together; Linux stops a
	// disk at 256 partitions.
	MaxEBRs = 256
	// MaxWarnings bounds Table.Warnings; one more says how many were left out.
	MaxWarnings = 32
)

// mbrSize is the size of the MBR and of an EBR, whatever the sector size.
const mbrSize = 512

// Read parses the partition table of a disk of size bytes whose logical
// sector size is sectorSize (a power of two from 512 to 65536). A disk
// without a table, or with one Linux would not use, gives Scheme None and a
// nil error. Errors are I/O errors of r, wrapped, and arguments out of range.
func Read(r io.ReaderAt, size int64, sectorSize int) (*Table, error) {
	if sectorSize < 512 || sectorSize > 65536 || sectorSize&(sectorSize-1) != 0 {
		return nil, fmt.Errorf("partition: sector size %d is not a power of two from 512 to 65536", sectorSize)
	}
	if size < 0 {
		return nil, fmt.Errorf("partition: negative disk size %d", size)
	}
	ss := int64(sectorSize)
	p := &parser{
		r:          r,
		sectorSize: ss,
		sectors:    size / ss,
		diskBytes:  size / ss * ss, // a partial last sector is not addressable
		t:          &Table{SectorSize: sectorSize},
	}
	if err := p.parse(); err != nil {
		return nil, err
	}
	if p.t.Scheme == None {
		p.t.DiskID, p.t.Partitions, p.t.BackupGPT = "", nil, false
	}
	slices.SortFunc(p.t.Partitions, func(a, b Partition) int { return a.Number - b.Number })
	if p.droppedWarnings > 0 {
		p.t.Warnings = append(p.t.Warnings, fmt.Sprintf("%d more warnings left out", p.droppedWarnings))
	}
	return p.t, nil
}

// parser holds the disk geometry and the table being built.
type parser struct {
	r          io.ReaderAt
	sectorSize int64
	sectors    int64 // whole sectors on the disk; the last LBA is sectors-1
	diskBytes  int64 // sectors*sectorSize

	t               *Table
	droppedWarnings int
}

func (p *parser) parse() error {
	if p.diskBytes < mbrSize {
		return nil
	}
	mbr, err := p.read(0, mbrSize)
	if err != nil {
		return err
	}
	if !hasBootSignature(mbr) {
		return nil
	}
	entries := parseMBREntries(mbr)
	if slices.ContainsFunc(entries[:], func(e mbrEntry) bool { return e.typ == typeGPTProtective }) {
		return p.parseGPT(entries)
	}
	return p.parseDOS(mbr, entries)
}

func (p *parser) warn(format string, args ...any) {
	if len(p.t.Warnings) >= MaxWarnings {
		p.droppedWarnings++
		return
	}
	p.t.Warnings = append(p.t.Warnings, fmt.Sprintf(format, args...))
}

// add records part after fitting it to the disk as Linux does: a partition
// starting past the end is dropped (its number stays used), one reaching
// past the end is cut at the end.
func (p *parser) add(part Partition) {
	if part.Start >= p.diskBytes {
		p.warn("partition %d starts at byte %d, past the end of the disk (%d bytes): dropped", part.Number, part.Start, p.diskBytes)
		return
	}
	if part.Size > p.diskBytes-part.Start {
		p.warn("partition %d (%d bytes at byte %d) extends past the end of the disk (%d bytes): truncated to %d bytes",
			part.Number, part.Size, part.Start, p.diskBytes, p.diskBytes-part.Start)
		part.Size = p.diskBytes - part.Start
	}
	p.t.Partitions = append(p.t.Partitions, part)
}

// read returns n bytes at off, which the caller has checked lie on the disk.
func (p *parser) read(off int64, n int) ([]byte, error) {
	if off < 0 || int64(n) > p.diskBytes-off {
		return nil, fmt.Errorf("partition: read of %d bytes at offset %d outside the disk of %d bytes", n, off, p.diskBytes)
	}
	buf := make([]byte, n)
	got, err := p.r.ReadAt(buf, off)
	if got == n {
		return buf, nil // io.ReaderAt may report io.EOF with a full read at the end
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return nil, fmt.Errorf("partition: read %d bytes at offset %d: got %d: %w", n, off, got, err)
}

func hasBootSignature(sector []byte) bool {
	return len(sector) >= mbrSize && sector[510] == 0x55 && sector[511] == 0xaa
}

var le = binary.LittleEndian
