package scsi

import (
	"strings"
	"testing"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/ (captures from tgt and istgt
// and hand-made edge cases). Each target checks that the parser does not
// panic and that what it returns stays within the bytes it was given.

func FuzzParseSense(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSense(b)
		if err != nil {
			if len(b) >= 3 && b[0]&0x7e == 0x70 {
				t.Fatalf("error for %d bytes of sense: %v", len(b), err)
			}
			return
		}
		if len(b) < 2 || s.Key > 0x0f {
			t.Fatalf("accepted % x as %+v", b, s)
		}
		if !strings.HasPrefix(s.String(), s.Key.String()+": ") {
			t.Fatalf("String() = %q", s.String())
		}
		e := &StatusError{Op: "READ(10)", Status: StatusCheckCondition, Sense: &s}
		_ = e.Error()
		_ = e.Retryable()
		_ = e.Is(ErrWriteProtected)
	})
}

func FuzzParseInquiry(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseInquiry(b)
		if (err != nil) != (len(b) < 5) {
			t.Fatalf("%d bytes: err %v", len(b), err)
		}
		if len(d.Vendor) > 8 || len(d.Product) > 16 || len(d.Revision) > 4 {
			t.Fatalf("strings too long: %+v", d)
		}
		if len(b) < 16 && d.Vendor != "" {
			t.Fatalf("vendor from %d bytes", len(b))
		}
		for _, s := range []string{d.Vendor, d.Product, d.Revision} {
			if strings.Trim(s, " \x00") != s {
				t.Fatalf("untrimmed %q", s)
			}
		}
		if d.PeripheralQualifier > 7 || d.DeviceType > 0x1f {
			t.Fatalf("fields out of range: %+v", d)
		}
	})
}

func FuzzParseSupportedVPDPages(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		pages, err := ParseSupportedVPDPages(b)
		if err == nil && len(pages) > len(b)-4 {
			t.Fatalf("%d pages from %d bytes", len(pages), len(b))
		}
	})
}

func FuzzParseUnitSerial(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseUnitSerial(b)
		if err == nil && len(s) > len(b)-4 {
			t.Fatalf("%d-byte serial from %d bytes", len(s), len(b))
		}
	})
}

func FuzzParseDeviceIdentification(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, err := ParseDeviceIdentification(b)
		if err != nil {
			return
		}
		n := 0
		for _, d := range ds {
			n += 4 + len(d.Value)
			if d.CodeSet > 0x0f || d.Association > 3 || d.Type > 0x0f || d.Protocol > 0x0f {
				t.Fatalf("fields out of range: %+v", d)
			}
		}
		if n > len(b)-4 {
			t.Fatalf("descriptors of %d bytes from %d bytes", n, len(b))
		}
		_ = LUIdentifier(ds)
		_ = TargetPortIdentity(ds)
	})
}

func FuzzParseBlockLimits(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseBlockLimits(b)
		if err != nil {
			return
		}
		if len(b) < 44 && l.MaxWriteSameLength != 0 {
			t.Fatalf("MAXIMUM WRITE SAME LENGTH from %d bytes", len(b))
		}
		if len(b) < 12 && l.MaxTransferLength != 0 {
			t.Fatalf("MAXIMUM TRANSFER LENGTH from %d bytes", len(b))
		}
	})
}

func FuzzParseLogicalBlockProvisioning(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseLogicalBlockProvisioning(b)
		if err == nil && (len(b) < 6 || p.ProvisioningType > 7) {
			t.Fatalf("accepted % x as %+v", b, p)
		}
	})
}

func FuzzParseReadCapacity10(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseReadCapacity10(b)
		if err == nil && (len(b) < 8 || c.BlockSize == 0 || c.LastLBA > 0xffffffff) {
			t.Fatalf("accepted % x as %+v", b, c)
		}
	})
}

func FuzzParseReadCapacity16(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseReadCapacity16(b)
		if err == nil && (len(b) < 12 || c.BlockSize == 0 || c.PhysicalExponent > 15 || c.LowestAlignedLBA > 0x3fff) {
			t.Fatalf("accepted % x as %+v", b, c)
		}
		_ = c.Bytes()
	})
}

func FuzzParseReportLUNs(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		luns, listLen, err := ParseReportLUNs(b)
		if err != nil {
			if len(b) >= 8 {
				t.Fatalf("error for %d bytes: %v", len(b), err)
			}
			return
		}
		if len(luns)*8 > len(b)-8 || uint64(len(luns)) > uint64(listLen)/8 {
			t.Fatalf("%d LUNs from %d bytes, list length %d", len(luns), len(b), listLen)
		}
		for i, n := range luns {
			raw := [8]byte(b[8+8*i : 16+8*i])
			if DecodeLUN(EncodeLUN(n)) != n {
				t.Fatalf("LUN %#x from % x does not round-trip", n, raw)
			}
		}
	})
}

func FuzzParseModeSense6(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseModeSense6(b)
		if err == nil && (len(b) < 4 || m.BlockDescriptorLength > 0xff) {
			t.Fatalf("accepted % x as %+v", b, m)
		}
		if m.WriteCacheEnabled && !m.HaveCachingPage {
			t.Fatal("WCE without the caching page")
		}
	})
}

func FuzzParseModeSense10(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseModeSense10(b)
		if err == nil && (len(b) < 8 || m.BlockDescriptorLength > 0xffff) {
			t.Fatalf("accepted % x as %+v", b, m)
		}
		if m.WriteCacheEnabled && !m.HaveCachingPage {
			t.Fatal("WCE without the caching page")
		}
	})
}

func FuzzParseGetLBAStatus(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, err := ParseGetLBAStatus(b)
		if err != nil {
			return
		}
		if len(ds)*16 > len(b)-8 {
			t.Fatalf("%d descriptors from %d bytes", len(ds), len(b))
		}
		for _, d := range ds {
			if d.Status > 0x0f {
				t.Fatalf("status %#x", d.Status)
			}
		}
	})
}

func FuzzLUN(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		var b [8]byte
		copy(b[:], raw)
		n := DecodeLUN(b)
		back := EncodeLUN(n)
		flatLow := b[0] == 0x40 && [6]byte(b[2:]) == [6]byte{}
		if back != b && !(flatLow && back == [8]byte{0, b[1]}) {
			t.Fatalf("EncodeLUN(DecodeLUN(% x)) = % x", b, back)
		}
		if n >= 0x4000 && n <= 0x40ff {
			t.Fatalf("DecodeLUN(% x) = %#x, a number it must never return", b, n)
		}
		if DecodeLUN(EncodeLUN(n)) != n {
			t.Fatalf("number %#x does not round-trip", n)
		}
	})
}

func FuzzReportTargetPortGroups(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 0x1c, 0x80, 0xcf, 0, 1, 0, 2, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0x02, 0xcf, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 3, 0, 0, 0, 0xff, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		groups, err := ParseReportTargetPortGroups(b)
		if (err != nil) != (len(b) < 4) {
			t.Fatalf("%d bytes: err %v", len(b), err)
		}
		if err != nil {
			return
		}
		used := int64(0)
		for _, g := range groups {
			used += 8 + 4*int64(len(g.Ports))
			if g.State > 0x0f {
				t.Fatalf("state %#x", g.State)
			}
		}
		if used > int64(len(b))-4 || used > RTPGLength(b)-4 {
			t.Fatalf("%d bytes of groups from %d bytes, return length %d", used, len(b), RTPGLength(b))
		}
	})
}
