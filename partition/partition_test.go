package partition

import (
	"bytes"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
)

const (
	gptScript = `label: gpt
unit: sectors

size=1MiB, type=` + espType + `, name="EFI system"
size=2MiB, type=` + linuxFSType + `, name="root fs"
type=` + linuxFSType + `, name="data"
`
	// Slot 2 is type 0x0c, which sfdisk prints "c" and we "0c".
	dosScript = `label: dos
label-id: 0x1234abcd
unit: sectors

size=2MiB, type=83, bootable
size=1MiB, type=c
type=5
size=1MiB, type=83
type=82
`
)

// TestReadMatchesUtilLinux partitions images with sfdisk (fdisk -b for 4096
// bytes a sector) and checks Read finds what util-linux lists.
func TestReadMatchesUtilLinux(t *testing.T) {
	tests := []struct {
		name       string
		sectorSize int
		script     string
		// patch edits the image after partitioning, before both read it.
		patch func(t *testing.T, img []byte)
	}{
		{name: "gpt three named partitions", sectorSize: 512, script: strings.Replace(gptScript, `"data"`, `"däta ✓"`, 1)},
		{name: "dos primary extended logicals", sectorSize: 512, script: dosScript},
		{name: "hybrid mbr", sectorSize: 512, script: gptScript, patch: func(t *testing.T, img []byte) {
			// A FAT32 entry over partition 1 next to the 0xEE entry, as
			// gdisk's hybrid MBRs have; the GPT still rules.
			putMBREntry(img, 1, 0x80, 0x0c, 2048, 2048)
		}},
		{name: "gpt 4096-byte sectors", sectorSize: 4096, script: gptScript},
		{name: "dos 4096-byte sectors", sectorSize: 4096, script: dosScript},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := makeImage(t, 16<<20, tc.sectorSize, tc.script)
			img, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.patch != nil {
				tc.patch(t, img)
				if err := os.WriteFile(path, img, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want := listImage(t, path, tc.sectorSize)
			got := mustRead(t, img, tc.sectorSize)
			checkAgainstTool(t, got, want)
			if got.BackupGPT || len(got.Warnings) != 0 {
				t.Errorf("clean table: BackupGPT %v, warnings %q", got.BackupGPT, got.Warnings)
			}
			if got.Scheme == GPT {
				checkGPTDamage(t, img, tc.sectorSize, want)
			}
		})
	}
}

// checkGPTDamage breaks a good GPT image in the ways the backup GPT is for
// and checks the backup gives the same partitions.
func checkGPTDamage(t *testing.T, good []byte, sectorSize int, want toolTable) {
	lastLBA := len(good)/sectorSize - 1
	damages := []struct {
		name       string
		offsets    []int // bytes to invert
		wantBackup bool
	}{
		{name: "primary header", offsets: []int{sectorSize + 60}, wantBackup: true},      // disk GUID: CRC fails
		{name: "primary signature", offsets: []int{sectorSize}, wantBackup: true},        // not "EFI PART"
		{name: "primary entries", offsets: []int{2*sectorSize + 56}, wantBackup: true},   // entry 1's name: array CRC fails
		{name: "backup header only", offsets: []int{lastLBA*sectorSize + 60}},            // the primary is used
		{name: "both headers", offsets: []int{sectorSize + 60, lastLBA*sectorSize + 60}}, // no table
	}
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			img := bytes.Clone(good)
			for _, off := range d.offsets {
				img[off] ^= 0xff
			}
			got := mustRead(t, img, sectorSize)
			if got.BackupGPT != d.wantBackup {
				t.Errorf("BackupGPT %v, want %v (warnings %q)", got.BackupGPT, d.wantBackup, got.Warnings)
			}
			if d.name == "both headers" {
				if got.Scheme != None || len(got.Partitions) != 0 || !hasWarning(got, "no valid GPT") {
					t.Errorf("both headers broken: %+v", got)
				}
				return
			}
			checkAgainstTool(t, got, want)
			if d.wantBackup && !hasWarning(got, "primary GPT") {
				t.Errorf("no warning about the primary GPT: %q", got.Warnings)
			}
		})
	}
}

func mustRead(t *testing.T, img []byte, sectorSize int) *Table {
	t.Helper()
	table, err := Read(bytes.NewReader(img), int64(len(img)), sectorSize)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return table
}

