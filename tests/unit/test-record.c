/* Record layer: reading (long lines, CRLF, blank lines, no final newline,
 * malformed input with line numbers), validation and writing. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include "check.h"
#include "record.h"

static FILE *mem(const char *s, size_t n)
{
	return fmemopen((void *)s, n, "r");
}

static void test_basic(void)
{
	const char in[] = "{\"type\":\"x\",\"v\":1,\"ts\":5.5,\"session\":\"s1\"}\r\n"
			  "\n   \r\n"
			  "{\"type\":\"y\",\"v\":1,\"ts\":6}";
	FILE *f = mem(in, sizeof(in) - 1);
	struct ipk_reader *r = ipk_reader_from(f, "in");
	struct ipk_record rec;
	struct ipk_err err = { 0 };
	CHECK("read first record", ipk_reader_next(r, &rec, &err) == IPK_READ_RECORD);
	CHECK("type", strcmp(rec.type, "x") == 0);
	CHECK("session", rec.session && strcmp(rec.session, "s1") == 0);
	CHECK_NEAR("ts", rec.ts, 5.5, 0);
	CHECK("CR stripped from raw line", rec.len == strlen(rec.line) && rec.line[rec.len - 1] == '}');
	CHECK("line number 1", rec.lineno == 1);
	CHECK("blank lines skipped, last line without newline read",
	      ipk_reader_next(r, &rec, &err) == IPK_READ_RECORD && strcmp(rec.type, "y") == 0 && rec.lineno == 4);
	CHECK("no session field gives NULL", rec.session == NULL);
	CHECK("eof", ipk_reader_next(r, &rec, &err) == IPK_READ_EOF);
	ipk_reader_close(r);
	fclose(f);
}

static void test_bad(void)
{
	const char in[] = "not json\n"
			  "[1,2]\n"
			  "{\"type\":\"x\",\"v\":1}\n"
			  "{\"type\":5,\"v\":1,\"ts\":1}\n"
			  "{\"type\":\"sample\",\"v\":1,\"ts\":1,\"session\":\"a\"}\n"
			  "{\"type\":\"x\",\"v\":1,\"ts\":1} trailing\n"
			  "{\"type\":\"x\",\"v\":1e300,\"ts\":1}\n"
			  "{\"type\":\"ok\",\"v\":1,\"ts\":1}\n";
	FILE *f = mem(in, sizeof(in) - 1);
	struct ipk_reader *r = ipk_reader_from(f, "bad.jsonl");
	struct ipk_record rec;
	struct ipk_err err = { 0 };
	CHECK("invalid JSON is bad", ipk_reader_next(r, &rec, &err) == IPK_READ_BAD);
	CHECK("message names input and line 1", strstr(err.msg, "input 'bad.jsonl' line 1: invalid JSON") != NULL);
	CHECK("bad data code", err.code == IPK_EXIT_DATAERR);
	CHECK("array is bad", ipk_reader_next(r, &rec, &err) == IPK_READ_BAD && strstr(err.msg, "line 2: not a JSON object"));
	CHECK("missing ts named", ipk_reader_next(r, &rec, &err) == IPK_READ_BAD && strstr(err.msg, "line 3: missing field 'ts'"));
	CHECK("wrong type kind named",
	      ipk_reader_next(r, &rec, &err) == IPK_READ_BAD && strstr(err.msg, "line 4: field 'type' must be a string"));
	CHECK("sample without interval",
	      ipk_reader_next(r, &rec, &err) == IPK_READ_BAD && strstr(err.msg, "line 5: sample record: missing field 'interval'"));
	CHECK("trailing garbage", ipk_reader_next(r, &rec, &err) == IPK_READ_BAD && strstr(err.msg, "line 6: trailing data"));
	CHECK("huge version refused", ipk_reader_next(r, &rec, &err) == IPK_READ_BAD && strstr(err.msg, "line 7: field 'v' must be a non-negative integer"));
	CHECK("good record after bad ones", ipk_reader_next(r, &rec, &err) == IPK_READ_RECORD && rec.lineno == 8);
	CHECK("bad count", ipk_reader_bad(r) == 7);
	ipk_reader_close(r);
	fclose(f);
}

static void test_huge(void)
{
	/* A record of 8 MiB on one line. */
	size_t pad = 8u << 20;
	char *in = malloc(pad + 200);
	int n = sprintf(in, "{\"type\":\"big\",\"v\":1,\"ts\":1,\"blob\":\"");
	memset(in + n, 'a', pad);
	n += (int)pad;
	n += sprintf(in + n, "\"}\n{\"type\":\"after\",\"v\":1,\"ts\":2}\n");
	FILE *f = mem(in, (size_t)n);
	struct ipk_reader *r = ipk_reader_from(f, "huge");
	struct ipk_record rec;
	struct ipk_err err = { 0 };
	CHECK("8 MiB line read", ipk_reader_next(r, &rec, &err) == IPK_READ_RECORD && rec.len > pad);
	CHECK("blob intact", strlen(ipk_json_str(rec.json, "blob", "")) == pad);
	CHECK("record after the huge one", ipk_reader_next(r, &rec, &err) == IPK_READ_RECORD && strcmp(rec.type, "after") == 0);
	ipk_reader_close(r);
	fclose(f);
	free(in);
}

static void test_write(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct ipk_writer w;
	ipk_writer_init(&w, f);
	struct ipk_err err = { 0 };
	cJSON *o = ipk_record_new("sample", 12.25);
	cJSON_AddStringToObject(o, "session", "s");
	cJSON_AddNumberToObject(o, "interval", 1);
	CHECK("write", ipk_write(&w, o, &err) == 0);
	CHECK("raw", ipk_write_raw(&w, "{\"type\":\"z\",\"v\":1,\"ts\":1}", 25, &err) == 0);
	CHECK("finish", ipk_writer_finish(&w, &err) == 0);
	fclose(f);
	CHECK("one compact line per record",
	      strcmp(buf, "{\"type\":\"sample\",\"v\":1,\"ts\":12.25,\"session\":\"s\",\"interval\":1}\n"
			  "{\"type\":\"z\",\"v\":1,\"ts\":1}\n") == 0);
	struct ipk_err verr = { 0 };
	CHECK("written record validates", ipk_record_validate(o, &verr) == 0);
	cJSON_Delete(o);
	free(buf);
}

static void test_epipe(void)
{
	int p[2];
	if (pipe(p) != 0) {
		SKIP("write to closed pipe", "pipe failed");
		return;
	}
	close(p[0]);
	signal(SIGPIPE, SIG_IGN);
	FILE *f = fdopen(p[1], "w");
	struct ipk_writer w;
	ipk_writer_init(&w, f);
	struct ipk_err err = { 0 };
	int rc = ipk_write_raw(&w, "{}", 2, &err);
	CHECK("write to closed pipe fails", rc < 0);
	CHECK("closed pipe recognised", ipk_writer_closed(&w));
	fclose(f);
}

int main(void)
{
	test_basic();
	test_bad();
	test_huge();
	test_write();
	test_epipe();
	CHECK_DONE();
}
