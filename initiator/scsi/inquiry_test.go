package scsi

import (
	"reflect"
	"testing"
)

func TestParseInquiry(t *testing.T) {
	tests := []struct {
		name   string
		data   string
		want   InquiryData
		direct bool
	}{
		{"tgt LUN 0 controller", capTgtInquiryLUN0, InquiryData{
			PeripheralQualifier: 0, DeviceType: TypeStorageArrayController, Version: 5,
			AdditionalLength: 61, Vendor: "IET", Product: "Controller", Revision: "0001",
		}, false},
		{"tgt disk", capTgtInquiryDisk, InquiryData{
			DeviceType: TypeDisk, Version: 5, AdditionalLength: 61,
			Vendor: "IET", Product: "VIRTUAL-DISK", Revision: "0001",
		}, true},
		{"istgt disk", capIstgtInquiry, InquiryData{
			DeviceType: TypeDisk, Version: 5, AdditionalLength: 91,
			Vendor: "FreeBSD", Product: "iSCSI DISK", Revision: "0001",
		}, true},
		{"tgt cut at 36", capTgtInquiryDisk[:72], InquiryData{
			DeviceType: TypeDisk, Version: 5, AdditionalLength: 61,
			Vendor: "IET", Product: "VIRTUAL-DISK", Revision: "0001",
		}, true},
		{"cut at 35: no revision", capTgtInquiryDisk[:70], InquiryData{
			DeviceType: TypeDisk, Version: 5, AdditionalLength: 61,
			Vendor: "IET", Product: "VIRTUAL-DISK",
		}, true},
		{"cut at 16: vendor only", capTgtInquiryDisk[:32], InquiryData{
			DeviceType: TypeDisk, Version: 5, AdditionalLength: 61, Vendor: "IET",
		}, true},
		{"5 bytes", "7f00050002", InquiryData{
			PeripheralQualifier: QualifierNotSupported, DeviceType: TypeUnknown, Version: 5, AdditionalLength: 2,
		}, false},
		{"4 bytes: error", "20800600", InquiryData{}, false},
		{"removable, not connected", "2080060000", InquiryData{
			PeripheralQualifier: QualifierNotConnected, DeviceType: TypeDisk, Removable: true, Version: 6,
		}, false},
		{"NUL padded strings", "000005021f000000" + "41424300000000004445462020000000" + "2020202020202020" + "31000000", InquiryData{
			Version: 5, AdditionalLength: 31, Vendor: "ABC", Product: "DEF", Revision: "1",
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := hx(t, tt.data)
			got, err := ParseInquiry(b)
			if len(b) < 5 {
				if err == nil {
					t.Fatalf("no error for %d bytes", len(b))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if got.DirectAccess() != tt.direct {
				t.Errorf("DirectAccess() = %v", got.DirectAccess())
			}
		})
	}
	if _, err := ParseInquiry(nil); err == nil {
		t.Error("no error for empty data")
	}
}
