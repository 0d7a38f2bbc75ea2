package initiator

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/iscsifs/iscsifs/initiator/pdu"
)

func kvString(kv []pdu.KV) string {
	var parts []string
	for _, p := range kv {
		parts = append(parts, p.Key+"="+p.Value)
	}
	return strings.Join(parts, " ")
}

func TestNegotiatorOffer(t *testing.T) {
	n := newNegotiator(DefaultNegotiationConfig(), false)
	want := "HeaderDigest=None,CRC32C DataDigest=None,CRC32C ErrorRecoveryLevel=0 MaxConnections=1 " +
		"InitialR2T=No ImmediateData=Yes MaxRecvDataSegmentLength=262144 MaxBurstLength=1048576 " +
		"FirstBurstLength=262144 MaxOutstandingR2T=4 DataPDUInOrder=Yes DataSequenceInOrder=Yes " +
		"DefaultTime2Wait=2 DefaultTime2Retain=0"
	if got := kvString(n.offer()); got != want {
		t.Errorf("normal offer:\n got %s\nwant %s", got, want)
	}
	if got := n.offer(); len(got) != 0 {
		t.Errorf("second offer repeats keys: %v", got)
	}
	d := newNegotiator(NegotiationConfig{MaxRecvDataSegmentLength: 512, HeaderDigest: DigestCRC32C, DataDigest: DigestPreferCRC32C}, true)
	if got, want := kvString(d.offer()), "HeaderDigest=CRC32C DataDigest=CRC32C,None ErrorRecoveryLevel=0 MaxRecvDataSegmentLength=512"; got != want {
		t.Errorf("discovery offer:\n got %s\nwant %s", got, want)
	}
	// The zero config is the default config.
	if got := kvString(newNegotiator(NegotiationConfig{}, false).offer()); got != want0(t) {
		t.Errorf("zero config offers %s", got)
	}
}

func want0(t *testing.T) string {
	t.Helper()
	return kvString(newNegotiator(DefaultNegotiationConfig(), false).offer())
}

// negotiate offers cfg, applies the target's answer and returns the reply,
// the error and the result.
func negotiate(cfg NegotiationConfig, discovery bool, target ...string) ([]pdu.KV, Params, error) {
	n := newNegotiator(cfg, discovery)
	n.offer()
	reply, err := n.apply(kvs(target...))
	return reply, n.result(), err
}

