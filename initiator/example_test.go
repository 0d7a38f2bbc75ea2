package initiator_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"

	"github.com/iscsifs/iscsifs/initiator"
	"github.com/iscsifs/iscsifs/initiator/scsi"
)

// The examples run against an in-process target (see startTarget). A
// program writes its target's address instead: a tgtd, LIO or istgt
// portal, or a storage array's.
const target = "iqn.2026-11.io.example:disk1"

// startTarget starts the in-process target the examples talk to and
// returns its portal ("127.0.0.1:port") and the URL of its LUN 0.
func startTarget() (portal, url string, stop func()) {
	return startCHAPTarget("", "")
}

// startCHAPTarget is startTarget for a target that requires CHAP.
func startCHAPTarget(user, secret string) (portal, url string, stop func()) {
	t, err := initiator.StartExampleTarget(target, user, secret)
	if err != nil {
		log.Fatal(err)
	}
	return t.Portal, "iscsi://" + t.Portal + "/" + target + "/0", t.Close
}

// openLUN opens LUN 0 of the in-process target as ExampleOpen shows; stop
// closes the LUN and the target.
func openLUN() (lun *initiator.LUN, stop func()) {
	_, url, stopTarget := startTarget()
	lun, err := initiator.Open(context.Background(), url, initiator.Config{})
	if err != nil {
		log.Fatal(err)
	}
	return lun, func() {
		lun.Close()
		stopTarget()
	}
}

// Discover lists the targets a portal offers (SendTargets).
func ExampleDiscover() {
	portal, _, stop := startTarget()
	defer stop()

	targets, err := initiator.Discover(context.Background(), portal, initiator.Config{})
	if err != nil {
		log.Fatal(err)
	}
	for _, t := range targets {
		fmt.Println(t.Name, len(t.Portals), "portal")
	}
	// Output: iqn.2026-11.io.example:disk1 1 portal
}

// Open takes the URL of a LUN and a Config, whose zero value works, and
// returns the LUN; Close logs out.
func ExampleOpen() {
	_, url, stop := startTarget() // url is "iscsi://127.0.0.1:port/iqn.2026-11.io.example:disk1/0"
	defer stop()

	lun, err := initiator.Open(context.Background(), url, initiator.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer lun.Close()

	fmt.Printf("%d bytes in blocks of %d\n", lun.Size(), lun.BlockSize())
	sector := make([]byte, lun.BlockSize())
	if _, err := lun.ReadAt(sector, 0); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("sector 0 starts with % x\n", sector[:4])
	// Output:
	// 1048576 bytes in blocks of 512
	// sector 0 starts with 00 07 0e 15
}

// WriteAt takes any offset and length; Sync makes the data durable
// (SYNCHRONIZE CACHE, sent only when the LUN has a write cache and
// something was written since the last Sync).
func ExampleLUN_WriteAt() {
	lun, stop := openLUN()
	defer stop()

	if _, err := lun.WriteAt([]byte("hello, disk"), 1000); err != nil {
		log.Fatal(err)
	}
	if err := lun.Sync(); err != nil {
		log.Fatal(err)
	}
	got := make([]byte, 11)
	if _, err := lun.ReadAt(got, 1000); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", got)
	// Output: hello, disk
}

// Execute sends a command the LUN has no method for: here PERSISTENT
// RESERVE IN with the READ KEYS service action (SPC-4), whose answer starts
// with the PRgeneration and the length of the key list.
func ExampleLUN_Execute() {
	lun, stop := openLUN()
	defer stop()

	data := make([]byte, 1024)
	cdb := make([]byte, 10)
	cdb[0] = 0x5e // PERSISTENT RESERVE IN
	cdb[1] = 0x00 // READ KEYS
	binary.BigEndian.PutUint16(cdb[7:9], uint16(len(data)))
	n, err := lun.Execute(context.Background(), cdb, data, nil)
	if err != nil {
		log.Fatal(err)
	}
	generation := binary.BigEndian.Uint32(data[0:4])
	keys := binary.BigEndian.Uint32(data[4:8]) / 8
	fmt.Printf("%d bytes: PRgeneration %d, %d registered keys\n", n, generation, keys)
	// Output: 8 bytes: PRgeneration 0, 0 registered keys
}

// A program that uses several LUNs of a target logs in once and opens each
// LUN on the session; closing the session logs out.
func ExampleLogin() {
	portal, _, stop := startTarget()
	defer stop()
	ctx := context.Background()

	s, err := initiator.Login(ctx, portal, target, initiator.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	numbers, err := s.ReportLUNs(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, n := range numbers {
		lun, err := s.OpenLUN(ctx, n)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("LUN %d: %s %s, %d bytes\n", n, lun.Inquiry.Vendor, lun.Inquiry.Product, lun.Size())
	}
	// Output: LUN 0: FAKE FAKEDISK, 1048576 bytes
}

// Errors are typed: errors.As finds a refused login's *LoginError and a
// SCSI status's *scsi.StatusError with its sense data, and errors.Is
// matches the scsi package's sentinels.
func Example_errors() {
	portal, url, stop := startCHAPTarget("alice", "secret-of-alice")
	defer stop()
	ctx := context.Background()

	// A URL may carry the CHAP user and secret: iscsi://user%secret@host/...
	badURL := "iscsi://alice%not-her-secret@" + portal + "/" + target + "/0"
	_, err := initiator.Open(ctx, badURL, initiator.Config{})
	var le *initiator.LoginError
	if errors.As(err, &le) && le.IsAuthFailure() {
		fmt.Println("login refused: authentication failed")
	}

	cfg := initiator.Config{Credentials: initiator.Credentials{User: "alice", Secret: "secret-of-alice"}}
	lun, err := initiator.Open(ctx, url, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer lun.Close()

	// A command the target does not implement.
	_, err = lun.Execute(ctx, []byte{0xc0, 0, 0, 0, 0, 0}, nil, nil)
	var se *scsi.StatusError
	if errors.As(err, &se) && se.Sense != nil {
		fmt.Println("sense:", se.Sense)
	}
	fmt.Println("invalid opcode:", errors.Is(err, scsi.ErrInvalidOpcode))

	// Reads stop at the end of the LUN with io.EOF, as an os.File's do;
	// writes beyond it are a *RangeError.
	_, err = lun.ReadAt(make([]byte, 512), lun.Size())
	fmt.Println("read at the end:", err == io.EOF)
	_, err = lun.WriteAt(make([]byte, 512), lun.Size())
	var re *initiator.RangeError
	fmt.Println("write at the end:", errors.As(err, &re))
	// Output:
	// login refused: authentication failed
	// sense: ILLEGAL REQUEST: INVALID COMMAND OPERATION CODE (05/20/00)
	// invalid opcode: true
	// read at the end: true
	// write at the end: true
}
