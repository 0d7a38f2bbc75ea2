package partition

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The images compared against util-linux are made and listed by sfdisk for
// 512-byte sectors. sfdisk 2.38 has no --sector-size, so other sector sizes
// use fdisk -b, which takes the same script through its I command and dumps
// the table in sfdisk's format through its O command.

// toolPath finds a util-linux tool, also in the sbin directories a non-root
// PATH may lack. Without it the test is skipped, or fails when CI=true.
func toolPath(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	msg := name + " not found; install the Debian package fdisk (apt-get install -y fdisk)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func runTool(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(toolPath(t, name), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// makeImage writes a sparse image of diskBytes and partitions it with the
// sfdisk script, for a disk of sectorSize-byte sectors.
func makeImage(t *testing.T, diskBytes int64, sectorSize int, script string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, diskBytes); err != nil {
		t.Fatal(err)
	}
	if sectorSize == 512 {
		runTool(t, script, "sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", path)
		return path
	}
	scriptPath := filepath.Join(dir, "layout.sfdisk")
	if err := os.WriteFile(scriptPath, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	out := runTool(t, "I\n"+scriptPath+"\nw\n", "fdisk", "-b", strconv.Itoa(sectorSize), path)
	if !strings.Contains(out, "Script successfully applied") {
		t.Fatalf("fdisk -b %d did not apply the script:\n%s", sectorSize, out)
	}
	return path
}

// toolTable is a partition table as util-linux lists it; start and size
// are in sectors of sectorSize.
type toolTable struct {
	Label      string     `json:"label"`
	ID         string     `json:"id"`
	SectorSize int        `json:"sectorsize"`
	Partitions []toolPart `json:"partitions"`
}

type toolPart struct {
	Node     string `json:"node"`
	Start    int64  `json:"start"`
	Size     int64  `json:"size"`
	Type     string `json:"type"`
	UUID     string `json:"uuid"`
	Name     string `json:"name"`
	Bootable bool   `json:"bootable"`
}

// listImage lists the table of the image at path: sfdisk --json for
// 512-byte sectors, fdisk -b's sfdisk-format dump otherwise.
func listImage(t *testing.T, path string, sectorSize int) toolTable {
	t.Helper()
	if sectorSize == 512 {
		var doc struct {
			Table toolTable `json:"partitiontable"`
		}
		out := runTool(t, "", "sfdisk", "--json", path)
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("sfdisk --json: %v\n%s", err, out)
		}
		return doc.Table
	}
	dump := filepath.Join(t.TempDir(), "dump.sfdisk")
	runTool(t, "O\n"+dump+"\nq\n", "fdisk", "-b", strconv.Itoa(sectorSize), path)
	text, err := os.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	return parseDump(t, string(text))
}

// parseDump reads sfdisk's dump format: "key: value" header lines, then
// "node : start=  N, size=  N, type=X, uuid=U, name="N", bootable". Names
// with commas or escapes are not handled; the tests use none.
func parseDump(t *testing.T, text string) toolTable {
	var tt toolTable
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if node, fields, ok := strings.Cut(line, " : "); ok {
			p := toolPart{Node: strings.TrimSpace(node)}
			for _, f := range strings.Split(fields, ",") {
				key, value, _ := strings.Cut(strings.TrimSpace(f), "=")
				value = strings.TrimSpace(value)
				switch key {
				case "start":
					p.Start = mustInt(t, value)
				case "size":
					p.Size = mustInt(t, value)
				case "type":
					p.Type = value
				case "uuid":
					p.UUID = value
				case "name":
					p.Name = strings.Trim(value, `"`)
				case "bootable":
					p.Bootable = true
				}
			}
			tt.Partitions = append(tt.Partitions, p)
			continue
		}
		key, value, _ := strings.Cut(line, ": ")
		switch key {
		case "label":
			tt.Label = value
		case "label-id":
			tt.ID = value
		case "sector-size":
			tt.SectorSize = int(mustInt(t, value))
		}
	}
	return tt
}

func mustInt(t *testing.T, s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("not a number in the dump: %q", s)
	}
	return n
}

// partNumber is the number at the end of a node name ("disk.img5" -> 5).
func (p toolPart) number(t *testing.T) int {
	digits := len(p.Node)
	for digits > 0 && p.Node[digits-1] >= '0' && p.Node[digits-1] <= '9' {
		digits--
	}
	n, err := strconv.Atoi(p.Node[digits:])
	if err != nil {
		t.Fatalf("no partition number in node %q", p.Node)
	}
	return n
}

// sameType compares our Type with the tool's: GPT GUIDs exactly, MBR type
// bytes as numbers since sfdisk prints "5" where we print "05".
func sameType(ours, tools string) bool {
	if ours == tools {
		return true
	}
	a, errA := strconv.ParseUint(ours, 16, 8)
	b, errB := strconv.ParseUint(tools, 16, 8)
	return errA == nil && errB == nil && a == b
}

// checkAgainstTool compares a parsed table with the tool's listing.
func checkAgainstTool(t *testing.T, got *Table, want toolTable) {
	t.Helper()
	if string(got.Scheme) != want.Label || got.DiskID != want.ID || got.SectorSize != want.SectorSize {
		t.Errorf("table %q id %q sector size %d; util-linux says %q id %q sector size %d",
			got.Scheme, got.DiskID, got.SectorSize, want.Label, want.ID, want.SectorSize)
	}
	if len(got.Partitions) != len(want.Partitions) {
		t.Errorf("%d partitions %+v; util-linux lists %d %+v", len(got.Partitions), got.Partitions, len(want.Partitions), want.Partitions)
	}
	ss := int64(want.SectorSize)
	for _, w := range want.Partitions {
		n := w.number(t)
		p, ok := got.Find(n)
		if !ok {
			t.Errorf("partition %d (%+v) missing", n, w)
			continue
		}
		if got.Scheme == DOS && p.Kind != dosKind(n, p.Type) {
			t.Errorf("partition %d of type %s is %v", n, p.Type, p.Kind)
		}
		if p.Start != w.Start*ss || p.Size != w.Size*ss || !sameType(p.Type, w.Type) ||
			p.UUID != w.UUID || p.Name != w.Name || p.Bootable != w.Bootable {
			t.Errorf("partition %d: got %+v; util-linux lists %+v (sectors of %d bytes)", n, p, w, ss)
		}
	}
}

// dosKind is the Kind an MBR partition numbered n of type typ must have.
func dosKind(n int, typ string) Kind {
	switch {
	case n >= 5:
		return Logical
	case typ == "05" || typ == "0f" || typ == "85":
		return Extended
	}
	return Primary
}
