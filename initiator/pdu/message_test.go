package pdu

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestEncodeRejects(t *testing.T) {
	cdb := []byte{0x00, 0, 0, 0, 0, 0}
	tests := []struct {
		name string
		msg  Message
		want string
	}{
		{"bidirectional", &SCSICommand{Read: true, Write: true, CDB: cdb}, "bidirectional"},
		{"attribute", &SCSICommand{Attr: 8, CDB: cdb}, "task attribute"},
		{"no CDB", &SCSICommand{}, "empty CDB"},
		{"long CDB", &SCSICommand{CDB: make([]byte, MaxCDBLength+1)}, "CDB length"},
		{"data segment", &DataOut{Data: make([]byte, MaxDataSegmentLength+1)}, "2^24-1"},
		{"S without F", &DataIn{StatusPresent: true}, "S bit"},
		{"login CSG", &LoginReq{CSG: 4}, "CSG"},
		{"login NSG", &LoginResp{NSG: 4}, "NSG"},
		{"login T and C", &LoginReq{Transit: true, Continue: true}, "T and C"},
		{"text F and C", &TextReq{Final: true, Continue: true}, "F and C"},
		{"text resp F and C", &TextResp{Final: true, Continue: true}, "F and C"},
		{"logout reason", &LogoutReq{Reason: 0x80}, "reason"},
		{"TMF function", &TaskMgmtReq{Function: 0x80}, "function"},
		{"SNACK type", &SNACKReq{Type: 16}, "SNACK type"},
	}
	for _, tc := range tests {
		var raw Raw
		err := tc.msg.Encode(&raw)
		var pe *ProtocolError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Encode error %v, want a *ProtocolError about %q", tc.name, err, tc.want)
		}
	}
}

func TestDecodeWrongOpcode(t *testing.T) {
	for op := range Opcode(64) {
		m := NewMessage(op)
		if m == nil {
			continue
		}
		if m.Opcode() != op {
			t.Errorf("NewMessage(%v).Opcode() = %v", op, m.Opcode())
		}
		var raw Raw
		raw.BHS.setOpcode(op^0x01, false)
		err := m.Decode(&raw)
		var pe *ProtocolError
		if !errors.As(err, &pe) {
			t.Errorf("%v: Decode of %v gives %v, want *ProtocolError", op, op^0x01, err)
		}
	}
}

func TestDecodeUnknownOpcode(t *testing.T) {
	for _, op := range []Opcode{0x07, 0x1c, 0x27, 0x3c} {
		var raw Raw
		raw.BHS.setOpcode(op, false)
		m, err := Decode(&raw)
		var pe *ProtocolError
		if m != nil || !errors.As(err, &pe) || !strings.Contains(pe.Reason, "opcode 0x") {
			t.Errorf("Decode(%#x) = %v, %v; want a *ProtocolError", byte(op), m, err)
		}
	}
}

// TestDecodeBareWithData checks that PDU types RFC 7143 defines without a
// data segment or AHS refuse a header that announces one.
func TestDecodeBareWithData(t *testing.T) {
	for _, m := range []Message{&R2T{}, &LogoutReq{}, &LogoutResp{}, &TaskMgmtReq{}, &TaskMgmtResp{}, &SNACKReq{}} {
		for _, lengths := range [][2]int{{0, 4}, {4, 0}} {
			var raw Raw
			if err := m.Encode(&raw); err != nil {
				t.Fatal(err)
			}
			raw.BHS.setLengths(lengths[0], lengths[1])
			var pe *ProtocolError
			if err := m.Decode(&raw); !errors.As(err, &pe) {
				t.Errorf("%v with lengths %v: %v, want *ProtocolError", m.Opcode(), lengths, err)
			}
			if got, err := Decode(&raw); got != nil || !errors.As(err, &pe) {
				t.Errorf("Decode of %v with lengths %v: %v, %v", m.Opcode(), lengths, got, err)
			}
		}
	}
}

