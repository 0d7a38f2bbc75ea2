// Package partition reads the partition table of a disk image: an MBR (DOS)
// table with its chain of extended boot records, or a GPT with its protective
// or hybrid MBR. It follows the rules of Linux's block/partitions/{msdos,efi}.c
// and reports partitions the way sfdisk --json does, so a partition found here
// has the number, start and size Linux gives /dev/sdXN.
//
// Numbering: MBR primary and extended partitions are numbered 1 to 4 by their
// slot in the MBR, whether or not the slots before them are used; logical
// partitions are numbered from 5 in the order of the EBR chain (an EBR without
// a data entry takes no number). A GPT entry's number is its index in the
// entries array plus one, so unused entries leave gaps.
//
// Sector size: every LBA and sector count in either table is in units of the
// disk's logical sector size, which the caller passes to Read (the block
// length of READ CAPACITY); a disk with 4096-byte sectors has its GPT header at
// byte 4096. The MBR itself is always the first 512 bytes of the disk.
//
// Read is pure: it does no I/O but through the io.ReaderAt it is given, never
// reads outside the size it is told, and trusts no length or count found on
// the disk (the GPT entries array it reads is at most MaxGPTEntriesBytes, the
// EBR chain at most MaxEBRs records long). A broken table is not an error: Read
// returns what Linux would use and says why in Table.Warnings. Only I/O errors
// of the reader, and arguments out of range, are errors.
//
// Where Linux and sfdisk differ, this package does what sfdisk does in two
// places: a GPT whose primary header or entries are damaged is read from its
// backup (Linux does so only when booted with the "gpt" parameter), and an
// EBR contributes at most one logical partition, its first used entry that is
// not a link (Linux also takes the third and fourth entries that OS/2 wrote).
// Like Linux, and unlike sfdisk, the chains of every extended partition in the
// MBR are followed, not only the first.
package partition