func TestNegotiatorRules(t *testing.T) {
	def := DefaultNegotiationConfig()
	noDigest := def
	noDigest.HeaderDigest, noDigest.DataDigest = DigestNone, DigestNone
	needDigest := def
	needDigest.HeaderDigest, needDigest.DataDigest = DigestCRC32C, DigestCRC32C
	r2tYes := def
	r2tYes.InitialR2T = true
	noImm := def
	noImm.ImmediateData = false

	type check func(p Params) bool
	for _, tc := range []struct {
		name   string
		cfg    NegotiationConfig
		target []string
		ok     check  // nil: expect an error
		errKey string // the key the error names
	}{
		// List: one value, among those offered.
		{"HeaderDigest None", def, []string{"HeaderDigest", "None"}, func(p Params) bool { return !p.HeaderDigest }, ""},
		{"HeaderDigest CRC32C", def, []string{"HeaderDigest", "CRC32C"}, func(p Params) bool { return p.HeaderDigest && !p.DataDigest }, ""},
		{"DataDigest CRC32C", def, []string{"DataDigest", "CRC32C"}, func(p Params) bool { return p.DataDigest && !p.HeaderDigest }, ""},
		{"digest case-insensitive", def, []string{"HeaderDigest", "crc32c"}, func(p Params) bool { return p.HeaderDigest }, ""},
		{"digest list answer", def, []string{"HeaderDigest", "CRC32C,None"}, nil, "HeaderDigest"},
		{"digest unknown", def, []string{"DataDigest", "MD5"}, nil, "DataDigest"},
		{"digest not offered", noDigest, []string{"HeaderDigest", "CRC32C"}, nil, "HeaderDigest"},
		{"digest required, None", needDigest, []string{"HeaderDigest", "None"}, nil, "HeaderDigest"},
		{"digest required, Reject", needDigest, []string{"DataDigest", "Reject"}, nil, "DataDigest"},
		{"digest required, agreed", needDigest, []string{"HeaderDigest", "CRC32C", "DataDigest", "CRC32C"}, func(p Params) bool { return p.HeaderDigest && p.DataDigest }, ""},

		// Minimum.
		{"MaxBurstLength min", def, []string{"MaxBurstLength", "65536"}, func(p Params) bool { return p.MaxBurstLength == 65536 }, ""},
		{"MaxBurstLength hex", def, []string{"MaxBurstLength", "0x10000"}, func(p Params) bool { return p.MaxBurstLength == 65536 }, ""},
		{"MaxBurstLength above offer", def, []string{"MaxBurstLength", "2097152"}, nil, "MaxBurstLength"},
		{"MaxBurstLength below range", def, []string{"MaxBurstLength", "511"}, nil, "MaxBurstLength"},
		{"MaxBurstLength not a number", def, []string{"MaxBurstLength", "lots"}, nil, "MaxBurstLength"},
		{"MaxBurstLength negative", def, []string{"MaxBurstLength", "-1"}, nil, "MaxBurstLength"},
		{"FirstBurstLength min", def, []string{"FirstBurstLength", "16384"}, func(p Params) bool { return p.FirstBurstLength == 16384 }, ""},
		{"FirstBurstLength above offer", def, []string{"FirstBurstLength", "262145"}, nil, "FirstBurstLength"},
		{"FirstBurstLength capped by MaxBurstLength", def, []string{"MaxBurstLength", "16384", "FirstBurstLength", "65536"},
			func(p Params) bool { return p.MaxBurstLength == 16384 && p.FirstBurstLength == 16384 }, ""},
		{"MaxOutstandingR2T min", def, []string{"MaxOutstandingR2T", "1"}, func(p Params) bool { return p.MaxOutstandingR2T == 1 }, ""},
		{"MaxOutstandingR2T 0", def, []string{"MaxOutstandingR2T", "0"}, nil, "MaxOutstandingR2T"},
		{"MaxOutstandingR2T above offer", def, []string{"MaxOutstandingR2T", "5"}, nil, "MaxOutstandingR2T"},
		{"MaxConnections 1", def, []string{"MaxConnections", "1"}, func(p Params) bool { return p.MaxConnections == 1 }, ""},
		{"MaxConnections 2", def, []string{"MaxConnections", "2"}, nil, "MaxConnections"},
		{"ErrorRecoveryLevel 0", def, []string{"ErrorRecoveryLevel", "0"}, func(p Params) bool { return p.ErrorRecoveryLevel == 0 }, ""},
		{"ErrorRecoveryLevel 1", def, []string{"ErrorRecoveryLevel", "1"}, nil, "ErrorRecoveryLevel"},
		{"ErrorRecoveryLevel 3", def, []string{"ErrorRecoveryLevel", "3"}, nil, "ErrorRecoveryLevel"},
		{"DefaultTime2Retain 0", def, []string{"DefaultTime2Retain", "0"}, func(p Params) bool { return p.DefaultTime2Retain == 0 }, ""},
		{"DefaultTime2Retain above offer", def, []string{"DefaultTime2Retain", "20"}, nil, "DefaultTime2Retain"},

		// Maximum.
		{"DefaultTime2Wait max", def, []string{"DefaultTime2Wait", "5"}, func(p Params) bool { return p.DefaultTime2Wait == 5 }, ""},
		{"DefaultTime2Wait below offer", def, []string{"DefaultTime2Wait", "1"}, nil, "DefaultTime2Wait"},
		{"DefaultTime2Wait above range", def, []string{"DefaultTime2Wait", "3601"}, nil, "DefaultTime2Wait"},

		// OR.
		{"InitialR2T Yes", def, []string{"InitialR2T", "Yes"}, func(p Params) bool { return p.InitialR2T }, ""},
		{"InitialR2T No", def, []string{"InitialR2T", "No"}, func(p Params) bool { return !p.InitialR2T }, ""},
		{"InitialR2T offered Yes, answered No", r2tYes, []string{"InitialR2T", "No"}, nil, "InitialR2T"},
		{"InitialR2T not boolean", def, []string{"InitialR2T", "Maybe"}, nil, "InitialR2T"},
		{"DataPDUInOrder No", def, []string{"DataPDUInOrder", "No"}, nil, "DataPDUInOrder"},
		{"DataPDUInOrder Yes", def, []string{"DataPDUInOrder", "Yes"}, func(p Params) bool { return p.DataPDUInOrder }, ""},
		{"DataSequenceInOrder No", def, []string{"DataSequenceInOrder", "No"}, nil, "DataSequenceInOrder"},

		// AND.
		{"ImmediateData Yes", def, []string{"ImmediateData", "Yes"}, func(p Params) bool { return p.ImmediateData }, ""},
		{"ImmediateData No", def, []string{"ImmediateData", "No"}, func(p Params) bool { return !p.ImmediateData }, ""},
		{"ImmediateData offered No, answered Yes", noImm, []string{"ImmediateData", "Yes"}, nil, "ImmediateData"},
		{"ImmediateData offered No, silent", noImm, nil, func(p Params) bool { return !p.ImmediateData }, ""},

		// Declarations.
		{"target MRDSL declared", def, []string{"MaxRecvDataSegmentLength", "65536"},
			func(p Params) bool {
				return p.TargetMaxRecvDataSegmentLength == 65536 && p.MaxRecvDataSegmentLength == 262144
			}, ""},
		{"target MRDSL silent", def, nil, func(p Params) bool { return p.TargetMaxRecvDataSegmentLength == 8192 }, ""},
		{"target MRDSL Irrelevant", def, []string{"MaxRecvDataSegmentLength", "Irrelevant"}, func(p Params) bool { return p.TargetMaxRecvDataSegmentLength == 8192 }, ""},
		{"target MRDSL too small", def, []string{"MaxRecvDataSegmentLength", "511"}, nil, "MaxRecvDataSegmentLength"},
		{"target MRDSL too large", def, []string{"MaxRecvDataSegmentLength", "16777216"}, nil, "MaxRecvDataSegmentLength"},
		{"TPGT", def, []string{"TargetPortalGroupTag", "1"}, func(p Params) bool { return p.TargetPortalGroupTag == 1 }, ""},
		{"TPGT silent", def, nil, func(p Params) bool { return p.TargetPortalGroupTag == -1 }, ""},
		{"TPGT out of range", def, []string{"TargetPortalGroupTag", "65536"}, nil, "TargetPortalGroupTag"},
		{"TargetAlias", def, []string{"TargetAlias", "lab disk"}, func(p Params) bool { return p.TargetAlias == "lab disk" }, ""},

		// Special answers keep the RFC default.
		{"MaxBurstLength Irrelevant", def, []string{"MaxBurstLength", "Irrelevant"}, func(p Params) bool { return p.MaxBurstLength == 262144 }, ""},
		{"FirstBurstLength Reject", def, []string{"FirstBurstLength", "Reject"}, func(p Params) bool { return p.FirstBurstLength == 65536 }, ""},
		{"InitialR2T NotUnderstood", def, []string{"InitialR2T", "NotUnderstood"}, func(p Params) bool { return p.InitialR2T }, ""},
		{"DefaultTime2Retain Reject", def, []string{"DefaultTime2Retain", "Reject"}, func(p Params) bool { return p.DefaultTime2Retain == 20 }, ""},

		// Repeats.
		{"same key twice, same value", def, []string{"MaxBurstLength", "65536", "MaxBurstLength", "65536"}, func(p Params) bool { return p.MaxBurstLength == 65536 }, ""},
		{"same key twice, other value", def, []string{"MaxBurstLength", "65536", "MaxBurstLength", "32768"}, nil, "MaxBurstLength"},

		// Keys that belong to the login code are left alone.
		{"login keys", def, []string{"AuthMethod", "None", "TargetName", "iqn.x", "CHAP_N", "t"}, func(p Params) bool { return true }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reply, p, err := negotiate(tc.cfg, false, tc.target...)
			if tc.ok == nil {
				var ne *NegotiationError
				if !errors.As(err, &ne) {
					t.Fatalf("want a *NegotiationError, got %v (result %+v)", err, p)
				}
				if ne.Key != tc.errKey {
					t.Errorf("error names %s, want %s: %v", ne.Key, tc.errKey, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(reply) != 0 {
				t.Errorf("unexpected reply %v", reply)
			}
			if !tc.ok(p) {
				t.Errorf("result %+v", p)
			}
		})
	}
}

// tgt 1.0.85 answering libiscsi-like offers (TARGETS.md): FirstBurstLength
// 65536, MaxBurstLength 262144, InitialR2T=Yes, and no MaxRecvDataSegmentLength
// at its default.
func TestNegotiatorTgt(t *testing.T) {
	n := newNegotiator(DefaultNegotiationConfig(), false)
	n.offer()
	reply, err := n.apply(kvs(
		"HeaderDigest", "None", "DataDigest", "None", "ErrorRecoveryLevel", "0", "MaxConnections", "1",
		"InitialR2T", "Yes", "ImmediateData", "Yes", "MaxBurstLength", "262144", "FirstBurstLength", "65536",
		"MaxOutstandingR2T", "1", "DataPDUInOrder", "Yes", "DataSequenceInOrder", "Yes",
		"DefaultTime2Wait", "2", "DefaultTime2Retain", "0", "TargetPortalGroupTag", "1"))
	if err != nil || len(reply) != 0 {
		t.Fatalf("reply %v, err %v", reply, err)
	}
	want := Params{
		MaxRecvDataSegmentLength: 262144, TargetMaxRecvDataSegmentLength: 8192,
		MaxBurstLength: 262144, FirstBurstLength: 65536, InitialR2T: true, ImmediateData: true,
		MaxOutstandingR2T: 1, DataPDUInOrder: true, DataSequenceInOrder: true,
		DefaultTime2Wait: 2, DefaultTime2Retain: 0, ErrorRecoveryLevel: 0, MaxConnections: 1,
		TargetPortalGroupTag: 1,
	}
	if got := n.result(); got != want {
		t.Errorf("result\n got %+v\nwant %+v", got, want)
	}
	if err := n.missing(); err != nil {
		t.Error(err)
	}

	// With a non-default MaxRecvDataSegmentLength tgt declares it and stays
	// in the stage once (T=0): the next round carries no keys.
	n = newNegotiator(DefaultNegotiationConfig(), false)
	n.offer()
	if reply, err := n.apply(kvs("MaxRecvDataSegmentLength", "65536", "MaxBurstLength", "262144", "HeaderDigest", "CRC32C")); err != nil || len(reply) != 0 {
		t.Fatalf("round 1: %v %v", reply, err)
	}
	if reply, err := n.apply(nil); err != nil || len(reply) != 0 {
		t.Fatalf("round 2: %v %v", reply, err)
	}
	p := n.result()
	if p.TargetMaxRecvDataSegmentLength != 65536 || p.MaxBurstLength != 262144 || !p.HeaderDigest {
		t.Errorf("result %+v", p)
	}
	// Keys tgt never answered take the RFC defaults.
	if p.FirstBurstLength != 65536 || !p.InitialR2T || p.MaxOutstandingR2T != 1 || p.DefaultTime2Retain != 20 {
		t.Errorf("defaults not applied: %+v", p)
	}
}

// istgt declares MaxRecvDataSegmentLength=262144 and answers Irrelevant to
// keys that do not apply to a discovery session.
func TestNegotiatorIstgt(t *testing.T) {
	n := newNegotiator(DefaultNegotiationConfig(), false)
	n.offer()
	_, err := n.apply(kvs("HeaderDigest", "None", "DataDigest", "None", "ErrorRecoveryLevel", "0",
		"MaxConnections", "1", "InitialR2T", "Yes", "ImmediateData", "Yes",
		"MaxRecvDataSegmentLength", "262144", "MaxBurstLength", "262144", "FirstBurstLength", "262144",
		"MaxOutstandingR2T", "1", "DataPDUInOrder", "Yes", "DataSequenceInOrder", "Yes",
		"DefaultTime2Wait", "2", "DefaultTime2Retain", "0", "TargetPortalGroupTag", "1", "TargetAlias", "istgt disk"))
	if err != nil {
		t.Fatal(err)
	}
	p := n.result()
	if p.TargetMaxRecvDataSegmentLength != 262144 || p.MaxBurstLength != 262144 || p.FirstBurstLength != 262144 ||
		!p.InitialR2T || !p.ImmediateData || p.MaxOutstandingR2T != 1 || p.TargetAlias != "istgt disk" {
		t.Errorf("result %+v", p)
	}

	d := newNegotiator(DefaultNegotiationConfig(), true)
	d.offer()
	reply, err := d.apply(kvs("HeaderDigest", "None", "DataDigest", "None", "ErrorRecoveryLevel", "Irrelevant",
		"MaxRecvDataSegmentLength", "Irrelevant", "MaxBurstLength", "Irrelevant", "FirstBurstLength", "Irrelevant",
		"InitialR2T", "Irrelevant", "ImmediateData", "Irrelevant", "MaxOutstandingR2T", "Irrelevant",
		"DefaultTime2Retain", "Irrelevant"))
	if err != nil || len(reply) != 0 {
		t.Fatalf("discovery: reply %v, err %v", reply, err)
	}
	want := DefaultParams()
	want.MaxRecvDataSegmentLength = 262144
	if got := d.result(); got != want {
		t.Errorf("discovery result\n got %+v\nwant %+v", got, want)
	}
}

func TestNegotiatorTargetOffersFirst(t *testing.T) {
	n := newNegotiator(DefaultNegotiationConfig(), false)
	reply, err := n.apply(kvs(
		"MaxBurstLength", "131072", // min(ours 1 MiB, 131072)
		"FirstBurstLength", "524288", // min(ours 256 KiB, 512 KiB)
		"InitialR2T", "No", // OR
		"ImmediateData", "Yes", // AND
		"DefaultTime2Wait", "10", // max
		"HeaderDigest", "CRC32C,None", // first of theirs that we accept
		"DataDigest", "MD5,None",
		"MaxOutstandingR2T", "0", // out of range
		"DataPDUInOrder", "Sometimes", // not a Boolean
		"iSCSIProtocolLevel", "2",
		"TaskReporting", "ResponseFence,RFC3720",
		"RDMAExtensions", "Yes",
		"IFMarker", "Yes", "OFMarkInt", "2048~8192",
		"X-com.example.Feature", "1",
		"X#NodeArchitecture", "ExampleOS/1.0",
		"TargetAddress", "10.0.0.1:3260,1",
	))
	if err != nil {
		t.Fatal(err)
	}
	want := "MaxBurstLength=131072 FirstBurstLength=262144 InitialR2T=No ImmediateData=Yes DefaultTime2Wait=10 " +
		"HeaderDigest=CRC32C DataDigest=None MaxOutstandingR2T=Reject DataPDUInOrder=Reject iSCSIProtocolLevel=1 " +
		"TaskReporting=RFC3720 RDMAExtensions=No IFMarker=No OFMarkInt=Reject X-com.example.Feature=NotUnderstood"
	if got := kvString(reply); got != want {
		t.Errorf("reply\n got %s\nwant %s", got, want)
	}
	// Our offer now leaves out what is settled.
	if got, want := kvString(n.offer()), "ErrorRecoveryLevel=0 MaxConnections=1 MaxRecvDataSegmentLength=262144 DataSequenceInOrder=Yes DefaultTime2Retain=0"; got != want {
		t.Errorf("offer after target offers\n got %s\nwant %s", got, want)
	}
	if reply, err := n.apply(kvs("ErrorRecoveryLevel", "0", "MaxConnections", "1", "DataSequenceInOrder", "Yes", "DefaultTime2Retain", "0")); err != nil || len(reply) != 0 {
		t.Fatalf("answers: %v %v", reply, err)
	}
	p := n.result()
	if p.MaxBurstLength != 131072 || p.FirstBurstLength != 131072 || p.InitialR2T || !p.ImmediateData ||
		p.DefaultTime2Wait != 10 || !p.HeaderDigest || p.DataDigest || p.MaxOutstandingR2T != 1 || !p.DataPDUInOrder {
		t.Errorf("result %+v", p)
	}
	// The target repeating its offer unchanged gets no second answer.
	if reply, err := n.apply(kvs("MaxBurstLength", "131072", "IFMarker", "Yes", "X-com.example.Feature", "1")); err != nil || len(reply) != 0 {
		t.Errorf("repeat: %v %v", reply, err)
	}

	// As responder: our policy decides, ImmediateData=No wins by AND.
	cfg := DefaultNegotiationConfig()
	cfg.ImmediateData = false
	cfg.HeaderDigest = DigestCRC32C
	r := newNegotiator(cfg, false)
	reply, err = r.apply(kvs("ImmediateData", "Yes", "InitialR2T", "Yes"))
	if err != nil || kvString(reply) != "ImmediateData=No InitialR2T=Yes" {
		t.Errorf("reply %v, err %v", reply, err)
	}
	_, err = r.apply(kvs("HeaderDigest", "None"))
	var ne *NegotiationError
	if !errors.As(err, &ne) || ne.Key != "HeaderDigest" {
		t.Errorf("required digest refused by the target: %v", err)
	}

	// Discovery: keys of Normal sessions are Irrelevant.
	d := newNegotiator(DefaultNegotiationConfig(), true)
	reply, err = d.apply(kvs("MaxBurstLength", "262144", "InitialR2T", "Yes", "DefaultTime2Wait", "3", "TaskReporting", "RFC3720"))
	if err != nil || kvString(reply) != "MaxBurstLength=Irrelevant InitialR2T=Irrelevant DefaultTime2Wait=3 TaskReporting=Irrelevant" {
		t.Errorf("discovery reply %v, err %v", reply, err)
	}
}

func TestNegotiatorMissingDigest(t *testing.T) {
	cfg := DefaultNegotiationConfig()
	cfg.DataDigest = DigestCRC32C
	n := newNegotiator(cfg, false)
	n.offer()
	if _, err := n.apply(kvs("HeaderDigest", "None")); err != nil {
		t.Fatal(err)
	}
	var ne *NegotiationError
	if err := n.missing(); !errors.As(err, &ne) || ne.Key != "DataDigest" {
		t.Errorf("missing() = %v", err)
	}
	if _, err := n.apply(kvs("DataDigest", "CRC32C")); err != nil {
		t.Fatal(err)
	}
	if err := n.missing(); err != nil {
		t.Errorf("missing() after the answer = %v", err)
	}
}

func TestNegotiationErrorText(t *testing.T) {
	_, _, err := negotiate(DefaultNegotiationConfig(), false, "MaxBurstLength", "2097152")
	if got := err.Error(); got != "negotiation of MaxBurstLength=2097152: more than the 1048576 we offered (the result is the minimum)" {
		t.Errorf("Error() = %q", got)
	}
	long := strings.Repeat("x", 300)
	_, _, err = negotiate(DefaultNegotiationConfig(), false, "InitialR2T", long)
	if len(err.Error()) > 150 {
		t.Errorf("long value not shortened: %d bytes", len(err.Error()))
	}
}

func TestNegotiationConfig(t *testing.T) {
	if err := DefaultNegotiationConfig().Validate(); err != nil {
		t.Error(err)
	}
	if err := (NegotiationConfig{}).Validate(); err != nil {
		t.Error(err)
	}
	for _, bad := range []NegotiationConfig{
		{MaxRecvDataSegmentLength: 511},
		{MaxBurstLength: 1 << 24},
		{FirstBurstLength: 100},
		{MaxOutstandingR2T: 65536},
		{MaxBurstLength: 65536, FirstBurstLength: 131072},
		{HeaderDigest: 9},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	// Out-of-range values are clamped rather than offered.
	n := newNegotiator(NegotiationConfig{MaxRecvDataSegmentLength: 100, MaxBurstLength: 1 << 30, FirstBurstLength: 1 << 30, ImmediateData: true}, false)
	got := kvString(n.offer())
	for _, w := range []string{"MaxRecvDataSegmentLength=512", "MaxBurstLength=16777215", "FirstBurstLength=16777215", "MaxOutstandingR2T=4", "InitialR2T=No", "ImmediateData=Yes", "HeaderDigest=None DataDigest=None"} {
		if !strings.Contains(got, w) {
			t.Errorf("offer %s lacks %s", got, w)
		}
	}
}

func TestParseDigestPolicy(t *testing.T) {
	for in, want := range map[string]DigestPolicy{
		"none": DigestNone, "CRC32C": DigestCRC32C, "prefer-crc32c": DigestPreferCRC32C, "Prefer-None": DigestPreferNone,
		"CRC32C,None": DigestPreferCRC32C, "None, CRC32C": DigestPreferNone,
	} {
		got, err := ParseDigestPolicy(in)
		if err != nil || got != want {
			t.Errorf("ParseDigestPolicy(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "md5", "crc32", "yes"} {
		if _, err := ParseDigestPolicy(in); err == nil {
			t.Errorf("ParseDigestPolicy(%q) accepted", in)
		}
	}
	for _, p := range []DigestPolicy{DigestNone, DigestCRC32C, DigestPreferCRC32C, DigestPreferNone} {
		if got, err := ParseDigestPolicy(p.String()); err != nil || got != p {
			t.Errorf("round trip of %v: %v %v", p, got, err)
		}
	}
	if s := fmt.Sprint(DigestPolicy(7)); s != "DigestPolicy(7)" {
		t.Errorf("String() = %s", s)
	}
}

func TestDefaultParams(t *testing.T) {
	p := DefaultParams()
	if p.MaxRecvDataSegmentLength != 8192 || p.TargetMaxRecvDataSegmentLength != 8192 || p.MaxBurstLength != 262144 ||
		p.FirstBurstLength != 65536 || !p.InitialR2T || !p.ImmediateData || p.MaxOutstandingR2T != 1 ||
		!p.DataPDUInOrder || !p.DataSequenceInOrder || p.DefaultTime2Wait != 2 || p.DefaultTime2Retain != 20 ||
		p.ErrorRecoveryLevel != 0 || p.MaxConnections != 1 || p.HeaderDigest || p.DataDigest || p.TargetPortalGroupTag != -1 {
		t.Errorf("DefaultParams() = %+v", p)
	}
}
