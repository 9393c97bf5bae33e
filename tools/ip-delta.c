/* ip-delta - deltas between memory images (zstd page batches or LZ4 pages), and their application. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "delta.h"
#include "image.h"
#include "memimg.h"
#include "outfile.h"
#include "record.h"

enum { OPT_IMAGE = 256, OPT_NO_XOR, OPT_ACCEL, OPT_RECORD, OPT_NO_DICT, OPT_NO_CDC, OPT_CODEC, OPT_LEVEL };

static const struct ipk_opt opts[] = {
	{ "output", required_argument, 'o', "FILE", "write the delta (or with --apply the content) to FILE; - is stdout (default)" },
	{ "apply", no_argument, 'a', NULL, "apply: BASE DELTA... reconstructs the content, deltas applied in order" },
	{ "image", no_argument, OPT_IMAGE, NULL, "no base: encode NEW as an ipkit image, or with --apply decode an image" },
	{ "threads", required_argument, 'j', "N", "encoding threads (default: online CPUs)" },
	{ "codec", required_argument, OPT_CODEC, "NAME", "zstd (page batches, default with a base) or lz4 (per page, default for --image)" },
	{ "level", required_argument, OPT_LEVEL, "N", "zstd level, -7 to 9 (default 3)" },
	{ "no-xor", no_argument, OPT_NO_XOR, NULL, "lz4: never code a page as LZ4 of its XOR with the base page" },
	{ "no-dict", no_argument, OPT_NO_DICT, NULL, "lz4: never code a page as LZ4 with the base page as dictionary" },
	{ "no-cdc", no_argument, OPT_NO_CDC, NULL, "plain files: never code by content-defined chunks found in the base" },
	{ "acceleration", required_argument, OPT_ACCEL, "N", "lz4: LZ4 acceleration, 1 (default, smallest) to 65537" },
	{ "record", required_argument, OPT_RECORD, "FILE", "write the delta record to FILE (default: stdout unless the data goes there)" },
	{ NULL, 0, 0, NULL, NULL },
};

static const struct ipk_prog prog = {
	.name = "ip-delta",
	.synopsis = "[OPTION]... BASE NEW | --apply [OPTION]... BASE DELTA... | --image [--apply] [OPTION]... FILE",
	.summary = "Encode what a memory image has that its base has not as a delta (zstd or LZ4), or apply such deltas.",
	.opts = opts,
};

/* Apply one delta (path, "-" stdin) to base into memory; returns the result. */
static struct ipk_memimg *apply_to_memory(const struct ipk_memimg *base, const char *path, struct ipk_delta_stats *st,
					  struct ipk_err *err)
{
	FILE *in = strcmp(path, "-") ? fopen(path, "r") : stdin;
	if (!in) {
		ipk_err_set(err, errno == ENOENT ? IPK_EXIT_NOINPUT : IPK_EXIT_IOERR, "open delta '%s': %s", path,
			    strerror(errno));
		return NULL;
	}
	/* Into an unlinked temporary file, then mapped: chains never hold a
	 * whole intermediate image in memory. */
	int tfd = ipk_memimg_tmpfile(path, err), dfd = tfd >= 0 ? dup(tfd) : -1;
	FILE *tmp = dfd >= 0 ? fdopen(dfd, "w") : NULL;
	int rc = -1;
	if (tfd >= 0 && !tmp)
		ipk_err_set(err, IPK_EXIT_OSERR, "apply delta '%s': %s", path, strerror(errno));
	if (tmp)
		rc = ipk_delta_apply_only(base, in, path, tmp, st, err);
	if (tmp && fclose(tmp) != 0 && rc == 0)
		rc = ipk_err_set(err, IPK_EXIT_IOERR, "apply delta '%s': write: %s", path, strerror(errno));
	else if (!tmp && dfd >= 0)
		close(dfd);
	if (in != stdin)
		fclose(in);
	struct ipk_memimg *m = rc < 0 ? NULL : ipk_memimg_map(tfd, 0, path, err);
	if (tfd >= 0)
		close(tfd);
	return m;
}

/* Open BASE in a second thread while the caller opens NEW: both parse and
 * hash their whole input, one core each. */
struct opener {
	const char *path;
	int flags;
	struct ipk_memimg *m;
	struct ipk_err err;
};

