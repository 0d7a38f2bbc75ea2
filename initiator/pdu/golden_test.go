package pdu

import (
	"bytes"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// parseHex decodes the golden file format: hex byte pairs separated by
// white space, with # comments to the end of the line.
func parseHex(t testing.TB, text string) []byte {
	t.Helper()
	var digits strings.Builder
	for line := range strings.Lines(text) {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		for _, f := range strings.Fields(line) {
			digits.WriteString(f)
		}
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("bad hex: %v", err)
	}
	return b
}

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	text, err := os.ReadFile(filepath.Join("testdata", "golden", name+".hex"))
	if err != nil {
		t.Fatal(err)
	}
	return parseHex(t, string(text))
}

func lun(n byte) [8]byte { return [8]byte{0, n} }

var isid = [6]byte{0x80, 0x12, 0x34, 0x56, 0, 0}

type goldenCase struct {
	name string
	msg  Message
	want Message // the decoded form when it differs from msg
}

func goldenCases(t testing.TB) []goldenCase {
	read10 := []byte{0x28, 0, 0, 0, 0x12, 0x34, 0, 0, 8, 0}
	read10Field := append(append([]byte{}, read10...), make([]byte, 6)...)
	write10 := []byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0}
	write10Field := append(append([]byte{}, write10...), make([]byte, 6)...)
	return []goldenCase{
		{name: "scsi_command_read10",
			msg: &SCSICommand{Final: true, Read: true, Attr: AttrSimple, LUN: lun(1), ITT: 0x10,
				ExpectedDataTransferLength: 4096, CmdSN: 5, ExpStatSN: 7, CDB: read10},
			want: &SCSICommand{Final: true, Read: true, Attr: AttrSimple, LUN: lun(1), ITT: 0x10,
				ExpectedDataTransferLength: 4096, CmdSN: 5, ExpStatSN: 7, CDB: read10Field}},
		{name: "scsi_command_write_imm",
			msg: &SCSICommand{Write: true, Attr: AttrSimple, ITT: 0x11, ExpectedDataTransferLength: 512,
				CmdSN: 10, ExpStatSN: 11, CDB: write10, Data: []byte{0xde, 0xad, 0xbe, 0xef, 1, 2}},
			want: &SCSICommand{Write: true, Attr: AttrSimple, ITT: 0x11, ExpectedDataTransferLength: 512,
				CmdSN: 10, ExpStatSN: 11, CDB: write10Field, Data: []byte{0xde, 0xad, 0xbe, 0xef, 1, 2}}},
		{name: "scsi_command_ext_cdb",
			msg: &SCSICommand{Immediate: true, Final: true, Read: true, Attr: AttrSimple, ITT: 0x12,
				ExpectedDataTransferLength: 512, CmdSN: 0x20, ExpStatSN: 0x21,
				CDB: []byte{0x7f, 0, 0, 0, 0, 0, 0, 0x0a, 0, 9, 0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xb0, 0xb1}}},
		{name: "scsi_response_sense",
			msg: &SCSIResponse{Underflow: true, Status: 0x02, ITT: 0x10, StatSN: 7, ExpCmdSN: 6, MaxCmdSN: 0x25,
				ResidualCount: 512, Data: []byte{0, 18, 0x70, 0, 5, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0}}},
		{name: "scsi_response_flags",
			msg: &SCSIResponse{BidiOverflow: true, Overflow: true, Response: RespTargetFailure, ITT: 0xabcdef01,
				SNACKTag: 0x01020304, StatSN: 0x100, ExpCmdSN: 0x200, MaxCmdSN: 0x300, ExpDataSN: 3,
				BidiReadResidualCount: 0x11, ResidualCount: 0x22}},
		{name: "data_in_status",
			msg: &DataIn{Final: true, Underflow: true, StatusPresent: true, LUN: lun(1), ITT: 0x10, TTT: ReservedTag,
				StatSN: 7, ExpCmdSN: 6, MaxCmdSN: 0x25, DataSN: 2, BufferOffset: 0x2000, ResidualCount: 0x10,
				Data: []byte("hello")}},
		{name: "data_in_ack",
			msg: &DataIn{Acknowledge: true, LUN: lun(2), ITT: 0x20, TTT: 0x42, ExpCmdSN: 8, MaxCmdSN: 9,
				Data: []byte{1, 2, 3, 4}}},
		{name: "data_out",
			msg: &DataOut{Final: true, LUN: lun(1), ITT: 0x11, TTT: 0x99, ExpStatSN: 12, DataSN: 1,
				BufferOffset: 0x10000, Data: []byte{0xaa, 0xbb, 0xcc}}},
		{name: "r2t",
			msg: &R2T{LUN: lun(1), ITT: 0x11, TTT: 0x99, StatSN: 12, ExpCmdSN: 11, MaxCmdSN: 42, R2TSN: 1,
				BufferOffset: 0x10000, DesiredDataTransferLength: 0x40000}},
		{name: "nop_out",
			msg: &NOPOut{Immediate: true, ITT: 0x30, TTT: ReservedTag, CmdSN: 0x40, ExpStatSN: 0x41,
				Data: []byte("ping")}},
		{name: "nop_in",
			msg: &NOPIn{ITT: ReservedTag, TTT: 3, StatSN: 0x41, ExpCmdSN: 0x40, MaxCmdSN: 0x50}},
		{name: "login_req",
			msg: &LoginReq{Transit: true, CSG: StageOperationalNegotiation, NSG: StageFullFeaturePhase, ISID: isid,
				CID: 1, CmdSN: 1, Data: []byte("HeaderDigest=None\x00")}},
		{name: "login_req_continue",
			msg: &LoginReq{Continue: true, VersionMax: 2, VersionMin: 1, ISID: [6]byte{0, 2, 0x3d, 0, 0, 1},
				TSIH: 5, ITT: 0x01020304, CID: 0x0203, CmdSN: 0x10, ExpStatSN: 0x20, Data: []byte("a=b\x00")}},
		{name: "login_resp",
			msg: &LoginResp{Transit: true, CSG: StageOperationalNegotiation, NSG: StageFullFeaturePhase, ISID: isid,
				TSIH: 1, StatSN: 1, ExpCmdSN: 1, MaxCmdSN: 2, Data: []byte("TargetPortalGroupTag=1\x00")}},
		{name: "login_resp_error",
			msg: &LoginResp{VersionMax: 3, VersionActive: 1, ISID: [6]byte{0x80, 0x12, 0x34, 0x56, 0xab, 0xcd},
				ITT: 7, StatSN: 13, ExpCmdSN: 14, MaxCmdSN: 15, StatusClass: LoginStatusInitiatorError, StatusDetail: 1}},
		{name: "text_req",
			msg: &TextReq{Final: true, ITT: 5, TTT: ReservedTag, CmdSN: 2, ExpStatSN: 3,
				Data: []byte("SendTargets=All\x00")}},
		{name: "text_resp",
			msg: &TextResp{Continue: true, ITT: 5, TTT: 1, StatSN: 3, ExpCmdSN: 4, MaxCmdSN: 5,
				Data: []byte("TargetAddress=127.0.0.1:3260,1\x00")}},
		{name: "logout_req",
			msg: &LogoutReq{Immediate: true, Reason: LogoutCloseConnection, ITT: 0x40, CID: 1, CmdSN: 0x50, ExpStatSN: 0x60}},
		{name: "logout_resp",
			msg: &LogoutResp{ITT: 0x40, StatSN: 0x60, ExpCmdSN: 0x51, MaxCmdSN: 0x70, Time2Wait: 2, Time2Retain: 20}},
		{name: "tmf_req",
			msg: &TaskMgmtReq{Immediate: true, Function: TMFAbortTask, LUN: lun(1), ITT: 0x70, ReferencedTaskTag: 0x10,
				CmdSN: 0x80, ExpStatSN: 0x81, RefCmdSN: 5, ExpDataSN: 2}},
		{name: "tmf_resp",
			msg: &TaskMgmtResp{Response: TMFRespNoTask, ITT: 0x70, StatSN: 0x81, ExpCmdSN: 0x80, MaxCmdSN: 0x90}},
		{name: "async_msg",
			msg: &AsyncMsg{LUN: lun(1), StatSN: 0x90, ExpCmdSN: 0x91, MaxCmdSN: 0x92, AsyncEvent: AsyncEventConnectionDrop,
				AsyncVCode: 7, Parameter1: 1, Parameter2: 2, Parameter3: 20}},
		{name: "reject",
			msg: &Reject{Reason: RejectInvalidPDUField, StatSN: 0x93, ExpCmdSN: 0x94, MaxCmdSN: 0x95, DataSN: 6,
				Data: readGolden(t, "nop_out")[:BHSLen]}},
		{name: "snack_req",
			msg: &SNACKReq{Type: SNACKRData, LUN: lun(1), ITT: 0x10, TTT: 7, ExpStatSN: 0x99, BegRun: 3, RunLength: 2}},
	}
}

