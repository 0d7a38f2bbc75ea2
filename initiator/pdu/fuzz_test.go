package pdu

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the golden seeds in testdata/fuzz")

// rawFromBytes splits arbitrary bytes into a Raw the way a header-first
// reader would: 48 bytes of BHS, then at most TotalAHSLength bytes of AHS,
// the rest as data.
func rawFromBytes(b []byte) Raw {
	var raw Raw
	n := copy(raw.BHS[:], b)
	b = b[n:]
	a := min(raw.BHS.TotalAHSLength(), len(b))
	raw.AHS, raw.Data = b[:a], b[a:]
	return raw
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, BHSLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		raw := rawFromBytes(b)
		m, err := Decode(&raw)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) || m != nil {
				t.Fatalf("Decode: %v, %v", m, err)
			}
			return
		}
		if m.Opcode() != raw.BHS.Opcode() {
			t.Fatalf("Decode of %v gave a %v", raw.BHS.Opcode(), m.Opcode())
		}
		// Whatever decodes re-encodes to the same message, except for the
		// flag combinations Encode refuses.
		var again Raw
		if err := m.Encode(&again); err != nil {
			return
		}
		m2 := NewMessage(m.Opcode())
		if err := m2.Decode(&again); err != nil {
			t.Fatalf("re-decode of %+v: %v", m, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip\n got %+v\nwant %+v", m2, m)
		}
		var wire bytes.Buffer
		if err := NewWriter(&wire).Write(&again); err != nil {
			t.Fatal(err)
		}
		r := NewReader(&wire)
		r.SetMaxDataSegmentLength(MaxDataSegmentLength)
		var back Raw
		if err := r.Read(&back); err != nil {
			t.Fatal(err)
		}
		if back.BHS != again.BHS || !bytes.Equal(back.AHS, again.AHS) || !bytes.Equal(back.Data, again.Data) {
			t.Fatal("Writer/Reader round trip changed the PDU")
		}
	})
}

func FuzzRead(f *testing.F) {
	f.Add([]byte{}, false, false)
	f.Add(make([]byte, BHSLen), true, true)
	f.Fuzz(func(t *testing.T, b []byte, headerDigest, dataDigest bool) {
		r := NewReader(bytes.NewReader(b))
		r.SetDigests(headerDigest, dataDigest)
		var raw Raw
		for {
			err := r.Read(&raw)
			var de *DigestError
			var le *LengthError
			switch {
			case err == nil:
				if len(raw.AHS) != raw.BHS.TotalAHSLength() || len(raw.Data) != raw.BHS.DataSegmentLength() {
					t.Fatalf("Read gave %d AHS and %d data bytes for %x", len(raw.AHS), len(raw.Data), raw.BHS[:4])
				}
				rewrite(t, &raw, headerDigest, dataDigest)
				continue
			case errors.As(err, &de) && !de.Header:
				continue // the data segment was consumed: go on
			case err == io.EOF, err == io.ErrUnexpectedEOF, errors.As(err, &de), errors.As(err, &le):
				if err2 := r.Read(&raw); err2 != err {
					t.Fatalf("error %v is not sticky: then %v", err, err2)
				}
				return
			default:
				t.Fatalf("unexpected error %T %v", err, err)
			}
		}
	})
}

// rewrite writes raw with a Writer and checks that it reads back unchanged.
func rewrite(t *testing.T, raw *Raw, headerDigest, dataDigest bool) {
	var wire bytes.Buffer
	w := NewWriter(&wire)
	w.SetDigests(headerDigest, dataDigest)
	if err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&wire)
	r.SetDigests(headerDigest, dataDigest)
	var back Raw
	if err := r.Read(&back); err != nil {
		t.Fatal(err)
	}
	if back.BHS != raw.BHS || !bytes.Equal(back.AHS, raw.AHS) || !bytes.Equal(back.Data, raw.Data) {
		t.Fatal("Writer/Reader round trip changed the PDU")
	}
}

func FuzzParseAHS(f *testing.F) {
	f.Add([]byte{0, 1, 1, 0})
	f.Add([]byte{0, 5, 2, 0, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		list, err := ParseAHS(b)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) || list != nil {
				t.Fatalf("ParseAHS: %v, %v", list, err)
			}
			return
		}
		var enc []byte
		for _, a := range list {
			if enc, err = AppendAHS(enc, a); err != nil {
				t.Fatal(err)
			}
		}
		if len(enc) != len(b) {
			t.Fatalf("re-encoded %d bytes as %d", len(b), len(enc))
		}
		again, err := ParseAHS(enc)
		if err != nil || !reflect.DeepEqual(again, list) {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, list)
		}
	})
}

