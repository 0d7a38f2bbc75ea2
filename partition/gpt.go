package partition

import (
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"unicode/utf16"
)

// errInvalidGPT marks a GPT header or entries array that fails validation,
// as opposed to an I/O error while reading it.
var errInvalidGPT = errors.New("invalid GPT")

const (
	gptSignature     = "EFI PART"
	gptMinHeaderSize = 92  // the header fields of UEFI 2.x
	gptEntryMinSize  = 128 // entry sizes are multiples of this
	gptNameOffset    = 56  // the name is 36 UTF-16LE code units at offset 56 of an entry
	gptNameBytes     = 72
)

// gptHeader is the part of a GPT header this package uses, all LBAs
// validated against the disk by readGPT.
type gptHeader struct {
	alternateLBA uint64
	firstUsable  uint64
	lastUsable   uint64
	diskGUID     []byte
	entriesLBA   uint64
	numEntries   uint32
	entrySize    uint32
	entriesCRC   uint32
}

// parseGPT reads the GPT announced by an MBR with a 0xEE entry. When no
// valid GPT is found the disk has no table, as for Linux: its msdos parser
// refuses an MBR holding a 0xEE entry, even in a hybrid MBR.
func (p *parser) parseGPT(entries [4]mbrEntry) error {
	// Linux's is_pmbr_valid wants the 0xEE entry to start at LBA 1.
	if !slices.ContainsFunc(entries[:], func(e mbrEntry) bool { return e.typ == typeGPTProtective && e.startLBA == 1 }) {
		p.warn("MBR has a type 0xee entry not starting at LBA 1: neither a protective MBR nor a usable MBR")
		return nil
	}
	primary, array, err := p.readGPT(1)
	if err == nil {
		p.useGPT(primary, array)
		return nil
	}
	if !errors.Is(err, errInvalidGPT) {
		return err
	}
	p.warn("primary GPT: %v", err)
	lastLBA := uint64(p.sectors - 1)
	var backupLBAs []uint64
	if primary != nil && primary.alternateLBA != lastLBA && primary.alternateLBA != 1 {
		backupLBAs = append(backupLBAs, primary.alternateLBA) // the header is sound, only its entries are not
	}
	backupLBAs = append(backupLBAs, lastLBA)
	for _, lba := range backupLBAs {
		backup, array, err := p.readGPT(lba)
		if err == nil {
			p.warn("using the backup GPT at LBA %d", lba)
			p.t.BackupGPT = true
			p.useGPT(backup, array)
			return nil
		}
		if !errors.Is(err, errInvalidGPT) {
			return err
		}
		p.warn("backup GPT at LBA %d: %v", lba, err)
	}
	p.warn("no valid GPT: the disk has no usable partition table")
	return nil
}

// readGPT reads and validates the GPT header at lba and its entries array.
// When the header is valid but the entries are not, it returns the header
// together with the error.
func (p *parser) readGPT(lba uint64) (*gptHeader, []byte, error) {
	lastLBA := uint64(p.sectors - 1)
	if lba < 1 || lba > lastLBA {
		return nil, nil, fmt.Errorf("%w: header LBA %d is not on the disk (last LBA %d)", errInvalidGPT, lba, lastLBA)
	}
	sector, err := p.read(int64(lba)*p.sectorSize, int(p.sectorSize))
	if err != nil {
		return nil, nil, fmt.Errorf("partition: GPT header at LBA %d: %w", lba, err)
	}
	h, err := parseGPTHeader(sector, lba, lastLBA)
	if err != nil {
		return nil, nil, err
	}
	arrayBytes := uint64(h.numEntries) * uint64(h.entrySize) // at most MaxGPTEntriesBytes
	if h.entriesLBA > lastLBA || arrayBytes > uint64(p.diskBytes)-h.entriesLBA*uint64(p.sectorSize) {
		return h, nil, fmt.Errorf("%w: entries array of %d bytes at LBA %d does not fit on the disk", errInvalidGPT, arrayBytes, h.entriesLBA)
	}
	array, err := p.read(int64(h.entriesLBA)*p.sectorSize, int(arrayBytes))
	if err != nil {
		return nil, nil, fmt.Errorf("partition: GPT entries at LBA %d: %w", h.entriesLBA, err)
	}
	if crc := crc32.ChecksumIEEE(array); crc != h.entriesCRC {
		return h, nil, fmt.Errorf("%w: entries array CRC32 is %08x, the header says %08x", errInvalidGPT, crc, h.entriesCRC)
	}
	return h, array, nil
}