func hasWarning(table *Table, substr string) bool {
	for _, w := range table.Warnings {
		if strings.Contains(w, substr) {
			return true
		}
	}
	return false
}

// span is the part of a Partition the synthetic cases check, in sectors.
type span struct {
	number      int
	kind        Kind
	start, size int64
}

func TestReadSynthetic(t *testing.T) {
	ext4 := make([]byte, 64<<10)
	ext4[1024+56], ext4[1024+57] = 0x53, 0xef // s_magic; no 55 AA at 510

	hugeArray := buildGPT(t, gptLayout{512, 16}, []testGPTPart{{linuxFSType, espType, 3, 4, "x"}})
	le.PutUint32(hugeArray[512+80:], 1<<20) // 1 Mi entries of 128 bytes
	resealHeader(hugeArray[512:])

	eeAtLBA2 := buildGPT(t, gptLayout{512, 16}, []testGPTPart{{linuxFSType, espType, 3, 5, "a"}})
	putMBREntry(eeAtLBA2, 0, 0, typeGPTProtective, 2, 14)

	tests := []struct {
		name        string
		sectorSize  int
		image       []byte
		wantScheme  Scheme
		want        []span
		wantWarning string // "" wants no warnings
	}{
		{name: "zeros", sectorSize: 512, image: make([]byte, 64<<10), wantScheme: None},
		{name: "empty disk", sectorSize: 512, image: nil, wantScheme: None},
		{name: "ext4 superblock", sectorSize: 512, image: ext4, wantScheme: None},
		{
			name: "smaller than a sector", sectorSize: 4096, wantScheme: None,
			image: mbrImage(1, 4000, mbrRecord{0, 0, 0, 0x83, 1, 1}),
		},
		{
			name: "invalid boot indicator", sectorSize: 512, wantScheme: None, wantWarning: "boot indicator 0x01",
			image: mbrImage(64, 512,
				mbrRecord{0, 0, 0x80, 0x83, 8, 8},
				mbrRecord{0, 2, 0x01, 0, 0, 0}), // even an unused entry must be clean
		},
		{
			name: "sector count 0 is unused, type 0 is not", sectorSize: 512, wantScheme: DOS,
			want: []span{{1, Primary, 8, 8}, {4, Primary, 20, 2}},
			image: mbrImage(64, 512,
				mbrRecord{0, 0, 0, 0x83, 8, 8},
				mbrRecord{0, 1, 0, 0x83, 30, 0},
				mbrRecord{0, 3, 0, 0x00, 20, 2}), // Linux and sfdisk both list it
		},
		{
			name: "partitions past the end", sectorSize: 512, wantScheme: DOS, wantWarning: "past the end",
			want: []span{{1, Primary, 10, 10}, {3, Primary, 60, 4}},
			image: mbrImage(64, 512,
				mbrRecord{0, 0, 0, 0x83, 10, 10},
				mbrRecord{0, 1, 0, 0x83, 100, 5},  // dropped, number 2 left unused
				mbrRecord{0, 2, 0, 0x83, 60, 10}), // truncated to 4 sectors
		},
		{
			name: "EBR chain loops", sectorSize: 512, wantScheme: DOS, wantWarning: "loops back to LBA 8",
			want: []span{{1, Extended, 8, 40}, {5, Logical, 9, 4}, {6, Logical, 19, 4}},
			image: mbrImage(64, 512,
				mbrRecord{0, 0, 0, 0x05, 8, 40},
				mbrRecord{8, 0, 0, 0x83, 1, 4},
				mbrRecord{8, 1, 0, 0x05, 10, 6}, // next EBR at 8+10
				mbrRecord{18, 0, 0, 0x83, 1, 4},
				mbrRecord{18, 1, 0, 0x05, 0, 6}), // back to the first
		},
		{
			name: "EBR links to itself", sectorSize: 4096, wantScheme: DOS, wantWarning: "loops back to LBA 8",
			want: []span{{2, Extended, 8, 40}, {5, Logical, 10, 4}},
			image: mbrImage(64, 4096,
				mbrRecord{0, 1, 0, 0x85, 8, 40},
				mbrRecord{8, 0, 0, 0x83, 2, 4},
				mbrRecord{8, 1, 0, 0x0f, 0, 6}),
		},
		{
			name: "EBR past the end and EBR without signature", sectorSize: 512, wantScheme: DOS, wantWarning: "EBR at LBA 70 is past the end",
			want: []span{{1, Extended, 8, 8}, {2, Extended, 20, 4}, {5, Logical, 9, 2}},
			image: mbrImage(64, 512,
				mbrRecord{0, 0, 0, 0x05, 8, 8},
				mbrRecord{8, 0, 0, 0x83, 1, 2},
				mbrRecord{8, 1, 0, 0x05, 62, 2},  // 8+62 = 70 > 63
				mbrRecord{0, 1, 0, 0x0f, 20, 4}), // its EBR at 20 is all zeros
		},
		{
			name: "EBR chain longer than the cap", sectorSize: 512, wantScheme: DOS, wantWarning: "more than 256 EBRs",
			image: longChainImage(300), want: longChainWant(300),
		},
		{name: "0xee entry not at LBA 1", sectorSize: 512, image: eeAtLBA2, wantScheme: None, wantWarning: "not starting at LBA 1"},
		{
			name: "hybrid MBR without a GPT", sectorSize: 512, wantScheme: None, wantWarning: "no valid GPT",
			image: mbrImage(64, 512,
				mbrRecord{0, 0, 0, typeGPTProtective, 1, 10},
				mbrRecord{0, 1, 0, 0x83, 20, 10}),
		},
		{
			name: "gpt 1024-byte sectors", sectorSize: 1024, wantScheme: GPT,
			want: []span{{1, Primary, 3, 3}, {2, Primary, 6, 8}},
			image: buildGPT(t, gptLayout{1024, 32}, []testGPTPart{
				{espType, "A0000000-0000-0000-0000-000000000001", 3, 5, "esp"},
				{linuxFSType, "A0000000-0000-0000-0000-000000000002", 6, 13, "root"},
			}),
		},
		{
			name: "gpt entries out of range skipped", sectorSize: 512, wantScheme: GPT, wantWarning: "outside the usable LBAs",
			want: []span{{1, Primary, 3, 2}},
			image: buildGPT(t, gptLayout{512, 16}, []testGPTPart{
				{linuxFSType, "A0000000-0000-0000-0000-000000000001", 3, 4, "ok"},
				{linuxFSType, "A0000000-0000-0000-0000-000000000002", 8, 6, "first after last"},
				{linuxFSType, "A0000000-0000-0000-0000-000000000003", 2, 4, "over the header"},
				{linuxFSType, "A0000000-0000-0000-0000-000000000004", 10, 14, "over the backup"},
			}),
		},
		{
			name: "gpt entries array over the bound", sectorSize: 512, image: hugeArray,
			wantScheme: GPT, wantWarning: "exceeds 1048576 bytes", want: []span{{1, Primary, 3, 2}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mustRead(t, tc.image, tc.sectorSize)
			if got.Scheme != tc.wantScheme {
				t.Errorf("scheme %q, want %q (warnings %q)", got.Scheme, tc.wantScheme, got.Warnings)
			}
			var spans []span
			ss := int64(tc.sectorSize)
			for _, p := range got.Partitions {
				spans = append(spans, span{p.Number, p.Kind, p.Start / ss, p.Size / ss})
			}
			if !slices.Equal(spans, tc.want) {
				t.Errorf("partitions (sectors) %v, want %v", spans, tc.want)
			}
			if tc.wantWarning == "" && len(got.Warnings) != 0 {
				t.Errorf("warnings %q, want none", got.Warnings)
			}
			if tc.wantWarning != "" && !hasWarning(got, tc.wantWarning) {
				t.Errorf("warnings %q, want one containing %q", got.Warnings, tc.wantWarning)
			}
			if len(got.Warnings) > MaxWarnings+1 {
				t.Errorf("%d warnings, more than %d", len(got.Warnings), MaxWarnings+1)
			}
		})
	}
}