// TestGoldenFilesCovered makes sure every golden file has a case and every
// opcode has a golden file.
func TestGoldenFilesCovered(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "golden", "*.hex"))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]bool{}
	ops := map[Opcode]bool{}
	for _, c := range goldenCases(t) {
		cases[c.name] = true
		ops[c.msg.Opcode()] = true
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".hex")
		if !cases[name] {
			t.Errorf("golden file %s has no test case", f)
		}
		delete(cases, name)
	}
	for name := range cases {
		t.Errorf("test case %s has no golden file", name)
	}
	for op := range 64 {
		if NewMessage(Opcode(op)) != nil && !ops[Opcode(op)] {
			t.Errorf("no golden PDU for %v", Opcode(op))
		}
	}
}

// goldenParts splits a golden PDU (no digests) into header, AHS and data.
func goldenParts(t testing.TB, wire []byte) (bhs, ahs, data []byte) {
	t.Helper()
	var h BHS
	copy(h[:], wire)
	a := BHSLen + h.TotalAHSLength()
	d := a + h.DataSegmentLength()
	if len(wire) != d+padLen(h.DataSegmentLength()) {
		t.Fatalf("golden PDU is %d bytes, header says %d", len(wire), d+padLen(h.DataSegmentLength()))
	}
	return wire[:BHSLen], wire[BHSLen:a], wire[a:d]
}

