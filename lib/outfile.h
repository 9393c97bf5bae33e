/* outfile.h - an output file that appears whole or not at all.
 *
 * ipk_outfile_open makes a temporary file (mode 0600) beside path;
 * ipk_outfile_commit flushes, fsyncs and renames it into place;
 * ipk_outfile_abort removes it. path "-" is standard output (refused on a
 * terminal; no all-or-nothing guarantee), and a path that exists and is not a
 * regular file (a device, a FIFO) is written in place.
 *
 * Output goes through a 1 MiB buffer. "-" gets a stream of its own on a
 * duplicate of descriptor 1 (stdout is flushed first).
 *
 * Ownership: the struct lives with the caller; path is borrowed until commit
 * or abort, which release everything else (descriptor 1 stays open).
 */
#ifndef IPK_OUTFILE_H
#define IPK_OUTFILE_H

#include <stdio.h>

#include "ipk.h"

struct ipk_outfile {
	const char *path;
	char *tmp;  /* temporary file, or NULL */
	FILE *f;    /* write here */
	int direct; /* a device or FIFO opened in place, or a duplicate of standard output */
	char *buf;  /* o->f's 1 MiB buffer (malloc'd), or NULL */
};

/* Returns 0 with o->f ready, or -1 with err set (IPK_EXIT_USAGE for a
 * terminal, IPK_EXIT_CANTCREAT, IPK_EXIT_OSERR). */
int ipk_outfile_open(struct ipk_outfile *o, const char *path, struct ipk_err *err);
/* Returns 0, or -1 with err set (IPK_EXIT_IOERR); the temporary file is
 * removed on failure. */
int ipk_outfile_commit(struct ipk_outfile *o, struct ipk_err *err);
/* Discard: remove the temporary file. Safe after a failed open or commit. */
void ipk_outfile_abort(struct ipk_outfile *o);

#endif
