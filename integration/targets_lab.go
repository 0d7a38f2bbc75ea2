package integration

// The lab setups of shared/CHECKLIST.md, for tests that want the same targets the checklist
// items name. Secrets are 12+ bytes and differ between initiator and target.
const (
	LabPlain  = "iqn.2026-11.lab:plain"
	LabCHAP   = "iqn.2026-11.lab:chap"
	LabMutual = "iqn.2026-11.lab:mutual"
	LabRO     = "iqn.2026-11.lab:ro"
	LabNull   = "iqn.2026-11.lab:null"
	LabDigest = "iqn.2026-11.lab:digest"

	// LabInitiator is the initiator name the harness's own tests use.
	LabInitiator = "iqn.2026-11.test:harness"

	LabCHAPUser     = "labuser"
	LabCHAPSecret   = "labsecret-0123"
	LabMutualUser   = "labtarget"
	LabMutualSecret = "labtgtsecret-4567"
)

// LabTGTSpecs returns the tgt lab: plain (LUN 1 64 MiB random, LUN 2 32 MiB thin), chap,
// mutual (target credentials for mutual CHAP; tgt does not require them), ro (readonly),
// null (--bstype null, 1 TiB) and digest (HeaderDigest and DataDigest CRC32C), each data
// LUN at 1. chap and mutual use the same initiator account, so one set of credentials
// logs in to every target (tgt lets a CHAP login into a target without accounts).
func LabTGTSpecs() []TargetSpec {
	return []TargetSpec{
		{Name: LabPlain, LUNs: []LUNSpec{
			{LUN: 1, Size: 64 << 20, Fill: "random"},
			{LUN: 2, Size: 32 << 20, Thin: true},
		}},
		{Name: LabCHAP, LUNs: []LUNSpec{{LUN: 1, Size: 16 << 20, Fill: "random"}},
			CHAPUser: LabCHAPUser, CHAPSecret: LabCHAPSecret},
		{Name: LabMutual, LUNs: []LUNSpec{{LUN: 1, Size: 16 << 20, Fill: "random"}},
			CHAPUser: LabCHAPUser, CHAPSecret: LabCHAPSecret,
			MutualUser: LabMutualUser, MutualSecret: LabMutualSecret},
		{Name: LabRO, LUNs: []LUNSpec{{LUN: 1, Size: 16 << 20, Fill: "random", ReadOnly: true}}},
		{Name: LabNull, LUNs: []LUNSpec{{LUN: 1, BSType: "null"}}},
		{Name: LabDigest, LUNs: []LUNSpec{{LUN: 1, Size: 16 << 20, Fill: "random"}},
			Keys: map[string]string{"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"}},
	}
}

// LabISTGTSpecs returns the istgt lab: plain (LUN 0 64 MiB random, LUN 1 32 MiB), chap,
// mutual (mutual CHAP required) and ro, LUNs from 0.
func LabISTGTSpecs() []TargetSpec {
	return []TargetSpec{
		{Name: LabPlain, LUNs: []LUNSpec{
			{LUN: 0, Size: 64 << 20, Fill: "random"},
			{LUN: 1, Size: 32 << 20},
		}},
		{Name: LabCHAP, LUNs: []LUNSpec{{LUN: 0, Size: 16 << 20, Fill: "random"}},
			CHAPUser: LabCHAPUser, CHAPSecret: LabCHAPSecret},
		{Name: LabMutual, LUNs: []LUNSpec{{LUN: 0, Size: 16 << 20, Fill: "random"}},
			CHAPUser: LabCHAPUser, CHAPSecret: LabCHAPSecret,
			MutualUser: LabMutualUser, MutualSecret: LabMutualSecret},
		{Name: LabRO, LUNs: []LUNSpec{{LUN: 0, Size: 16 << 20, Fill: "random", ReadOnly: true}}},
	}
}