static void *open_thread(void *arg)
{
	struct opener *o = arg;
	o->m = ipk_image_open_flags(o->path, o->flags, &o->err);
	return NULL;
}

static int open_pair(const char *bpath, const char *npath, int flags, struct ipk_memimg **base,
		     struct ipk_memimg **cur, struct ipk_err *err)
{
	struct opener ob = { .path = bpath, .flags = flags };
	pthread_t t;
	int threaded = pthread_create(&t, NULL, open_thread, &ob) == 0;
	if (!threaded)
		open_thread(&ob);
	*cur = ipk_image_open_flags(npath, flags, err);
	if (threaded)
		pthread_join(t, NULL);
	*base = ob.m;
	if (!ob.m) {
		*err = ob.err;
		return -1;
	}
	return *cur ? 0 : -1;
}

/* Write the delta record to f (stdout, or the --record file opened before
 * any work, so that a record file that cannot be opened stops the run
 * before the output exists). */
static int emit_record(FILE *f, const char *mode, const char *base_id, const char *new_id, const char *path,
		       const struct ipk_delta_stats *st, int threads, double secs_read, double secs_total,
		       struct ipk_err *err)
{
	cJSON *o = ipk_record_new("delta", ipk_now());
	cJSON_AddStringToObject(o, "mode", mode);
	cJSON_AddStringToObject(o, "base", base_id);
	cJSON_AddStringToObject(o, "new", new_id);
	cJSON_AddStringToObject(o, "path", path);
	cJSON_AddNumberToObject(o, "bytes_in", (double)st->bytes_in);
	cJSON_AddNumberToObject(o, "bytes_out", (double)st->bytes_out);
	if (!strcmp(mode, "encode")) {
		cJSON_AddNumberToObject(o, "pages", (double)st->pages);
		cJSON_AddNumberToObject(o, "pages_changed",
					(double)(st->pages_lz4 + st->pages_xor + st->pages_dict + st->pages_zstd));
		cJSON_AddNumberToObject(o, "pages_zstd", (double)st->pages_zstd);
		cJSON_AddNumberToObject(o, "zstd_batches", (double)st->zbatches);
		cJSON_AddNumberToObject(o, "zstd_map_bytes", (double)st->zmap_bytes);
		cJSON_AddNumberToObject(o, "pages_new", (double)st->pages_new);
		cJSON_AddNumberToObject(o, "pages_removed", (double)st->pages_removed);
		cJSON_AddNumberToObject(o, "pages_xor", (double)st->pages_xor);
		cJSON_AddNumberToObject(o, "pages_dict", (double)st->pages_dict);
		if (st->cdc_chunks) {
			cJSON_AddNumberToObject(o, "cdc_chunks", (double)st->cdc_chunks);
			cJSON_AddNumberToObject(o, "cdc_copied", (double)st->cdc_copied);
			cJSON_AddNumberToObject(o, "cdc_copied_bytes", (double)st->cdc_copied_bytes);
		}
		cJSON_AddNumberToObject(o, "pages_zero", (double)st->pages_zero);
		cJSON_AddNumberToObject(o, "pages_same", (double)st->pages_same);
		cJSON_AddNumberToObject(o, "opaque_bytes", (double)st->opaque_bytes);
		cJSON_AddNumberToObject(o, "threads", threads);
	}
	cJSON *s = cJSON_AddObjectToObject(o, "seconds");
	cJSON_AddNumberToObject(s, "read", secs_read);
	if (!strcmp(mode, "encode")) {
		cJSON_AddNumberToObject(s, "encode", st->t_encode);
		cJSON_AddNumberToObject(s, "write", st->t_write);
		cJSON_AddNumberToObject(s, "cpu_main", st->cpu_main);
		cJSON_AddNumberToObject(s, "cpu_helpers", st->cpu_helpers);
		cJSON_AddNumberToObject(o, "batches_main", (double)st->batches_main);
		cJSON_AddNumberToObject(o, "batches_helpers", (double)st->batches_helpers);
	} else {
		cJSON_AddNumberToObject(s, "apply", st->t_encode);
	}
	cJSON_AddNumberToObject(s, "total", secs_total);
	struct ipk_writer w;
	ipk_writer_init(&w, f);
	int rc = ipk_write(&w, o, err);
	if (rc == 0)
		rc = ipk_writer_finish(&w, err);
	cJSON_Delete(o);
	return rc;
}