func TestGoldenEncode(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			golden := readGolden(t, c.name)
			bhs, ahs, data := goldenParts(t, golden)
			var raw Raw
			if err := c.msg.Encode(&raw); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(raw.BHS[:], bhs) {
				t.Errorf("BHS\n got %x\nwant %x", raw.BHS[:], bhs)
			}
			if !bytes.Equal(raw.AHS, ahs) {
				t.Errorf("AHS\n got %x\nwant %x", raw.AHS, ahs)
			}
			if !bytes.Equal(raw.Data, data) {
				t.Errorf("data\n got %x\nwant %x", raw.Data, data)
			}
			var out bytes.Buffer
			if err := NewWriter(&out).WriteMessage(c.msg); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), golden) {
				t.Errorf("wire\n got %x\nwant %x", out.Bytes(), golden)
			}
		})
	}
}

func TestGoldenDecode(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			want := c.want
			if want == nil {
				want = c.msg
			}
			golden := readGolden(t, c.name)
			r := NewReader(bytes.NewReader(golden))
			var raw Raw
			if err := r.Read(&raw); err != nil {
				t.Fatal(err)
			}
			got, err := Decode(&raw)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Decode\n got %+v\nwant %+v", got, want)
			}
			if _, err := r.ReadHeader(new(BHS)); err != io.EOF {
				t.Errorf("after the golden PDU: %v, want io.EOF", err)
			}

			// The session decodes the header before it reads the data.
			var hdr Raw
			ahs, err := NewReader(bytes.NewReader(golden)).ReadHeader(&hdr.BHS)
			if err != nil {
				t.Fatal(err)
			}
			hdr.AHS = ahs
			m := NewMessage(hdr.BHS.Opcode())
			if err := m.Decode(&hdr); err != nil {
				t.Fatalf("header-only decode: %v", err)
			}
			if !reflect.DeepEqual(withoutData(m), withoutData(want)) {
				t.Errorf("header-only decode\n got %+v\nwant %+v", m, want)
			}
		})
	}
}

// withoutData returns a copy of m with its Data field (if any) cleared.
func withoutData(m Message) Message {
	v := reflect.New(reflect.TypeOf(m).Elem())
	v.Elem().Set(reflect.ValueOf(m).Elem())
	if f := v.Elem().FieldByName("Data"); f.IsValid() {
		f.SetZero()
	}
	return v.Interface().(Message)
}

// TestGoldenDigests writes every golden PDU with digests and compares with
// the golden bytes plus CRC32C digests placed by hand, then reads it back.
func TestGoldenDigests(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			golden := readGolden(t, c.name)
			bhs, ahs, data := goldenParts(t, golden)
			header := golden[:len(bhs)+len(ahs)]
			dataPad := golden[len(header):]
			var want []byte
			want = append(want, header...)
			want = le32(want, CRC32C(header))
			if len(data) > 0 {
				want = append(want, dataPad...)
				want = le32(want, CRC32C(dataPad))
			}
			var out bytes.Buffer
			w := NewWriter(&out)
			w.SetDigests(true, true)
			if err := w.WriteMessage(c.msg); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("wire\n got %x\nwant %x", out.Bytes(), want)
			}
			r := NewReader(&out)
			r.SetDigests(true, true)
			var raw Raw
			if err := r.Read(&raw); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(raw.BHS[:], bhs) || !bytes.Equal(raw.AHS, ahs) || !bytes.Equal(raw.Data, data) {
				t.Errorf("read back %x %x %x", raw.BHS[:], raw.AHS, raw.Data)
			}
		})
	}
}

func le32(b []byte, v uint32) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}