// longChainImage is an extended partition at LBA 1 holding a chain of ebrs
// EBRs, one a sector, each with a one-sector logical partition on itself.
func longChainImage(ebrs int) []byte {
	records := []mbrRecord{{0, 0, 0, 0x05, 1, uint32(ebrs)}}
	for i := range ebrs {
		records = append(records, mbrRecord{1 + i, 0, 0, 0x83, 0, 1}, mbrRecord{1 + i, 1, 0, 0x05, uint32(i + 1), 1})
	}
	return mbrImage(ebrs+2, 512, records...)
}

// longChainWant is what Read finds in longChainImage: the extended
// partition and the logical partitions of the first MaxEBRs EBRs.
func longChainWant(ebrs int) []span {
	want := []span{{1, Extended, 1, int64(ebrs)}}
	for i := range MaxEBRs {
		want = append(want, span{5 + i, Logical, int64(1 + i), 1})
	}
	return want
}

// resealHeader recomputes the CRC32 of an edited GPT header.
func resealHeader(header []byte) {
	le.PutUint32(header[16:], 0)
	le.PutUint32(header[16:], crc32.ChecksumIEEE(header[:gptMinHeaderSize]))
}

func TestReadFieldsOfGPT(t *testing.T) {
	img := buildGPT(t, gptLayout{512, 16}, []testGPTPart{
		{espType, "01234567-89AB-CDEF-0123-456789ABCDEF", 3, 4, "EFI ☃ \U0001F600"},
	})
	got := mustRead(t, img, 512)
	p, ok := got.Find(1)
	want := Partition{Number: 1, Kind: Primary, Start: 3 * 512, Size: 2 * 512, Type: espType,
		UUID: "01234567-89AB-CDEF-0123-456789ABCDEF", Name: "EFI ☃ \U0001F600"}
	if !ok || p != want {
		t.Errorf("Find(1) = %+v, %v; want %+v", p, ok, want)
	}
	if got.DiskID != "11223344-5566-7788-99AA-BBCCDDEEFF00" {
		t.Errorf("DiskID %q", got.DiskID)
	}
	if _, ok := got.Find(2); ok {
		t.Error("Find(2) found an unused entry")
	}
}

