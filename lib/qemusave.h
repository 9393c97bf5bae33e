/* qemusave.h - libvirt save images and QEMU migration streams, by guest page.
 *
 * ipk_qemusave_parse reads the bytes of a memory image (see memimg.h) as a
 * libvirt save image ("LibvirtQemudSave" header, domain XML, QEMU stream) or
 * as a bare QEMU migration stream, and fills the image's items: every RAM
 * page record becomes a page item addressed by (block, offset), every other
 * byte (headers, XML, configuration, section framing, the RAM block list,
 * device state, the stream's end) stays as opaque items, so that writing the
 * items back gives the input byte for byte.
 *
 * What it relies on (QEMU 7.2, migration/savevm.c and migration/ram.c):
 *  - the stream starts with be32 QEMU_VM_FILE_MAGIC 0x5145564d and be32
 *    version 3, then an optional configuration section (0x07, be32 length,
 *    machine name, subsections);
 *  - a section starts with a type byte: START 0x01 / FULL 0x04 carry be32
 *    section id, a length-prefixed idstr, be32 instance and be32 version;
 *    PART 0x02 / END 0x03 carry only the be32 section id; a section may be
 *    followed by a footer 0x7e + be32 section id;
 *  - the "ram" section's body is a sequence of records, each a be64 word
 *    (offset in the RAM block | flags in the low 12 bits): 0x04 the block list
 *    (total size, then per block: length byte, idstr, be64 used length;
 *    precopy without postcopy or x-ignore-shared, which add fields), 0x02 a
 *    zero page followed by one fill byte, 0x08 a full page followed by 4096
 *    bytes, 0x10 end of the section's records; 0x20 on a page record means
 *    "same block as the previous record", otherwise the block's idstr
 *    follows the word. The current block carries over from one section to
 *    the next, as in QEMU's loader;
 *  - RAM records come in the ram section's START, PART and END sections,
 *    before device state (FULL sections) and the EOF byte;
 *  - a command record (0x08, be16 command, be16 length, data) may come
 *    between them: QEMU 10 sends its switchover-start (command 11, no data)
 *    before the last RAM part; it is kept as opaque bytes.
 * Also checked against QEMU 10.0 (Debian's bookworm-backports).
 * Compressed save images, XBZRLE, compressed pages, multifd and RDMA records
 * are refused (IPK_EXIT_DATAERR). Anything after the first section that is
 * not part of "ram" is kept as opaque bytes without being interpreted.
 */
#ifndef IPK_QEMUSAVE_H
#define IPK_QEMUSAVE_H

#include <stddef.h>
#include <stdint.h>

#include "ipk.h"
#include "memimg.h"

#define IPK_QEMU_MAGIC 0x5145564du
#define IPK_LIBVIRT_MAGIC "LibvirtQemudSave"
#define IPK_LIBVIRT_MAGIC_PARTIAL "LibvirtQemudPart"
#define IPK_LIBVIRT_HEADER_LEN 92u

/* RAM record flags (migration/ram.c). */
enum {
	IPK_RAM_ZERO = 0x02,
	IPK_RAM_MEM_SIZE = 0x04,
	IPK_RAM_PAGE = 0x08,
	IPK_RAM_EOS = 0x10,
	IPK_RAM_CONTINUE = 0x20,
};

/* Does the content look like a libvirt save image / a QEMU stream? Return
 * IPK_MI_LIBVIRT, IPK_MI_QEMU or 0. */
int ipk_qemusave_detect(const uint8_t *buf, size_t len);

/* 1 when the file at fd starts with the complete libvirt magic: libvirt
 * rewrites "LibvirtQemudPart" to "LibvirtQemudSave" as the last step of
 * writing a save image or memory snapshot. 0 otherwise (also on errors). */
int ipk_qemusave_libvirt_complete(int fd);

/* Parse the image's bytes (ipk_memimg_bytes) into its items and block table.
 * Returns 0, or -1 with err set (IPK_EXIT_DATAERR: "bad QEMU stream 'NAME':
 * reason at offset N", IPK_EXIT_OSERR). */
int ipk_qemusave_parse(struct ipk_memimg *m, struct ipk_err *err);

#endif
