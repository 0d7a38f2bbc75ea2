package partition

import "fmt"

// MBR partition type bytes this package acts on.
const (
	typeGPTProtective = 0xee
	typeDOSExtended   = 0x05
	typeWin98Extended = 0x0f // LBA-addressed
	typeLinuxExtended = 0x85
)

func isExtendedType(typ byte) bool {
	return typ == typeDOSExtended || typ == typeWin98Extended || typ == typeLinuxExtended
}

// mbrEntry is one of the four 16-byte partition entries at byte 446 of an
// MBR or EBR. CHS fields are ignored, as Linux ignores them.
type mbrEntry struct {
	bootIndicator byte
	typ           byte
	startLBA      uint32 // MBR: from the disk start; EBR data entry: from the EBR; EBR link: from the extended partition
	sectors       uint32
}

// used follows Linux and sfdisk: an entry is unused when its sector count
// is 0, whatever its type (a type 0 entry with sectors is a partition).
func (e mbrEntry) used() bool { return e.sectors != 0 }

func parseMBREntries(sector []byte) [4]mbrEntry {
	var entries [4]mbrEntry
	for i := range entries {
		b := sector[446+16*i : 446+16*(i+1)]
		entries[i] = mbrEntry{bootIndicator: b[0], typ: b[4], startLBA: le.Uint32(b[8:12]), sectors: le.Uint32(b[12:16])}
	}
	return entries
}

// mbrPartition makes the Partition of entry e whose LBAs count from baseLBA.
func (p *parser) mbrPartition(number int, kind Kind, baseLBA int64, e mbrEntry) Partition {
	return Partition{
		Number:   number,
		Kind:     kind,
		Start:    (baseLBA + int64(e.startLBA)) * p.sectorSize,
		Size:     int64(e.sectors) * p.sectorSize,
		Type:     fmt.Sprintf("%02x", e.typ),
		Bootable: e.bootIndicator == 0x80,
	}
}

// parseDOS reads an MBR that has the boot signature and no 0xEE entry.
func (p *parser) parseDOS(mbr []byte, entries [4]mbrEntry) error {
	// Linux's sanity check: a boot sector that is not an MBR (a FAT or NTFS
	// boot record also ends in 55 AA) almost never has clean boot flags.
	for i, e := range entries {
		if e.bootIndicator != 0 && e.bootIndicator != 0x80 {
			p.warn("MBR entry %d has boot indicator 0x%02x, neither 0x00 nor 0x80: not a partition table", i+1, e.bootIndicator)
			return nil
		}
	}
	p.t.Scheme = DOS
	p.t.DiskID = fmt.Sprintf("0x%08x", le.Uint32(mbr[440:444]))
	var extended []mbrEntry
	for i, e := range entries {
		if !e.used() {
			continue
		}
		kind := Primary
		if isExtendedType(e.typ) {
			kind = Extended
			extended = append(extended, e)
		}
		p.add(p.mbrPartition(i+1, kind, 0, e))
	}
	chain := ebrChain{visited: make(map[int64]bool), nextNumber: 5}
	for _, e := range extended {
		if err := p.followEBRs(&chain, int64(e.startLBA)); err != nil {
			return err
		}
	}
	return nil
}

// ebrChain is the state shared by the chains of all extended partitions:
// logical numbers continue across them, and no EBR is read twice.
type ebrChain struct {
	visited    map[int64]bool // EBR LBAs read
	nextNumber int
}

// followEBRs walks the EBR chain of the extended partition at extStartLBA.
// Each EBR's data entry counts from the EBR's own LBA, its link entry from
// extStartLBA.
func (p *parser) followEBRs(chain *ebrChain, extStartLBA int64) error {
	ebrLBA := extStartLBA
	for {
		if chain.visited[ebrLBA] {
			p.warn("EBR chain loops back to LBA %d: chain ends", ebrLBA)
			return nil
		}
		if len(chain.visited) >= MaxEBRs {
			p.warn("more than %d EBRs: chain ends at LBA %d", MaxEBRs, ebrLBA)
			return nil
		}
		chain.visited[ebrLBA] = true
		if ebrLBA >= p.sectors {
			p.warn("EBR at LBA %d is past the end of the disk: chain ends", ebrLBA)
			return nil
		}
		ebr, err := p.read(ebrLBA*p.sectorSize, mbrSize)
		if err != nil {
			return fmt.Errorf("partition: EBR at LBA %d: %w", ebrLBA, err)
		}
		if !hasBootSignature(ebr) {
			p.warn("EBR at LBA %d has no 55 AA signature: chain ends", ebrLBA)
			return nil
		}
		var data, link *mbrEntry
		entries := parseMBREntries(ebr)
		for i := range entries {
			e := &entries[i]
			switch {
			case !e.used():
			case isExtendedType(e.typ) && link == nil:
				link = e
			case !isExtendedType(e.typ) && data == nil:
				data = e
			default:
				p.warn("EBR at LBA %d: entry %d ignored (only one partition and one link per EBR)", ebrLBA, i+1)
			}
		}
		if data != nil {
			p.add(p.mbrPartition(chain.nextNumber, Logical, ebrLBA, *data))
			chain.nextNumber++
		}
		if link == nil {
			return nil
		}
		ebrLBA = extStartLBA + int64(link.startLBA)
	}
}