// failingReader fails every read at or past failAt.
type failingReader struct {
	data   []byte
	failAt int64
	err    error
}

func (r failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > r.failAt {
		return 0, r.err
	}
	return copy(p, r.data[off:]), nil
}

func TestReadErrors(t *testing.T) {
	img := buildGPT(t, gptLayout{512, 16}, []testGPTPart{{linuxFSType, espType, 3, 4, "x"}})
	img[512+60] ^= 0xff // the backup at the end of the disk must be read
	mediumError := errors.New("medium error")
	tests := []struct {
		name       string
		r          io.ReaderAt
		size       int64
		sectorSize int
		wantErr    error // nil: any error
	}{
		{name: "sector size 0", r: bytes.NewReader(img), size: int64(len(img)), sectorSize: 0},
		{name: "sector size 1000", r: bytes.NewReader(img), size: int64(len(img)), sectorSize: 1000},
		{name: "sector size 256", r: bytes.NewReader(img), size: int64(len(img)), sectorSize: 256},
		{name: "sector size 128 KiB", r: bytes.NewReader(img), size: int64(len(img)), sectorSize: 128 << 10},
		{name: "negative size", r: bytes.NewReader(img), size: -1, sectorSize: 512},
		{name: "MBR read fails", r: failingReader{img, 0, mediumError}, size: int64(len(img)), sectorSize: 512, wantErr: mediumError},
		{name: "backup read fails", r: failingReader{img, 8 * 512, mediumError}, size: int64(len(img)), sectorSize: 512, wantErr: mediumError},
		{name: "disk shorter than its size", r: bytes.NewReader(img[:8*512]), size: int64(len(img)), sectorSize: 512, wantErr: io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			table, err := Read(tc.r, tc.size, tc.sectorSize)
			if err == nil {
				t.Fatalf("no error; table %+v", table)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v does not wrap %v", err, tc.wantErr)
			}
		})
	}
	// A 64 KiB sector is accepted.
	if _, err := Read(bytes.NewReader(img), int64(len(img)), 65536); err != nil {
		t.Errorf("sector size 65536: %v", err)
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{Primary: "primary", Extended: "extended", Logical: "logical", 7: "Kind(7)"} {
		if k.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(k), k.String(), want)
		}
	}
}