func TestEncodeResetsRaw(t *testing.T) {
	raw := Raw{AHS: []byte{1, 2, 3, 4}, Data: []byte("stale")}
	for i := range raw.BHS {
		raw.BHS[i] = 0xff
	}
	if err := (&NOPIn{ITT: 1}).Encode(&raw); err != nil {
		t.Fatal(err)
	}
	want := BHS{0: byte(OpNOPIn), 1: 0x80, 19: 1}
	if raw.BHS != want || len(raw.AHS) != 0 || raw.Data != nil {
		t.Errorf("Encode left %x %x %q", raw.BHS[:], raw.AHS, raw.Data)
	}
}

func TestEncodeAliasesData(t *testing.T) {
	data := make([]byte, 100)
	var raw Raw
	if err := (&DataOut{Data: data}).Encode(&raw); err != nil {
		t.Fatal(err)
	}
	if &raw.Data[0] != &data[0] {
		t.Error("Encode copied Data")
	}
	var m DataOut
	if err := m.Decode(&raw); err != nil {
		t.Fatal(err)
	}
	if &m.Data[0] != &data[0] {
		t.Error("Decode copied Data")
	}
}

func TestLoginRequestAlwaysImmediate(t *testing.T) {
	var raw Raw
	if err := (&LoginReq{}).Encode(&raw); err != nil {
		t.Fatal(err)
	}
	if !raw.BHS.Immediate() {
		t.Error("Login Request without the I bit")
	}
}

func TestTargetPDUsReservedITT(t *testing.T) {
	for _, m := range []Message{&AsyncMsg{}, &Reject{}} {
		var raw Raw
		if err := m.Encode(&raw); err != nil {
			t.Fatal(err)
		}
		if raw.BHS.ITT() != ReservedTag {
			t.Errorf("%v: ITT %#x, want 0xffffffff", m.Opcode(), raw.BHS.ITT())
		}
	}
}

func TestSCSICommandExtendedCDB(t *testing.T) {
	for _, n := range []int{16, 17, 18, 19, 20, 21, 32, 260} {
		cdb := make([]byte, n)
		for i := range cdb {
			cdb[i] = byte(i + 1)
		}
		m := &SCSICommand{Read: true, CDB: cdb}
		var raw Raw
		if err := m.Encode(&raw); err != nil {
			t.Fatalf("%d: %v", n, err)
		}
		wantAHS := 0
		if n > 16 {
			wantAHS = (4 + n - 16 + 3) &^ 3
		}
		if len(raw.AHS) != wantAHS || raw.BHS.TotalAHSLength() != wantAHS {
			t.Errorf("%d-byte CDB: AHS %d bytes, TotalAHSLength %d, want %d", n, len(raw.AHS), raw.BHS.TotalAHSLength(), wantAHS)
		}
		var got SCSICommand
		if err := got.Decode(&raw); err != nil {
			t.Fatalf("%d: %v", n, err)
		}
		if !bytes.Equal(got.CDB, cdb) {
			t.Errorf("%d-byte CDB decoded as %x", n, got.CDB)
		}
	}
}

func TestSCSICommandAHSErrors(t *testing.T) {
	ext, _ := AppendAHS(nil, AHS{Type: AHSExtendedCDB, Data: []byte{1, 2}})
	bidi, _ := AppendAHS(nil, AHS{Type: AHSBidiReadLength, Data: []byte{0, 0, 1, 0}})
	tests := []struct {
		name   string
		ahs    []byte
		ok     bool
		cdbLen int
	}{
		{"two extended CDB AHS", append(append([]byte{}, ext...), ext...), false, 0},
		{"empty and full extended CDB AHS", []byte{0, 1, 1, 0, 0, 3, 1, 0, 1, 2, 0, 0}, false, 0},
		{"bad AHS length", []byte{0, 9, 1, 0}, false, 0},
		{"truncated AHS header", []byte{0, 1}, false, 0},
		{"AHS padding missing", []byte{0, 2, 1, 0, 0xaa}, false, 0},
		{"unknown AHS is skipped", append(append([]byte{}, bidi...), ext...), true, 18},
		{"empty extended CDB AHS", []byte{0, 1, 1, 0}, true, 16},
	}
	for _, tc := range tests {
		raw := Raw{AHS: tc.ahs}
		raw.BHS.setOpcode(OpSCSICommand, false)
		raw.BHS.setLengths(len(tc.ahs), 0)
		var m SCSICommand
		err := m.Decode(&raw)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
		if tc.ok && len(m.CDB) != tc.cdbLen {
			t.Errorf("%s: CDB %x", tc.name, m.CDB)
		}
	}
}

