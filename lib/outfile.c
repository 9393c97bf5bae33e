/* outfile.c - all-or-nothing output files (see outfile.h). */
#define _GNU_SOURCE
#include "outfile.h"

#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OUT_BUF (1u << 20)

/* A 1 MiB buffer of our own: glibc ignores setvbuf's size without one and
 * buffers st_blksize (4 KiB on files, pipes and /dev/null), a system call
 * per 4 KiB. Without memory, the default buffer. */
static void big_buffer(struct ipk_outfile *o)
{
	if ((o->buf = malloc(OUT_BUF)) && setvbuf(o->f, o->buf, _IOFBF, OUT_BUF) != 0) {
		free(o->buf);
		o->buf = NULL;
	}
}

/* Close o->f (flushing it) and free its buffer; nonzero on an error. */
static int close_f(struct ipk_outfile *o)
{
	int rc = o->f ? fclose(o->f) : 0;
	o->f = NULL;
	free(o->buf);
	o->buf = NULL;
	return rc;
}

int ipk_outfile_open(struct ipk_outfile *o, const char *path, struct ipk_err *err)
{
	memset(o, 0, sizeof(*o));
	o->path = path;
	if (!strcmp(path, "-")) {
		if (isatty(1))
			return ipk_err_set(err, IPK_EXIT_USAGE, "write binary data to a terminal: refused (use -o FILE or a pipe)");
		/* A stream of its own on a duplicate of descriptor 1, after what
		 * stdout holds: its buffer can be ours and freed at the end. */
		int fd = fflush(stdout) == 0 ? dup(1) : -1;
		if (fd < 0 || !(o->f = fdopen(fd, "w"))) {
			if (fd >= 0)
				close(fd);
			return ipk_err_set(err, IPK_EXIT_IOERR, "write '-': %s", strerror(errno));
		}
		o->direct = 1;
		big_buffer(o);
		return 0;
	}
	struct stat sb;
	if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
		/* A device or FIFO: written in place, never replaced by a rename. */
		if (!(o->f = fopen(path, "w")))
			return ipk_err_set(err, IPK_EXIT_CANTCREAT, "open '%s': %s", path, strerror(errno));
		o->direct = 1;
		big_buffer(o);
		return 0;
	}
	char *d1 = strdup(path), *d2 = strdup(path);
	if (!d1 || !d2 || asprintf(&o->tmp, "%s/.%s.XXXXXX", dirname(d1), basename(d2)) < 0) {
		free(d1);
		free(d2);
		o->tmp = NULL;
		return ipk_err_set(err, IPK_EXIT_OSERR, "write '%s': out of memory", path);
	}
	free(d1);
	free(d2);
	int fd = mkstemp(o->tmp);
	if (fd < 0 || !(o->f = fdopen(fd, "w"))) {
		ipk_err_set(err, IPK_EXIT_CANTCREAT, "create '%s': %s", path, strerror(errno));
		if (fd >= 0) {
			close(fd);
			unlink(o->tmp);
		}
		free(o->tmp);
		o->tmp = NULL;
		return -1;
	}
	big_buffer(o);
	return 0;
}

void ipk_outfile_abort(struct ipk_outfile *o)
{
	close_f(o);
	if (o->tmp) {
		unlink(o->tmp);
		free(o->tmp);
		o->tmp = NULL;
	}
	o->direct = 0;
}

int ipk_outfile_commit(struct ipk_outfile *o, struct ipk_err *err)
{
	if (!o->tmp) {
		int bad = o->f && fflush(o->f) != 0;
		bad |= close_f(o) != 0;
		o->direct = 0;
		if (bad)
			return ipk_err_set(err, IPK_EXIT_IOERR, "write '%s': %s", o->path, strerror(errno));
		return 0;
	}
	int rc = fflush(o->f) || fsync(fileno(o->f));
	rc |= close_f(o);
	if (rc || rename(o->tmp, o->path) != 0) {
		ipk_err_set(err, IPK_EXIT_IOERR, "write '%s': %s", o->path, strerror(errno));
		unlink(o->tmp);
		free(o->tmp);
		o->tmp = NULL;
		return -1;
	}
	free(o->tmp);
	o->tmp = NULL;
	return 0;
}
