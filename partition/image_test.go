package partition

import (
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"strings"
	"testing"
	"unicode/utf16"
)

// Builders of small synthetic disk images for the tests that sfdisk cannot
// make (broken chains, partitions past the end) and for the fuzz seeds.

const (
	linuxFSType = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	espType     = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
)

// putMBREntry writes MBR/EBR entry slot (0-3) of the 512-byte record at
// sector and its 55 AA signature.
func putMBREntry(sector []byte, slot int, boot, typ byte, startLBA, sectors uint32) {
	e := sector[446+16*slot:]
	e[0], e[4] = boot, typ
	binary.LittleEndian.PutUint32(e[8:], startLBA)
	binary.LittleEndian.PutUint32(e[12:], sectors)
	sector[510], sector[511] = 0x55, 0xaa
}

// mbrRecord is entry slot of the MBR (lba 0) or of the EBR at lba.
type mbrRecord struct {
	lba, slot      int
	boot, typ      byte
	start, sectors uint32
}

// mbrImage is a disk of sectors sectors of sectorSize bytes holding records.
func mbrImage(sectors, sectorSize int, records ...mbrRecord) []byte {
	img := make([]byte, sectors*sectorSize)
	for _, r := range records {
		putMBREntry(img[r.lba*sectorSize:], r.slot, r.boot, r.typ, r.start, r.sectors)
	}
	return img
}

// guidBytes encodes canonical GUID text in the mixed-endian disk layout.
func guidBytes(t testing.TB, s string) []byte {
	raw, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(raw) != 16 {
		t.Fatalf("bad GUID %q", s)
	}
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b[0:], binary.BigEndian.Uint32(raw[0:]))
	binary.LittleEndian.PutUint16(b[4:], binary.BigEndian.Uint16(raw[4:]))
	binary.LittleEndian.PutUint16(b[6:], binary.BigEndian.Uint16(raw[6:]))
	copy(b[8:], raw[8:])
	return b
}

type testGPTPart struct {
	typ, uuid   string
	first, last uint64
	name        string
}

// gptLayout places a GPT on a disk of sectors LBAs: PMBR, header at 1,
// entries at 2 (one sector of them), usable LBAs 3..sectors-3, backup
// entries at sectors-2 and backup header at sectors-1.
type gptLayout struct {
	sectorSize int
	sectors    uint64
}

func (l gptLayout) lastLBA() uint64       { return l.sectors - 1 }
func (l gptLayout) numEntries() int       { return l.sectorSize / 128 }
func (l gptLayout) offset(lba uint64) int { return int(lba) * l.sectorSize }

// buildGPT returns a disk image with a protective MBR and matching primary
// and backup GPTs holding parts in the first entries.
func buildGPT(t testing.TB, l gptLayout, parts []testGPTPart) []byte {
	img := make([]byte, l.offset(l.sectors))
	putMBREntry(img, 0, 0, typeGPTProtective, 1, uint32(l.lastLBA()))
	array := make([]byte, l.numEntries()*128)
	for i, p := range parts {
		e := array[i*128:]
		copy(e[0:], guidBytes(t, p.typ))
		copy(e[16:], guidBytes(t, p.uuid))
		binary.LittleEndian.PutUint64(e[32:], p.first)
		binary.LittleEndian.PutUint64(e[40:], p.last)
		for j, u := range utf16.Encode([]rune(p.name)) {
			binary.LittleEndian.PutUint16(e[56+2*j:], u)
		}
	}
	diskGUID := guidBytes(t, "11223344-5566-7788-99AA-BBCCDDEEFF00")
	putGPTHeader(img, l, 1, l.lastLBA(), 2, diskGUID, array)
	putGPTHeader(img, l, l.lastLBA(), 1, l.lastLBA()-1, diskGUID, array)
	return img
}

func putGPTHeader(img []byte, l gptLayout, lba, alternateLBA, entriesLBA uint64, diskGUID, array []byte) {
	copy(img[l.offset(entriesLBA):], array)
	h := img[l.offset(lba):][:gptMinHeaderSize]
	copy(h, gptSignature)
	le.PutUint32(h[8:], 0x00010000)
	le.PutUint32(h[12:], gptMinHeaderSize)
	le.PutUint64(h[24:], lba)
	le.PutUint64(h[32:], alternateLBA)
	le.PutUint64(h[40:], 3)
	le.PutUint64(h[48:], l.sectors-3)
	copy(h[56:], diskGUID)
	le.PutUint64(h[72:], entriesLBA)
	le.PutUint32(h[80:], uint32(len(array)/128))
	le.PutUint32(h[84:], 128)
	le.PutUint32(h[88:], crc32.ChecksumIEEE(array))
	le.PutUint32(h[16:], 0)
	le.PutUint32(h[16:], crc32.ChecksumIEEE(h))
}
