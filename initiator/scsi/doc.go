// Package scsi builds the SCSI command descriptor blocks an iSCSI initiator
// sends to a direct-access block device and parses the data, status and sense
// the device server returns (SPC-4, SBC-3). It contains no transport code: the
// iSCSI session carries the CDBs and hands the Data-In bytes, the status byte
// and the sense data back to the parsers here.
//
// CDB builders return a fresh slice on every call, so callers may modify or
// keep it. Parsers never panic and never trust a length found in the data:
// every field is read only when the bytes are present, and a length field
// only ever shortens what is looked at. What each parser does with short data
// (an error, or a partial result) is documented on the parser; the length the
// device would have returned (for re-issuing a command with a bigger
// allocation length) is available from VPDLength, InquiryData.AdditionalLength
// and the listLength result of ParseReportLUNs.
//
// Sense data given to ParseSense is the sense data itself, without the
// two-byte SenseLength field that precedes it in an iSCSI SCSI Response.
package scsi
