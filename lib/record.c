#define _GNU_SOURCE
#include "record.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct ipk_reader {
	FILE *f;
	int owned;
	char *name;
	char *buf;
	size_t cap;
	long lineno;
	long bad;
	cJSON *json;
};

/* Required fields of the known record types; see ipkit-records(7).
 * 's' string, 'n' number, 'i' integer 0..2^31-1, 'o' object, 'b' boolean,
 * '*' any. */
struct field_req {
	const char *name;
	char kind;
};
struct type_schema {
	const char *type;
	struct field_req fields[8];
};

static const struct type_schema schemas[] = {
	{ "sample", { { "session", 's' }, { "interval", 'n' } } },
	{ "prediction", { { "session", 's' }, { "p", 'o' }, { "idle_s", 'n' }, { "threshold", 'n' }, { "decision", 's' }, { "model", 's' } } },
	{ "reservation", { { "session", 's' }, { "host", 's' }, { "state", 's' } } },
	{ "snapshot", { { "id", 's' }, { "path", 's' }, { "source", 's' } } },
	{ "delta", { { "base", 's' }, { "new", 's' }, { "bytes_in", 'n' }, { "bytes_out", 'n' } } },
	{ "migration", { { "session", 's' }, { "from", 's' }, { "to", 's' }, { "outcome", 's' } } },
	{ "gpucheck", { { "status", 's' } } },
	{ "redirect", { { "session", 's' }, { "driver", 's' }, { "to", 's' }, { "confirmed", 'b' } } },
	{ "error", { { "program", 's' }, { "message", 's' } } },
};

struct ipk_reader *ipk_reader_from(FILE *f, const char *name)
{
	struct ipk_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->f = f;
	r->name = strdup(name);
	if (!r->name) {
		free(r);
		return NULL;
	}
	return r;
}

struct ipk_reader *ipk_reader_open(const char *path, struct ipk_err *err)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (!f) {
		ipk_err_set(err, IPK_EXIT_NOINPUT, "cannot open input '%s': %s", path, strerror(errno));
		return NULL;
	}
	struct ipk_reader *r = ipk_reader_from(f, strcmp(path, "-") == 0 ? "<stdin>" : path);
	if (!r) {
		if (f != stdin)
			fclose(f);
		ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		return NULL;
	}
	r->owned = f != stdin;
	return r;
}

static int kind_ok(const cJSON *item, char kind)
{
	switch (kind) {
	case 's':
		return cJSON_IsString(item);
	case 'n':
		return cJSON_IsNumber(item) && isfinite(item->valuedouble);
	case 'i':
		return cJSON_IsNumber(item) && item->valuedouble >= 0 && item->valuedouble <= 2147483647.0 &&
		       item->valuedouble == floor(item->valuedouble);
	case 'o':
		return cJSON_IsObject(item);
	case 'b':
		return cJSON_IsBool(item);
	default:
		return item != NULL;
	}
}

static const char *kind_name(char kind)
{
	switch (kind) {
	case 's':
		return "a string";
	case 'n':
		return "a number";
	case 'i':
		return "a non-negative integer";
	case 'o':
		return "an object";
	case 'b':
		return "true or false";
	default:
		return "present";
	}
}

int ipk_record_validate(const cJSON *obj, struct ipk_err *err)
{
	if (!cJSON_IsObject(obj))
		return ipk_err_set(err, IPK_EXIT_DATAERR, "not a JSON object");
	static const struct field_req common[] = { { "type", 's' }, { "v", 'i' }, { "ts", 'n' } };
	for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++) {
		const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, common[i].name);
		if (!it)
			return ipk_err_set(err, IPK_EXIT_DATAERR, "missing field '%s'", common[i].name);
		if (!kind_ok(it, common[i].kind))
			return ipk_err_set(err, IPK_EXIT_DATAERR, "field '%s' must be %s", common[i].name, kind_name(common[i].kind));
	}
	const char *type = cJSON_GetObjectItemCaseSensitive(obj, "type")->valuestring;
	for (size_t s = 0; s < sizeof(schemas) / sizeof(schemas[0]); s++) {
		if (strcmp(schemas[s].type, type) != 0)
			continue;
		for (const struct field_req *fr = schemas[s].fields; fr->name; fr++) {
			const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, fr->name);
			if (!it)
				return ipk_err_set(err, IPK_EXIT_DATAERR, "%s record: missing field '%s'", type, fr->name);
			if (!kind_ok(it, fr->kind))
				return ipk_err_set(err, IPK_EXIT_DATAERR, "%s record: field '%s' must be %s", type, fr->name,
						   kind_name(fr->kind));
		}
		break;
	}
	return 0;
}