func FuzzParseText(f *testing.F) {
	f.Add([]byte("a=b\x00c=\x00"))
	f.Add([]byte("=\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kvs, err := ParseText(b)
		if err != nil {
			var te *TextError
			if !errors.As(err, &te) || te.Offset < 0 || te.Offset >= len(b) {
				t.Fatalf("ParseText: %v", err)
			}
			return
		}
		for _, kv := range kvs {
			if kv.Key == "" || len(kv.Key) > maxKeyLen || strings.ContainsAny(kv.Key, "=\x00") ||
				strings.ContainsRune(kv.Value, 0) || len(kv.Value) > maxValueLen {
				t.Fatalf("bad pair %q", kv)
			}
		}
		again, err := ParseText(EncodeText(nil, kvs))
		if err != nil || !reflect.DeepEqual(again, kvs) {
			t.Fatalf("round trip: %q, %v; want %q", again, err, kvs)
		}
	})
}

func FuzzSenseData(f *testing.F) {
	f.Add([]byte{0, 1, 0x70})
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m := SCSIResponse{Data: b}
		sense, err := m.SenseData()
		switch {
		case err != nil:
			if sense != nil || len(b) >= 2 && 2+int(b[0])<<8+int(b[1]) <= len(b) {
				t.Fatalf("SenseData of %x: %x, %v", b, sense, err)
			}
		case len(b) < 2:
			if sense != nil || len(b) != 0 {
				t.Fatalf("SenseData of %x: %x", b, sense)
			}
		default:
			n := int(b[0])<<8 | int(b[1])
			if len(sense) != n || !bytes.Equal(sense, b[2:2+n]) {
				t.Fatalf("SenseData of %x: %x", b, sense)
			}
		}
	})
}

func FuzzRejectedHeader(f *testing.F) {
	f.Add(make([]byte, BHSLen-1))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := Reject{Data: b}
		h, err := m.RejectedHeader()
		if (err == nil) != (len(b) >= BHSLen) {
			t.Fatalf("%d bytes: %v", len(b), err)
		}
		if err == nil && !bytes.Equal(h[:], b[:BHSLen]) {
			t.Fatalf("header %x from %x", h[:], b)
		}
	})
}

// goldenSeeds derives the seed corpus files (fuzzer -> file name -> content)
// from the golden PDUs.
func goldenSeeds(t *testing.T) map[string]map[string]string {
	seeds := map[string]map[string]string{}
	add := func(fuzzer, name string, args ...any) {
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, a := range args {
			switch v := a.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			case bool:
				fmt.Fprintf(&b, "bool(%v)\n", v)
			}
		}
		if seeds[fuzzer] == nil {
			seeds[fuzzer] = map[string]string{}
		}
		seeds[fuzzer][name] = b.String()
	}
	var all []byte
	var allMsgs []Message
	for _, c := range goldenCases(t) {
		golden := readGolden(t, c.name)
		all = append(all, golden...)
		allMsgs = append(allMsgs, c.msg)
		add("FuzzDecode", "golden_"+c.name, golden)
		add("FuzzRead", "golden_"+c.name, golden, false, false)
		add("FuzzRead", "golden_"+c.name+"_digests", encodeAll(t, true, true, c.msg), true, true)
		_, ahs, data := goldenParts(t, golden)
		if len(ahs) > 0 {
			add("FuzzParseAHS", "golden_"+c.name, ahs)
		}
		switch c.msg.Opcode() {
		case OpLoginReq, OpLoginResp, OpTextReq, OpTextResp:
			add("FuzzParseText", "golden_"+c.name, data)
		case OpSCSIResponse:
			add("FuzzSenseData", "golden_"+c.name, data)
		case OpReject:
			add("FuzzRejectedHeader", "golden_"+c.name, data)
		}
	}
	add("FuzzRead", "golden_all", all, false, false)
	add("FuzzRead", "golden_all_header_digest", encodeAll(t, true, false, allMsgs...), true, false)
	add("FuzzRead", "golden_all_data_digest", encodeAll(t, false, true, allMsgs...), false, true)
	return seeds
}

// TestFuzzSeedCorpus checks that testdata/fuzz holds a seed for every golden
// PDU; run with -update-corpus to rewrite them.
func TestFuzzSeedCorpus(t *testing.T) {
	for fuzzer, files := range goldenSeeds(t) {
		dir := filepath.Join("testdata", "fuzz", fuzzer)
		for name, content := range files {
			path := filepath.Join(dir, name)
			if *updateCorpus {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != content {
				t.Errorf("seed %s is missing or stale (go test -run TestFuzzSeedCorpus -update-corpus): %v", path, err)
			}
		}
	}
}
