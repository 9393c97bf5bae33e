/* ip-snapshot - capture memory images of libvirt domains and files, and
 * inspect images. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "delta.h"
#include "image.h"
#include "memimg.h"
#include "outfile.h"
#include "record.h"
#include "snapshot.h"

enum { OPT_LIVE = 256, OPT_RAW, OPT_INSPECT, OPT_SESSION, OPT_PID, OPT_PARENT };

static const struct ipk_opt opts[] = {
	{ "output", required_argument, 'o', "FILE", "write the image to FILE; - is stdout (default)" },
	{ "domain", required_argument, 'd', "NAME", "capture the memory of libvirt domain NAME" },
	{ "connect", required_argument, 'c', "URI", "libvirt connection URI (default: libvirt's default)" },
	{ "live", no_argument, OPT_LIVE, NULL, "the domain keeps running (external memory snapshot); default: save, it stops" },
	{ "raw", no_argument, OPT_RAW, NULL, "keep libvirt's save image at --output as it is, not as an ipkit image" },
	{ "file", required_argument, 'f', "PATH", "capture a file or block device" },
	{ "pid", required_argument, OPT_PID, "PID", "capture a process's memory (stopped while read, resumed after)" },
	{ "parent", required_argument, OPT_PARENT, "IMAGE", "with --pid: read only pages written since IMAGE, the last capture" },
	{ "inspect", required_argument, OPT_INSPECT, "IMAGE", "describe IMAGE (a record; a summary on a terminal)" },
	{ "session", required_argument, OPT_SESSION, "NAME", "session named in the record (default: the domain)" },
	{ "threads", required_argument, 'j', "N", "compression threads (default: online CPUs)" },
	{ NULL, 0, 0, NULL, NULL },
};

static const struct ipk_prog prog = {
	.name = "ip-snapshot",
	.synopsis = "[OPTION]... (--domain NAME | --pid PID | --file PATH) | --inspect IMAGE",
	.summary = "Capture the memory of a libvirt domain, a process or a file as an ipkit image, or describe an image.",
	.opts = opts,
};

static const char *kind_name(int kind)
{
	switch (kind) {
	case IPK_MI_QEMU: return "qemu-stream";
	case IPK_MI_LIBVIRT: return "libvirt-save";
	case IPK_MI_PROCESS: return "process";
	default: return "plain";
	}
}

/* The snapshot record, with the counters of the captured content m. */
static cJSON *snapshot_record(const struct ipk_memimg *m, const char *path, const char *source,
			      const char *session)
{
	char id[33];
	ipk_memimg_id_hex(m, id);
	struct ipk_memimg_stats st;
	ipk_memimg_stats(m, &st);
	cJSON *o = ipk_record_new("snapshot", ipk_now());
	cJSON_AddStringToObject(o, "id", id);
	cJSON_AddStringToObject(o, "path", path);
	cJSON_AddStringToObject(o, "source", source);
	if (session)
		cJSON_AddStringToObject(o, "session", session);
	cJSON_AddStringToObject(o, "format", kind_name(ipk_memimg_kind(m)));
	cJSON_AddNumberToObject(o, "bytes", (double)st.bytes);
	cJSON_AddNumberToObject(o, "pages", (double)st.pages);
	cJSON_AddNumberToObject(o, "zero_pages", (double)st.zero_pages);
	cJSON_AddNumberToObject(o, "page_records", (double)st.records);
	cJSON_AddNumberToObject(o, "opaque_bytes", (double)st.opaque_bytes);
	cJSON_AddStringToObject(o, "checksum", id);
	return o;
}

static int write_record(cJSON *o, struct ipk_err *err)
{
	struct ipk_writer w;
	ipk_writer_init(&w, stdout);
	int rc = ipk_write(&w, o, err);
	if (rc == 0)
		rc = ipk_writer_finish(&w, err);
	return rc;
}