enum ipk_read_result ipk_reader_next(struct ipk_reader *r, struct ipk_record *rec, struct ipk_err *err)
{
	cJSON_Delete(r->json);
	r->json = NULL;
	for (;;) {
		errno = 0;
		ssize_t n = getline(&r->buf, &r->cap, r->f);
		if (n < 0) {
			if (ferror(r->f)) {
				ipk_err_set(err, IPK_EXIT_IOERR, "cannot read input '%s': %s", r->name,
					    strerror(errno ? errno : EIO));
				clearerr(r->f);
				return IPK_READ_ERROR;
			}
			return IPK_READ_EOF;
		}
		r->lineno++;
		size_t len = (size_t)n;
		while (len > 0 && (r->buf[len - 1] == '\n' || r->buf[len - 1] == '\r'))
			len--;
		r->buf[len] = '\0';
		size_t i = 0;
		while (i < len && (r->buf[i] == ' ' || r->buf[i] == '\t'))
			i++;
		if (i == len)
			continue; /* blank line */
		if (memchr(r->buf, '\0', len)) {
			r->bad++;
			ipk_err_set(err, IPK_EXIT_DATAERR, "input '%s' line %ld: NUL byte in record", r->name, r->lineno);
			return IPK_READ_BAD;
		}
		const char *end = NULL;
		cJSON *j = cJSON_ParseWithLengthOpts(r->buf, len, &end, 0);
		if (!j) {
			r->bad++;
			size_t at = end ? (size_t)(end - r->buf) : 0;
			ipk_err_set(err, IPK_EXIT_DATAERR, "input '%s' line %ld: invalid JSON near column %zu", r->name, r->lineno,
				    at + 1);
			return IPK_READ_BAD;
		}
		/* Anything but whitespace after the object is an error too. */
		while (end && (*end == ' ' || *end == '\t'))
			end++;
		struct ipk_err verr = { 0 };
		if (end && *end) {
			cJSON_Delete(j);
			r->bad++;
			ipk_err_set(err, IPK_EXIT_DATAERR, "input '%s' line %ld: trailing data after the JSON value", r->name,
				    r->lineno);
			return IPK_READ_BAD;
		}
		if (ipk_record_validate(j, &verr) < 0) {
			cJSON_Delete(j);
			r->bad++;
			ipk_err_set(err, IPK_EXIT_DATAERR, "input '%s' line %ld: %s", r->name, r->lineno, verr.msg);
			return IPK_READ_BAD;
		}
		r->json = j;
		rec->json = j;
		rec->type = cJSON_GetObjectItemCaseSensitive(j, "type")->valuestring;
		rec->v = (int)cJSON_GetObjectItemCaseSensitive(j, "v")->valuedouble;
		rec->ts = cJSON_GetObjectItemCaseSensitive(j, "ts")->valuedouble;
		rec->session = ipk_json_str(j, "session", NULL);
		rec->line = r->buf;
		rec->len = len;
		rec->lineno = r->lineno;
		return IPK_READ_RECORD;
	}
}

cJSON *ipk_record_take_json(struct ipk_reader *r, struct ipk_record *rec)
{
	cJSON *j = rec->json;
	if (j == r->json)
		r->json = NULL;
	return j;
}

const char *ipk_reader_name(const struct ipk_reader *r)
{
	return r->name;
}

int ipk_reader_fd(const struct ipk_reader *r)
{
	return fileno(r->f);
}

long ipk_reader_bad(const struct ipk_reader *r)
{
	return r->bad;
}

void ipk_reader_close(struct ipk_reader *r)
{
	if (!r)
		return;
	cJSON_Delete(r->json);
	if (r->owned)
		fclose(r->f);
	free(r->buf);
	free(r->name);
	free(r);
}