static int cmd_delta(int argc, char **argv)
{
	struct ipk_cli cli;
	struct ipk_err err = { 0 };
	int status = IPK_EXIT_OK, apply = 0, image = 0;
	const char *output = "-", *record = NULL;
	FILE *recf = NULL; /* where the record goes: stdout, the --record file, or nowhere */
	int rec_created = 0;
	struct ipk_delta_opts dopts = { .threads = (int)sysconf(_SC_NPROCESSORS_ONLN), .acceleration = 1 };
	struct ipk_memimg *base = NULL, *cur = NULL;
	struct ipk_outfile out = { 0 };

	if (ipk_cli_init(&cli, &prog, argc, argv) < 0) {
		status = ipk_fail(&cli, &cli.err);
		goto done;
	}
	int c;
	long lv;
	while ((c = ipk_cli_next(&cli)) >= 0) {
		int bad = 0;
		switch (c) {
		case 'o': output = cli.optarg; break;
		case 'a': apply = 1; break;
		case OPT_IMAGE: image = 1; break;
		case OPT_NO_XOR: dopts.no_xor = 1; break;
		case OPT_NO_DICT: dopts.no_dict = 1; break;
		case OPT_NO_CDC: dopts.no_cdc = 1; break;
		case OPT_CODEC:
			if (!strcmp(cli.optarg, "zstd"))
				dopts.codec = IPK_DELTA_CODEC_ZSTD;
			else if (!strcmp(cli.optarg, "lz4"))
				dopts.codec = IPK_DELTA_CODEC_LZ4;
			else
				bad = ipk_cli_usage_error(&cli, "bad codec '%s': zstd or lz4", cli.optarg);
			break;
		case OPT_LEVEL:
			bad = ipk_parse_long(&cli, "level", cli.optarg, -7, 9, &lv);
			dopts.zlevel = (int)lv;
			break;
		case OPT_RECORD: record = cli.optarg; break;
		case 'j':
			bad = ipk_parse_long(&cli, "threads", cli.optarg, 1, 64, &lv);
			dopts.threads = (int)lv;
			break;
		case OPT_ACCEL:
			bad = ipk_parse_long(&cli, "acceleration", cli.optarg, 1, 65537, &lv);
			dopts.acceleration = (int)lv;
			break;
		}
		if (bad) {
			status = cli.status ? cli.status : IPK_EXIT_USAGE;
			goto done;
		}
	}
	if (c == IPK_CLI_EXIT) {
		status = cli.status;
		goto done;
	}
	int nops = argc - cli.optind;
	char **ops = argv + cli.optind;
	if (image ? nops != 1 : apply ? nops < 2 : nops != 2) {
		status = (ipk_cli_usage_error(&cli, "%s", image ? "--image takes one FILE" :
							  apply ? "--apply takes BASE and at least one DELTA" :
								  "give BASE and NEW"),
			  IPK_EXIT_USAGE);
		goto done;
	}
	int stdin_uses = 0;
	for (int i = 0; i < nops; i++)
		stdin_uses += !strcmp(ops[i], "-");
	if (stdin_uses > 1) {
		status = (ipk_cli_usage_error(&cli, "only one operand can be - (stdin)"), IPK_EXIT_USAGE);
		goto done;
	}
	if (!record)
		record = strcmp(output, "-") ? "-" : NULL;
	else if (!strcmp(record, "-") && !strcmp(output, "-")) {
		status = (ipk_cli_usage_error(&cli, "--record - and -o - would both write to stdout"), IPK_EXIT_USAGE);
		goto done;
	}
	/* a record file this run creates is removed again if the run fails */
	rec_created = record && strcmp(record, "-") && access(record, F_OK) != 0;
	if (record && strcmp(record, "-") && !(recf = fopen(record, "a"))) {
		ipk_err_set(&err, IPK_EXIT_CANTCREAT, "open record file '%s': %s", record, strerror(errno));
		goto fail;
	}
	if (record && !recf)
		recf = stdout;
	signal(SIGPIPE, SIG_IGN);
	double t0 = ipk_mono();
	struct ipk_delta_stats st;
	char base_id[33] = "", new_id[33] = "";
	/* the output first: an unwritable path is found before any input is
	 * read */
	if (ipk_outfile_open(&out, output, &err) < 0)
		goto fail;

	if (!apply) {
		/* Encode NEW (ops[last]) against BASE, or as an image. The
		 * zstd codec compares pages byte by byte: no page hashes. */
		int zflags = dopts.codec != IPK_DELTA_CODEC_LZ4 ? IPK_MI_NOHASH : 0;
		dopts.out_name = strcmp(output, "-") ? output : NULL;
		if (image ? !(cur = ipk_image_open(ops[0], &err)) : open_pair(ops[0], ops[1], zflags, &base, &cur, &err) < 0)
			goto fail;
		double t_read = ipk_mono() - t0;
		ipk_info(&cli, "read %s in %.3f s", ops[nops - 1], t_read);
		if (ipk_delta_encode(base, cur, out.f, &dopts, &st, &err) < 0 || ipk_outfile_commit(&out, &err) < 0)
			goto fail;
		if (base)
			ipk_memimg_id_hex(base, base_id);
		ipk_memimg_id_hex(cur, new_id);
		if (recf && emit_record(recf, "encode", base_id, new_id, output, &st, dopts.threads, t_read,
					  ipk_mono() - t0, &err) < 0)
			goto fail;
		goto done;
	}

	/* Apply: BASE D1 D2 ... (or --image IMAGE): all but the last delta in
	 * memory, the last into OUT through a temporary file. */
	int first = 0;
	if (!image) {
		/* Apply never needs the base's page hashes: it checks the
		 * base's identity and the pages it decodes. */
		if (!(base = ipk_image_open_flags(ops[0], IPK_MI_NOHASH, &err)))
			goto fail;
		ipk_memimg_id_hex(base, base_id);
		first = 1;
	}
	double t_read = ipk_mono() - t0;
	for (int i = first; i < nops - 1; i++) {
		struct ipk_memimg *next = apply_to_memory(base, ops[i], &st, &err);
		if (!next)
			goto fail;
		ipk_memimg_free(base);
		base = next;
	}
	FILE *in = strcmp(ops[nops - 1], "-") ? fopen(ops[nops - 1], "r") : stdin;
	if (!in) {
		ipk_err_set(&err, errno == ENOENT ? IPK_EXIT_NOINPUT : IPK_EXIT_IOERR, "open delta '%s': %s",
			    ops[nops - 1], strerror(errno));
		goto fail;
	}
	/* A large input buffer: records are small (glibc ignores setvbuf's
	 * size without a buffer given). The output (outfile.h) has one too. */
	char *inbuf = in != stdin ? malloc(1 << 20) : NULL;
	if (inbuf)
		setvbuf(in, inbuf, _IOFBF, 1 << 20);
	int rc = (base ? ipk_delta_apply_only : ipk_delta_apply)(base, in, ops[nops - 1], out.f, &st, &err);
	if (rc == 0)
		rc = ipk_outfile_commit(&out, &err);
	if (in != stdin)
		fclose(in);
	free(inbuf);
	if (rc < 0)
		goto fail;
	if (recf) {
		/* The content's id: its XXH3-128, as verified by the apply. */
		ipk_id_hex(st.id_hi, st.id_lo, new_id);
		if (emit_record(recf, "apply", base_id, new_id, output, &st, 1, t_read, ipk_mono() - t0, &err) < 0)
			goto fail;
	}
	goto done;
fail:
	ipk_outfile_abort(&out);
	status = ipk_fail(&cli, &err);
done:
	if (recf && recf != stdout && fclose(recf) != 0 && status == IPK_EXIT_OK) {
		ipk_err_set(&err, IPK_EXIT_IOERR, "write record file '%s': %s", record, strerror(errno));
		status = ipk_fail(&cli, &err);
	}
	if (recf && recf != stdout && rec_created && status != IPK_EXIT_OK)
		unlink(record);
	ipk_memimg_free(base);
	ipk_memimg_free(cur);
	ipk_cli_free(&cli);
	return status;
}

int main(int argc, char **argv)
{
	return cmd_delta(argc, argv);
}