static int inspect(const struct ipk_cli *cli, const char *path, struct ipk_err *err)
{
	struct ipk_memimg *raw = ipk_memimg_open(path, err);
	if (!raw)
		return -1;
	size_t len;
	const uint8_t *b = ipk_memimg_bytes(raw, &len);
	char *meta = NULL;
	struct ipk_img_header h = { 0 };
	int is_img = ipk_img_detect(b, len);
	if (is_img && ipk_img_read_meta(b, len, path, &h, &meta, err) < 0) {
		ipk_memimg_free(raw);
		return -1;
	}
	cJSON *o = NULL;
	if (is_img && (h.flags & IPK_IMG_FLAG_DELTA)) {
		/* A delta cannot be decoded without its base: describe its header. */
		char base[33];
		ipk_id_hex(h.base_hi, h.base_lo, base);
		o = ipk_record_new("snapshot", ipk_now());
		cJSON_AddStringToObject(o, "id", "");
		cJSON_AddStringToObject(o, "path", path);
		cJSON_AddStringToObject(o, "source", "");
		cJSON_AddStringToObject(o, "format", "ipkit-delta");
		cJSON_AddStringToObject(o, "base", base);
		if (!(h.flags & IPK_IMG_FLAG_SIZE_AT_END)) /* else known only at its end */
			cJSON_AddNumberToObject(o, "bytes", (double)h.size);
		cJSON_AddNumberToObject(o, "image_bytes", (double)len);
	} else {
		struct ipk_memimg *m = is_img ? ipk_image_open(path, err) : NULL;
		if (is_img && !m) {
			free(meta);
			ipk_memimg_free(raw);
			return -1;
		}
		cJSON *mj = meta ? cJSON_Parse(meta) : NULL;
		char filesrc[4200];
		snprintf(filesrc, sizeof(filesrc), "file:%s", path); /* as a capture of it would say */
		const char *source = ipk_json_str(mj, "source", is_img ? "" : filesrc);
		o = snapshot_record(m ? m : raw, path, source, ipk_json_str(mj, "session", NULL));
		if (mj && cJSON_GetObjectItem(mj, "live"))
			cJSON_AddBoolToObject(o, "live", cJSON_IsTrue(cJSON_GetObjectItem(mj, "live")));
		if (mj && cJSON_IsString(cJSON_GetObjectItem(mj, "parent")))
			cJSON_AddStringToObject(o, "parent", cJSON_GetObjectItem(mj, "parent")->valuestring);
		if (mj && cJSON_IsString(cJSON_GetObjectItem(mj, "captured")))
			cJSON_AddStringToObject(o, "captured", cJSON_GetObjectItem(mj, "captured")->valuestring);
		cJSON_AddStringToObject(o, "container", is_img ? "ipkit-image" : "none");
		cJSON_AddNumberToObject(o, "image_bytes", (double)len);
		cJSON_AddBoolToObject(o, "verified", is_img); /* decoding checked every checksum */
		cJSON_Delete(mj);
		ipk_memimg_free(m);
	}
	free(meta);
	ipk_memimg_free(raw);
	int rc;
	if (isatty(1)) {
		/* A readable summary: one "field: value" line each. */
		for (cJSON *it = o->child; it; it = it->next) {
			if (cJSON_IsString(it))
				printf("%-14s %s\n", it->string, it->valuestring);
			else if (cJSON_IsBool(it))
				printf("%-14s %s\n", it->string, cJSON_IsTrue(it) ? "yes" : "no");
			else if (cJSON_IsNumber(it))
				printf("%-14s %.0f\n", it->string, it->valuedouble);
		}
		rc = fflush(stdout) ? ipk_err_set(err, IPK_EXIT_IOERR, "write stdout: %s", strerror(errno)) : 0;
	} else {
		rc = write_record(o, err);
	}
	(void)cli;
	cJSON_Delete(o);
	return rc;
}

