package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sfdiskTable is the part of `sfdisk --json` the tests compare with.
type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		SectorSize int64  `json:"sectorsize"`
		Partitions []struct {
			Node  string `json:"node"`
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

// sfdiskPart is one partition as sfdisk reports it, in bytes.
type sfdiskPart struct {
	Number      int
	Start, Size int64
	Type        string
	Extended    bool
}

// sfdiskJSON runs `sfdisk --json` on path (an image or a block device).
func sfdiskJSON(t testing.TB, path string) (label string, parts []sfdiskPart) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, Tool(t, "sfdisk"), "--json", path)
	cmd.Stderr = &stderr // warnings, e.g. about a damaged primary GPT
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v\n%s", path, err, stderr.String())
	}
	var st sfdiskTable
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("sfdisk --json %s: %v\n%s", path, err, out)
	}
	pt := st.PartitionTable
	for _, p := range pt.Partitions {
		i := len(p.Node) - 1
		for i > 0 && p.Node[i-1] >= '0' && p.Node[i-1] <= '9' {
			i--
		}
		n, err := strconv.Atoi(p.Node[i:])
		if err != nil {
			t.Fatalf("sfdisk node name %q", p.Node)
		}
		ext := pt.Label == "dos" && slices.Contains([]string{"5", "f", "85"}, strings.ToLower(p.Type))
		parts = append(parts, sfdiskPart{Number: n, Start: p.Start * pt.SectorSize, Size: p.Size * pt.SectorSize, Type: p.Type, Extended: ext})
	}
	return pt.Label, parts
}

// runSfdisk writes a partition table with an sfdisk script.
func runSfdisk(t testing.TB, path, script string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, Tool(t, "sfdisk"), "--quiet", "--no-reread", "--no-tell-kernel", path)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk %s: %v\n%s", path, err, out)
	}
}

// lunStatusOf returns the status.json entry of the file at path.
func (m *mountProc) lunStatusOf(t testing.TB, path string) (lun struct {
	Device, Table string
	Parts         map[int][3]string // number -> start, size, device
}) {
	t.Helper()
	lun.Parts = map[int][3]string{}
	for _, tg := range m.status(t).Targets {
		for _, l := range tg.LUNs {
			if l.Path != path {
				continue
			}
			lun.Device, lun.Table = l.Device, l.Table
			for _, p := range l.Parts {
				lun.Parts[p.Number] = [3]string{fmt.Sprint(p.Start), fmt.Sprint(p.Size), p.Device}
			}
			return lun
		}
	}
	t.Fatalf("status.json has no LUN file %s", path)
	return lun
}

// checkPartFiles checks that the part files of lun in the mount are exactly
// sfdisk's partitions of image (extended ones excluded), with the same
// offsets and sizes in status.json and the same sizes on stat.
func checkPartFiles(t testing.TB, m *mountProc, lun, image string) {
	t.Helper()
	label, parts := sfdiskJSON(t, image)
	st := m.lunStatusOf(t, lun)
	if st.Table != label {
		t.Errorf("%s: partition_table %q, sfdisk says %q", lun, st.Table, label)
	}
	want := map[int]sfdiskPart{}
	for _, p := range parts {
		if !p.Extended {
			want[p.Number] = p
		}
	}
	for n, p := range want {
		got, ok := st.Parts[n]
		if !ok {
			t.Errorf("%s: no partition %d in status.json (sfdisk: start %d size %d)", lun, n, p.Start, p.Size)
			continue
		}
		if got[0] != fmt.Sprint(p.Start) || got[1] != fmt.Sprint(p.Size) {
			t.Errorf("%s partition %d: start %s size %s, sfdisk says %d %d", lun, n, got[0], got[1], p.Start, p.Size)
		}
		fi, err := os.Stat(m.path(fmt.Sprintf("%s-part%d", lun, n)))
		if err != nil || fi.Size() != p.Size {
			t.Errorf("%s-part%d: stat %v, size want %d", lun, n, err, p.Size)
		}
	}
	for n := range st.Parts {
		if _, ok := want[n]; !ok {
			t.Errorf("%s: partition %d in status.json that sfdisk does not report", lun, n)
		}
	}
	ents, err := os.ReadDir(m.dir)
	if err != nil {
		t.Fatal(err)
	}
	files := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), lun+"-part") {
			files++
		}
	}
	if files != len(want) {
		t.Errorf("%s: %d part files in the mount, want %d", lun, files, len(want))
	}
}

