package scsi

import "fmt"

// DeviceTypeName names an INQUIRY PERIPHERAL DEVICE TYPE (SPC-4 table 49)
// in one short word, as `iscsifs ls` prints it.
func DeviceTypeName(t uint8) string {
	switch t {
	case 0x00:
		return "disk"
	case 0x01:
		return "tape"
	case 0x03:
		return "processor"
	case 0x05:
		return "cdrom"
	case 0x07:
		return "optical"
	case 0x08:
		return "changer"
	case 0x0c:
		return "controller"
	case 0x0d:
		return "enclosure"
	case 0x0e:
		return "rbc"
	case 0x11:
		return "osd"
	case 0x1e:
		return "wlun"
	case 0x1f:
		return "unknown"
	}
	return fmt.Sprintf("type-0x%02x", t)
}