static int cmd_snapshot(int argc, char **argv)
{
	struct ipk_cli cli;
	struct ipk_err err = { 0 };
	int status = IPK_EXIT_OK, live = 0, raw = 0;
	long pid = 0;
	const char *parent_path = NULL;
	struct ipk_memimg *parent = NULL;
	const char *output = "-", *domain = NULL, *uri = NULL, *file = NULL, *insp = NULL, *session = NULL;
	struct ipk_delta_opts dopts = { .threads = (int)sysconf(_SC_NPROCESSORS_ONLN), .acceleration = 1 };
	struct ipk_memimg *m = NULL;
	struct ipk_outfile out = { 0 };
	char *tmpdir = NULL, *tmpimg = NULL, *meta = NULL;

	if (ipk_cli_init(&cli, &prog, argc, argv) < 0) {
		status = ipk_fail(&cli, &cli.err);
		goto done;
	}
	int c;
	long lv;
	const char *capture_opt = NULL; /* a capture option on the command line: --inspect refuses it */
	while ((c = ipk_cli_next(&cli)) >= 0) {
		int bad = 0;
		char where[512];
		if (!ipk_cli_origin(&cli, where, sizeof(where)) && (c == 'o' || c == OPT_SESSION || c == 'j'))
			capture_opt = c == 'o' ? "--output" : c == 'j' ? "--threads" : "--session";
		switch (c) {
		case 'o': output = cli.optarg; break;
		case 'd': domain = cli.optarg; break;
		case 'c': uri = cli.optarg; break;
		case OPT_LIVE: live = 1; break;
		case OPT_RAW: raw = 1; break;
		case 'f': file = cli.optarg; break;
		case OPT_PARENT: parent_path = cli.optarg; break;
		case OPT_PID: bad = ipk_parse_long(&cli, "pid", cli.optarg, 1, INT_MAX, &pid); break;
		case OPT_INSPECT: insp = cli.optarg; break;
		case OPT_SESSION: session = cli.optarg; break;
		case 'j':
			bad = ipk_parse_long(&cli, "threads", cli.optarg, 1, 64, &lv);
			dopts.threads = (int)lv;
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
	if (cli.optind < argc) {
		status = (ipk_cli_usage_error(&cli, "unexpected argument '%s'", argv[cli.optind]), IPK_EXIT_USAGE);
		goto done;
	}
	if (!!domain + !!file + !!insp + !!pid != 1) {
		status = (ipk_cli_usage_error(&cli, "give one of --domain, --pid, --file or --inspect"), IPK_EXIT_USAGE);
		goto done;
	}
	if (insp && capture_opt) {
		status = (ipk_cli_usage_error(&cli, "--inspect writes its record to standard output and takes no %s",
					      capture_opt), IPK_EXIT_USAGE);
		goto done;
	}
	if (parent_path && !pid) {
		status = (ipk_cli_usage_error(&cli, "--parent goes with --pid"), IPK_EXIT_USAGE);
		goto done;
	}
	if ((live || raw || uri) && !domain) {
		status = (ipk_cli_usage_error(&cli, "--live, --raw and --connect go with --domain"), IPK_EXIT_USAGE);
		goto done;
	}
	if (raw && (!strcmp(output, "-") || output[0] != '/')) {
		status = (ipk_cli_usage_error(&cli, "--raw needs an absolute --output path (libvirt writes it)"),
			  IPK_EXIT_USAGE);
		goto done;
	}
	signal(SIGPIPE, SIG_IGN);
	if (insp) {
		if (inspect(&cli, insp, &err) < 0)
			goto fail;
		goto done;
	}

	/* The output first: a path that cannot be written is found before a
	 * guest is saved or a process stopped. */
	if (!raw && ipk_outfile_open(&out, output, &err) < 0)
		goto fail;
	double t0 = ipk_mono(), t_capture = 0;
	struct ipk_snap_proc_stats ps = { 0 };
	char source[1024];
	char untrusted[200] = ""; /* --live where live images can miss writes: why */
	if (domain) {
		/* libvirt writes the save image: at --output with --raw, else in a
		 * fresh directory beside the output (or in TMPDIR for stdout). */
		const char *img = output;
		if (!raw) {
			char *o2 = strdup(output);
			const char *dir = strcmp(output, "-") ? dirname(o2) : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
			char *abs = realpath(dir, NULL);
			free(o2);
			if (!abs || asprintf(&tmpdir, "%s/.ipkit-snapshot.XXXXXX", abs) < 0 || !mkdtemp(tmpdir) ||
			    asprintf(&tmpimg, "%s/memory.save", tmpdir) < 0) {
				ipk_err_set(&err, IPK_EXIT_CANTCREAT, "create a temporary directory beside '%s': %s", output,
					    strerror(errno));
				free(abs);
				if (tmpdir && access(tmpdir, F_OK) != 0) {
					free(tmpdir);
					tmpdir = NULL;
				}
				goto fail;
			}
			free(abs);
			img = tmpimg;
		}
		struct ipk_snap_libvirt so = { .uri = uri, .domain = domain, .path = img, .live = live };
		int trusted = live ? ipk_live_capture_check(uri, domain, untrusted, sizeof(untrusted), &err) : 1;
		if (trusted < 0 || ipk_snapshot_libvirt(&so, &err) < 0)
			goto fail;
		if (trusted)
			untrusted[0] = 0;
		else
			ipk_warn(&cli, "'%s': %s: this image may hold stale pages; use it as a delta base "
				       "(ip-migrate --precopy), not to restore the guest from", domain, untrusted);
		t_capture = ipk_mono() - t0;
		ipk_info(&cli, "libvirt wrote %s in %.3f s", img, t_capture);
		snprintf(source, sizeof(source), "libvirt:%s#%s", uri ? uri : "", domain);
		if (!(m = ipk_memimg_open(img, &err)))
			goto fail;
		if (!session)
			session = domain;
	} else if (pid) {
		snprintf(source, sizeof(source), "pid:%ld", pid);
		char *dump = NULL;
		size_t dlen = 0;
		FILE *df = open_memstream(&dump, &dlen);
		if (!df) {
			ipk_err_set(&err, IPK_EXIT_OSERR, "capture process %ld: out of memory", pid);
			goto fail;
		}
		if (parent_path && !(parent = ipk_image_open(parent_path, &err))) {
			fclose(df);
			free(dump);
			goto fail;
		}
		int crc = ipk_snapshot_process((int)pid, parent, df, &ps, &err);
		fclose(df);
		if (crc < 0) {
			free(dump);
			goto fail;
		}
		t_capture = ipk_mono() - t0;
		if (parent && !ps.tracking)
			ipk_warn(&cli, "this kernel does not track soft-dirty pages: every page was read");
		ipk_info(&cli, "process %ld: %d threads stopped %.3f s, %llu pages, %llu unreadable", pid, ps.threads,
			 ps.stopped_s, (unsigned long long)ps.pages, (unsigned long long)ps.unreadable);
		if (!(m = ipk_memimg_from_mem(dump, dlen, 1, IPK_MI_PROCESS, source, &err)))
			goto fail;
	} else {
		snprintf(source, sizeof(source), "file:%s", file);
		if (!(m = ipk_memimg_open(file, &err)))
			goto fail;
		t_capture = ipk_mono() - t0;
	}

	double t1 = ipk_mono();
	char parent_hex[33] = ""; /* the parent image's id */
	if (parent)
		ipk_memimg_id_hex(parent, parent_hex);
	cJSON *mj = cJSON_CreateObject();
	cJSON_AddStringToObject(mj, "source", source);
	if (session)
		cJSON_AddStringToObject(mj, "session", session);
	if (domain)
		cJSON_AddBoolToObject(mj, "live", live);
	if (parent)
		cJSON_AddStringToObject(mj, "parent", parent_hex);
	char when[32];
	snprintf(when, sizeof(when), "%.3f", ipk_now());
	cJSON_AddStringToObject(mj, "captured", when);
	meta = cJSON_PrintUnformatted(mj);
	cJSON_Delete(mj);
	dopts.meta = meta;
	dopts.out_name = strcmp(output, "-") ? output : NULL;
	struct ipk_delta_stats st = { 0 };
	if (!raw) {
		if (ipk_delta_encode(NULL, m, out.f, &dopts, &st, &err) < 0 || ipk_outfile_commit(&out, &err) < 0)
			goto fail;
	}
	cJSON *o = snapshot_record(m, output, source, session);
	if (domain)
		cJSON_AddBoolToObject(o, "live", live);
	if (untrusted[0])
		cJSON_AddStringToObject(o, "capture_untrusted", untrusted);
	size_t rawlen;
	ipk_memimg_bytes(m, &rawlen);
	cJSON_AddNumberToObject(o, "image_bytes", raw ? (double)rawlen : (double)st.bytes_out);
	cJSON *s = cJSON_AddObjectToObject(o, "seconds");
	cJSON_AddNumberToObject(s, "capture", t_capture);
	if (pid) {
		cJSON_AddNumberToObject(s, "stopped", ps.stopped_s);
		cJSON_AddNumberToObject(o, "threads", ps.threads);
		cJSON_AddNumberToObject(o, "unreadable_pages", (double)ps.unreadable);
		cJSON_AddNumberToObject(o, "pages_read", (double)ps.pages_read);
		cJSON_AddNumberToObject(o, "pages_parent", (double)ps.pages_parent);
		cJSON_AddBoolToObject(o, "tracking", ps.tracking);
		if (parent)
			cJSON_AddStringToObject(o, "parent", parent_hex);
	}
	cJSON_AddNumberToObject(s, "encode", ipk_mono() - t1);
	cJSON_AddNumberToObject(s, "total", ipk_mono() - t0);
	/* The record goes to stdout unless the image does. */
	int rc = strcmp(output, "-") ? write_record(o, &err) : 0;
	cJSON_Delete(o);
	if (rc < 0)
		goto fail;
	goto done;
fail:
	ipk_outfile_abort(&out);
	status = ipk_fail(&cli, &err);
done:
	ipk_memimg_free(m);
	ipk_memimg_free(parent);
	if (tmpimg)
		unlink(tmpimg);
	if (tmpdir)
		rmdir(tmpdir);
	free(tmpimg);
	free(tmpdir);
	free(meta);
	ipk_cli_free(&cli);
	return status;
}

int main(int argc, char **argv)
{
	return cmd_snapshot(argc, argv);
}