// TestPartitions: partition tables written by sfdisk through lunN give part
// files with sfdisk's offsets and sizes, writes through a part file land in
// the backing file at the partition's offset and read back through lunN, a
// damaged primary GPT falls back to the backup, and wiping a table removes
// the part files (tgtd, real FUSE).
func TestPartitions(t *testing.T) {
	RequireFUSE(t)
	Tool(t, "sfdisk")
	const iqn = "iqn.2026-12.lab:parts"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{
		{LUN: 1, Size: 64 << 20}, // GPT
		{LUN: 2, Size: 64 << 20}, // MBR with logical partitions
		{LUN: 3, Size: 32 << 20}, // no table
	}})
	m := startMount(t, iscsifsBinary(t), "iscsi://"+tg.Portal+"/"+iqn)
	for _, lun := range []string{"lun1", "lun2", "lun3"} {
		if st := m.lunStatusOf(t, lun); len(st.Parts) != 0 || st.Table != "" {
			t.Fatalf("%s: partitions on a blank LUN: %+v", lun, st)
		}
	}

	runSfdisk(t, m.path("lun1"), "label: gpt\nsize=8MiB, name=alpha\nsize=16MiB, name=beta\nname=gamma\n")
	checkPartFiles(t, m, "lun1", tg.BackingFile(iqn, 1))
	runSfdisk(t, m.path("lun2"), "label: dos\nsize=8MiB, type=83\ntype=5\nsize=8MiB, type=83\ntype=83\n")
	checkPartFiles(t, m, "lun2", tg.BackingFile(iqn, 2))
	if st := m.lunStatusOf(t, "lun2"); len(st.Parts) != 3 || st.Parts[5] == [3]string{} || st.Parts[6] == [3]string{} {
		t.Errorf("lun2: want partitions 1, 5 and 6, got %v", st.Parts)
	}
	mntRunTool(t, time.Minute, "mkfs.ext4", "-F", "-q", m.path("lun3"))
	if st := m.lunStatusOf(t, "lun3"); len(st.Parts) != 0 {
		t.Errorf("lun3 holds a file system on the whole disk, yet has partitions %v", st.Parts)
	}

	t.Run("write-through-part", func(t *testing.T) {
		checkPartWrite(t, m, tg.BackingFile(iqn, 1), "lun1", 2)
		checkPartWrite(t, m, tg.BackingFile(iqn, 2), "lun2", 5)
		checkPartWrite(t, m, tg.BackingFile(iqn, 2), "lun2", 6)
	})

	t.Run("damaged-primary-gpt", func(t *testing.T) {
		before := m.lunStatusOf(t, "lun1").Parts
		f, err := os.OpenFile(m.path("lun1"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, 512), 512); err != nil { // LBA 1: the primary header
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		after := m.lunStatusOf(t, "lun1").Parts
		if len(after) != 3 || fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("after damaging the primary GPT: %v, want the same partitions as before: %v", after, before)
		}
		if !strings.Contains(m.output(), "backup GPT") {
			t.Errorf("no log line about using the backup GPT")
		}
		// sfdisk agrees (it falls back to the backup as well).
		checkPartFiles(t, m, "lun1", tg.BackingFile(iqn, 1))
	})

	t.Run("wiped-table", func(t *testing.T) {
		f, err := os.OpenFile(m.path("lun2"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(make([]byte, 1<<20), 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if st := m.lunStatusOf(t, "lun2"); len(st.Parts) != 0 {
			t.Errorf("after wiping the MBR: partitions %v", st.Parts)
		}
		if _, err := os.Stat(m.path("lun2-part5")); !os.IsNotExist(err) {
			t.Errorf("lun2-part5 after wiping the MBR: %v", err)
		}
	})
	m.term(t)

	// A portal mount shows the same partitions under the target's directory.
	pm := startMount(t, iscsifsBinary(t), tg.PortalURL())
	_, parts := sfdiskJSON(t, tg.BackingFile(iqn, 1))
	for _, p := range parts {
		fi, err := os.Stat(pm.path(fmt.Sprintf("%s/lun1-part%d", iqn, p.Number)))
		if err != nil || fi.Size() != p.Size {
			t.Errorf("portal mount: %s/lun1-part%d: %v (want size %d)", iqn, p.Number, err, p.Size)
		}
	}
	if _, err := os.Stat(pm.path(iqn + "/lun2-part1")); !os.IsNotExist(err) {
		t.Errorf("portal mount: lun2-part1 of the wiped table: %v", err)
	}
	pm.term(t)
}

// checkPartWrite writes through part file lun-partN at an unaligned offset
// and checks that the data is in the backing file at the partition's offset
// and reads back through the LUN file.
func checkPartWrite(t testing.TB, m *mountProc, backing, lun string, part int) {
	t.Helper()
	start, _ := strconv.ParseInt(m.lunStatusOf(t, lun).Parts[part][0], 10, 64)
	data := mntRandomBytes(3*4096 + 100)
	const off = 12345
	f, err := os.OpenFile(m.path(fmt.Sprintf("%s-part%d", lun, part)), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	back := make([]byte, len(data))
	bf, err := os.Open(backing)
	if err != nil {
		t.Fatal(err)
	}
	_, err = bf.ReadAt(back, start+off)
	bf.Close()
	if err != nil || !bytes.Equal(back, data) {
		t.Errorf("%s-part%d: the backing file differs at %d+%d (%v)", lun, part, start, off, err)
	}
	if got := mntReadFileAt(t, m.path(lun), len(data), start+off); !bytes.Equal(got, data) {
		t.Errorf("%s-part%d: %s reads back different data at the partition's offset", lun, part, lun)
	}
}

// TestPartitionsFollowCapacity: a partition that reaches past the end of the
// LUN is cut at the end (as Linux does); when the LUN grows (tgtd restarted
// on a longer backing file), the table is read again and the part file
// grows with it.
func TestPartitionsFollowCapacity(t *testing.T) {
	RequireFUSE(t)
	const iqn = "iqn.2026-12.lab:parts-grow"
	const size, grown = 16 << 20, 24 << 20
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: size}}})
	// An MBR by hand: partition 1 of 4 MiB at 1 MiB, partition 2 from 5 MiB
	// to 24 MiB, past the end of the 16 MiB LUN.
	mbr := make([]byte, 512)
	entry := func(slot int, start, count uint32) {
		e := mbr[446+16*slot:]
		e[4] = 0x83
		binary.LittleEndian.PutUint32(e[8:], start)
		binary.LittleEndian.PutUint32(e[12:], count)
	}
	entry(0, 2048, 8192)
	entry(1, 10240, grown/512-10240)
	mbr[510], mbr[511] = 0x55, 0xaa
	backing := tg.BackingFile(iqn, 1)
	f, err := os.OpenFile(backing, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()

	m := startMount(t, iscsifsBinary(t), "iscsi://"+tg.Portal+"/"+iqn)
	part2 := m.path("lun1-part2")
	if fi, err := os.Stat(part2); err != nil || fi.Size() != size-10240*512 {
		t.Fatalf("lun1-part2 on the 16 MiB LUN: %v, want it cut at the end (%d bytes)", err, size-10240*512)
	}
	tg.Kill()
	if err := os.Truncate(backing, grown); err != nil {
		t.Fatal(err)
	}
	tg.Restart()
	// Touch the LUN so that the mount notices the new connection and capacity.
	_, _ = exec.Command("dd", "if="+m.path("lun1"), "of=/dev/null", "bs=4k", "count=1", "skip=100", "iflag=direct").CombinedOutput()
	mntWaitFor(t, 30*time.Second, "lun1-part2 to grow with the LUN", func() bool {
		fi, err := os.Stat(part2)
		return err == nil && fi.Size() == grown-10240*512
	})
	if fi, err := os.Stat(m.path("lun1-part1")); err != nil || fi.Size() != 8192*512 {
		t.Errorf("lun1-part1 after the LUN grew: %v", err)
	}
	m.term(t)
}
