/* libFuzzer target: the libvirt save image / QEMU migration stream parser
 * (qemusave.c), the process dump parser and the page model (memimg.c) on
 * arbitrary bytes. Whatever
 * parses must render back to exactly the input bytes. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "memimg.h"
#include "qemusave.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ipk_err err = { 0 };
	/* Give the parser a QEMU stream most of the time: prefix the magic
	 * unless the input already has a libvirt, QEMU or process-dump one. */
	size_t n = size + 8;
	uint8_t *buf = malloc(n);
	if (!buf)
		return 0;
	memcpy(buf, "QEVM\0\0\0\3", 8);
	memcpy(buf + 8, data, size);
	const uint8_t *p = buf;
	if (ipk_qemusave_detect(data, size) || (size >= 8 && !memcmp(data, IPK_PROC_MAGIC, 8))) {
		p = buf + 8;
		n = size;
	}
	struct ipk_memimg *m = ipk_memimg_from_mem(p, n, 0, 0, "fuzz", &err);
	if (m) {
		/* Render back through a pipe-free path: a temporary file. */
		FILE *f = tmpfile();
		if (f) {
			if (ipk_memimg_write(m, fileno(f), &err) == 0) {
				long l = lseek(fileno(f), 0, SEEK_END);
				if (l != (long)n)
					abort();
				uint8_t *back = malloc(n ? n : 1);
				if (pread(fileno(f), back, n, 0) != (ssize_t)n || memcmp(back, p, n))
					abort();
				free(back);
			}
			fclose(f);
		}
		ipk_memimg_free(m);
	}
	free(buf);
	return 0;
}