cJSON *ipk_record_new(const char *type, double ts)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	if (!cJSON_AddStringToObject(o, "type", type) || !cJSON_AddNumberToObject(o, "v", IPK_RECORD_V) ||
	    !cJSON_AddNumberToObject(o, "ts", ts)) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

void ipk_writer_init(struct ipk_writer *w, FILE *f)
{
	w->f = f;
	w->flush_each = !isatty(fileno(f));
	w->closed = 0;
}

static int write_fail(struct ipk_writer *w, struct ipk_err *err)
{
	int e = errno ? errno : EIO;
	if (e == EPIPE)
		w->closed = 1;
	return ipk_err_set(err, IPK_EXIT_IOERR, "cannot write output: %s", strerror(e));
}

int ipk_write_raw(struct ipk_writer *w, const char *line, size_t len, struct ipk_err *err)
{
	errno = 0;
	if (fwrite(line, 1, len, w->f) != len || putc('\n', w->f) == EOF)
		return write_fail(w, err);
	if (w->flush_each && fflush(w->f) != 0)
		return write_fail(w, err);
	return 0;
}

int ipk_write(struct ipk_writer *w, const cJSON *obj, struct ipk_err *err)
{
	char *s = cJSON_PrintUnformatted(obj);
	if (!s)
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	int rc = ipk_write_raw(w, s, strlen(s), err);
	cJSON_free(s);
	return rc;
}

int ipk_writer_flush(struct ipk_writer *w, struct ipk_err *err)
{
	errno = 0;
	if (fflush(w->f) != 0)
		return write_fail(w, err);
	return 0;
}

int ipk_writer_finish(struct ipk_writer *w, struct ipk_err *err)
{
	errno = 0;
	if (fflush(w->f) != 0 || ferror(w->f))
		return write_fail(w, err);
	return 0;
}

int ipk_writer_closed(const struct ipk_writer *w)
{
	return w->closed;
}

static size_t put_uint(char *buf, unsigned long long u)
{
	char tmp[24];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	for (size_t i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	return n;
}

size_t ipk_json_number(char *buf, double v)
{
	if (!isfinite(v)) {
		memcpy(buf, "null", 4);
		return 4;
	}
	size_t n = 0;
	double a = fabs(v);
	if (a < 9007199254740992.0 && v == floor(v)) {
		if (v < 0)
			buf[n++] = '-';
		return n + put_uint(buf + n, (unsigned long long)a);
	}
	if (a < 1e12) {
		unsigned long long scaled = (unsigned long long)llround(a * 1e6);
		unsigned long long ip = scaled / 1000000ULL, fp = scaled % 1000000ULL;
		if (v < 0 && scaled)
			buf[n++] = '-';
		n += put_uint(buf + n, ip);
		if (fp) {
			char frac[6];
			for (int i = 5; i >= 0; i--) {
				frac[i] = (char)('0' + fp % 10);
				fp /= 10;
			}
			int len = 6;
			while (len > 0 && frac[len - 1] == '0')
				len--;
			buf[n++] = '.';
			memcpy(buf + n, frac, (size_t)len);
			n += (size_t)len;
		}
		return n;
	}
	return (size_t)snprintf(buf, 32, "%.17g", v);
}

size_t ipk_json_string(char *buf, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;
	buf[n++] = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		unsigned char c = *p;
		if (c == '"' || c == '\\') {
			buf[n++] = '\\';
			buf[n++] = (char)c;
		} else if (c < 0x20) {
			buf[n++] = '\\';
			switch (c) {
			case '\n':
				buf[n++] = 'n';
				break;
			case '\t':
				buf[n++] = 't';
				break;
			case '\r':
				buf[n++] = 'r';
				break;
			default:
				buf[n++] = 'u';
				buf[n++] = '0';
				buf[n++] = '0';
				buf[n++] = hex[c >> 4];
				buf[n++] = hex[c & 15];
			}
		} else {
			buf[n++] = (char)c;
		}
	}
	buf[n++] = '"';
	return n;
}

double ipk_json_num(const cJSON *obj, const char *name, double def)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
	return cJSON_IsNumber(it) ? it->valuedouble : def;
}

const char *ipk_json_str(const cJSON *obj, const char *name, const char *def)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
	return cJSON_IsString(it) ? it->valuestring : def;
}