// parseGPTHeader validates the header in sector, read from lba, the way
// Linux's is_gpt_valid does.
func parseGPTHeader(sector []byte, lba, lastLBA uint64) (*gptHeader, error) {
	if string(sector[:8]) != gptSignature {
		return nil, fmt.Errorf("%w: no %q signature at LBA %d", errInvalidGPT, gptSignature, lba)
	}
	headerSize := le.Uint32(sector[12:16])
	if headerSize < gptMinHeaderSize || uint64(headerSize) > uint64(len(sector)) {
		return nil, fmt.Errorf("%w: header size %d is outside %d..%d", errInvalidGPT, headerSize, gptMinHeaderSize, len(sector))
	}
	// The CRC covers HeaderSize bytes with the CRC field itself taken as zero.
	crc := crc32.ChecksumIEEE(sector[:16])
	crc = crc32.Update(crc, crc32.IEEETable, make([]byte, 4))
	crc = crc32.Update(crc, crc32.IEEETable, sector[20:headerSize])
	if stored := le.Uint32(sector[16:20]); crc != stored {
		return nil, fmt.Errorf("%w: header CRC32 is %08x, the header says %08x", errInvalidGPT, crc, stored)
	}
	if myLBA := le.Uint64(sector[24:32]); myLBA != lba {
		return nil, fmt.Errorf("%w: header at LBA %d says it is at LBA %d", errInvalidGPT, lba, myLBA)
	}
	h := &gptHeader{
		alternateLBA: le.Uint64(sector[32:40]),
		firstUsable:  le.Uint64(sector[40:48]),
		lastUsable:   le.Uint64(sector[48:56]),
		diskGUID:     sector[56:72],
		entriesLBA:   le.Uint64(sector[72:80]),
		numEntries:   le.Uint32(sector[80:84]),
		entrySize:    le.Uint32(sector[84:88]),
		entriesCRC:   le.Uint32(sector[88:92]),
	}
	if h.firstUsable > h.lastUsable || h.lastUsable >= lastLBA {
		return nil, fmt.Errorf("%w: usable LBAs %d..%d do not end before the last LBA %d", errInvalidGPT, h.firstUsable, h.lastUsable, lastLBA)
	}
	if h.entrySize < gptEntryMinSize || h.entrySize%gptEntryMinSize != 0 {
		return nil, fmt.Errorf("%w: entry size %d is not a multiple of %d", errInvalidGPT, h.entrySize, gptEntryMinSize)
	}
	if n := uint64(h.numEntries) * uint64(h.entrySize); n > MaxGPTEntriesBytes {
		return nil, fmt.Errorf("%w: entries array of %d x %d bytes exceeds %d bytes", errInvalidGPT, h.numEntries, h.entrySize, MaxGPTEntriesBytes)
	}
	return h, nil
}

// useGPT fills the table from a validated header and entries array.
func (p *parser) useGPT(h *gptHeader, array []byte) {
	p.t.Scheme = GPT
	p.t.DiskID = formatGUID(h.diskGUID)
	for i := range int(h.numEntries) {
		entry := array[i*int(h.entrySize):][:gptEntryMinSize]
		if isZero(entry[:16]) {
			continue // unused entry
		}
		number := i + 1
		first, last := le.Uint64(entry[32:40]), le.Uint64(entry[40:48])
		if first > last {
			p.warn("GPT entry %d: first LBA %d is after last LBA %d: skipped", number, first, last)
			continue
		}
		if first < h.firstUsable || last > h.lastUsable {
			p.warn("GPT entry %d: LBAs %d..%d are outside the usable LBAs %d..%d: skipped", number, first, last, h.firstUsable, h.lastUsable)
			continue
		}
		// lastUsable < lastLBA, so these products fit in an int64.
		p.add(Partition{
			Number: number,
			Kind:   Primary,
			Start:  int64(first) * p.sectorSize,
			Size:   int64(last-first+1) * p.sectorSize,
			Type:   formatGUID(entry[0:16]),
			UUID:   formatGUID(entry[16:32]),
			Name:   decodeGPTName(entry[gptNameOffset : gptNameOffset+gptNameBytes]),
		})
	}
}

// formatGUID prints a 16-byte on-disk GUID as upper-case canonical text; its
// first three fields are stored little-endian.
func formatGUID(b []byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", le.Uint32(b[0:4]), le.Uint16(b[4:6]), le.Uint16(b[6:8]), b[8:10], b[10:16])
}

// decodeGPTName decodes UTF-16LE up to the first NUL; unpaired surrogates
// become U+FFFD.
func decodeGPTName(b []byte) string {
	units := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		u := le.Uint16(b[i:])
		if u == 0 {
			break
		}
		units = append(units, u)
	}
	return string(utf16.Decode(units))
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