func TestSenseData(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want []byte
		err  bool
	}{
		{"no data segment", nil, nil, false},
		{"one byte", []byte{0}, nil, true},
		{"SenseLength 0", []byte{0, 0}, nil, false},
		{"exact", []byte{0, 3, 0x70, 0, 6}, []byte{0x70, 0, 6}, false},
		{"response data follows", []byte{0, 2, 0x72, 6, 9, 9}, []byte{0x72, 6}, false},
		{"SenseLength too long", []byte{0, 4, 0x70, 0, 6}, nil, true},
		{"SenseLength 65535", []byte{0xff, 0xff, 0x70}, nil, true},
	}
	for _, tc := range tests {
		m := SCSIResponse{Data: tc.data}
		got, err := m.SenseData()
		if (err != nil) != tc.err || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: SenseData() = %x, %v", tc.name, got, err)
		}
		var pe *ProtocolError
		if err != nil && !errors.As(err, &pe) {
			t.Errorf("%s: error %T, want *ProtocolError", tc.name, err)
		}
	}
}

func TestSetSenseData(t *testing.T) {
	var m SCSIResponse
	sense := []byte{0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0}
	m.SetSenseData(sense)
	if !bytes.Equal(m.Data[:2], []byte{0, 14}) {
		t.Errorf("SenseLength %x", m.Data[:2])
	}
	got, err := m.SenseData()
	if err != nil || !bytes.Equal(got, sense) {
		t.Errorf("SenseData() = %x, %v", got, err)
	}
	m.SetSenseData(make([]byte, 70000))
	if got, err := m.SenseData(); err != nil || len(got) != 0xffff {
		t.Errorf("long sense: %d bytes, %v", len(got), err)
	}
}

func TestRejectedHeader(t *testing.T) {
	hdr := readGolden(t, "text_req")[:BHSLen]
	m := Reject{Data: append(append([]byte{}, hdr...), 1, 2, 3)}
	h, err := m.RejectedHeader()
	if err != nil {
		t.Fatal(err)
	}
	if h.Opcode() != OpTextReq || h.ITT() != 5 || !bytes.Equal(h[:], hdr) {
		t.Errorf("rejected header %x", h[:])
	}
	hdr[16] = 0xee // the result is a copy
	if h.ITT() != 5 {
		t.Error("RejectedHeader aliases Data")
	}
	for _, n := range []int{0, 1, 47} {
		m := Reject{Data: make([]byte, n)}
		var pe *ProtocolError
		if h, err := m.RejectedHeader(); h != nil || !errors.As(err, &pe) {
			t.Errorf("%d bytes: %v, %v", n, h, err)
		}
	}
}

func TestRejectReasonText(t *testing.T) {
	for reason := RejectDataDigest; reason <= RejectWaitingForLogout; reason++ {
		if s := RejectReasonText(uint8(reason)); strings.HasPrefix(s, "unknown") {
			t.Errorf("reason %#x: %q", reason, s)
		}
	}
	if s := RejectReasonText(RejectWaitingForLogout); s != "waiting for logout" {
		t.Errorf("0x0c: %q", s)
	}
	for _, reason := range []uint8{0, 1, 0x0d, 0xff} {
		if s := RejectReasonText(reason); s != "unknown reject reason 0x"+hexByte(reason) {
			t.Errorf("reason %#x: %q", reason, s)
		}
	}
}

func TestBHSAccessors(t *testing.T) {
	h := BHS(readGolden(t, "data_in_status")[:BHSLen])
	if h.Opcode() != OpDataIn || h.Immediate() || !h.Final() || h.TotalAHSLength() != 0 ||
		h.DataSegmentLength() != 5 || h.ITT() != 0x10 || h.LUN() != lun(1) {
		t.Errorf("accessors of %x", h[:])
	}
	h = BHS(readGolden(t, "scsi_command_ext_cdb")[:BHSLen])
	if !h.Immediate() || h.TotalAHSLength() != 8 {
		t.Errorf("accessors of %x", h[:])
	}
	var z BHS
	z.setLengths(maxAHSLen, MaxDataSegmentLength)
	if z.TotalAHSLength() != maxAHSLen || z.DataSegmentLength() != MaxDataSegmentLength {
		t.Errorf("setLengths: %d %d", z.TotalAHSLength(), z.DataSegmentLength())
	}
}

func TestErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&ProtocolError{Op: "decode Reject", Reason: "bad"}, "iscsi pdu: decode Reject: bad"},
		{&LengthError{Length: 9000, Limit: 8192}, "iscsi pdu: data segment length 9000 exceeds limit 8192"},
		{&DigestError{Header: true, Got: 1, Want: 0xaabbccdd}, "iscsi pdu: header digest mismatch: got 0x00000001, computed 0xaabbccdd"},
		{&DigestError{Got: 2, Want: 3}, "iscsi pdu: data digest mismatch: got 0x00000002, computed 0x00000003"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("%q, want %q", got, tc.want)
		}
	}
}

func TestOpcodeString(t *testing.T) {
	tests := map[Opcode]string{
		OpSCSICommand: "SCSI Command",
		OpDataIn:      "SCSI Data-In",
		OpReject:      "Reject",
		0x1f:          "opcode 0x1f",
		0x3e:          "opcode 0x3e",
	}
	for op, want := range tests {
		if got := op.String(); got != want {
			t.Errorf("%#x: %q, want %q", byte(op), got, want)
		}
	}
}

func TestParseAHS(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []AHS
		err  bool
	}{
		{"empty", "", nil, false},
		{"extended CDB, padded", "00 03 01 00 b0 b1 00 00", []AHS{{Type: 1, Data: []byte{0xb0, 0xb1}}}, false},
		{"bidi read length", "00 05 02 00 00 01 00 00",
			[]AHS{{Type: 2, Data: []byte{0, 1, 0, 0}}}, false},
		{"specific byte only", "00 01 3f 07", []AHS{{Type: 0x3f, Specific: 7}}, false},
		{"two, unknown type kept", "00 01 3c 00 00 02 01 00 ee 00 00 00",
			[]AHS{{Type: 0x3c}, {Type: 1, Data: []byte{0xee}}}, false},
		{"not a multiple of 4", "00 01 01", nil, true},
		{"AHSLength 0", "00 00 01 00", nil, true},
		{"AHSLength past the end", "00 06 01 00 00 00 00 00", nil, true},
		{"padding past the end", "00 02 01 00 aa 00 00 00 00 02 01 00", nil, true},
		{"truncated second header", "00 01 01 00 00 01 01", nil, true},
	}
	for _, tc := range tests {
		got, err := ParseAHS(parseHex(t, tc.in))
		if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: ParseAHS = %+v, %v", tc.name, got, err)
		}
		var pe *ProtocolError
		if err != nil && !errors.As(err, &pe) {
			t.Errorf("%s: error %T", tc.name, err)
		}
	}
}

func TestAppendAHS(t *testing.T) {
	for n := range 9 {
		a := AHS{Type: 5, Specific: 9, Data: bytes.Repeat([]byte{0xaa}, n)}
		b, err := AppendAHS([]byte{0xff}, a)
		if err != nil {
			t.Fatal(err)
		}
		b = b[1:]
		if len(b)%4 != 0 || len(b) != (3+1+n+3)&^3 {
			t.Errorf("%d data bytes: %d AHS bytes", n, len(b))
		}
		got, err := ParseAHS(b)
		if n == 0 {
			a.Data = nil
		}
		if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], a) {
			t.Errorf("%d data bytes: round trip %+v, %v", n, got, err)
		}
	}
	if _, err := AppendAHS(nil, AHS{Data: make([]byte, maxAHSData+1)}); err == nil {
		t.Error("AppendAHS accepted an AHS that cannot fit in a PDU")
	}
	b, err := AppendAHS(nil, AHS{Data: make([]byte, maxAHSData)})
	if err != nil || len(b) != maxAHSLen {
		t.Errorf("largest AHS: %d bytes, %v", len(b), err)
	}
}
