/* test-balabit.c - the Balabit CSV parser and its defect-repairing reader. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "balabit.h"
#include "check.h"

static int num(const char *s, double *v)
{
	return ipk_balabit_parse_number(s, strlen(s), v);
}

static void test_numbers(void)
{
	double v = -1;
	CHECK("number integer", num("1043", &v) == 0 && v == 1043);
	CHECK("number fraction", num("0.0939999999828", &v) == 0 && v == strtod("0.0939999999828", NULL));
	CHECK("number negative", num("-2.5", &v) == 0 && v == -2.5);
	CHECK("number exponent", num("1.5e3", &v) == 0 && v == 1500);
	CHECK("number leading dot", num(".25", &v) == 0 && v == 0.25);
	CHECK("number long mantissa", num("12345678901234567890.5", &v) == 0 && v == strtod("12345678901234567890.5", NULL));
	const char *bad[] = { "", "-", ".", "abc", "nan", "inf", "1.2.3", "0x10", "1e", "1 ", " 1", "1,2", "--1", "1e999" };
	int rejected = 0;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		rejected += num(bad[i], &v) < 0;
	CHECK("number rejects non-numbers", rejected == (int)(sizeof(bad) / sizeof(bad[0])));
	/* Exactly strtod's value for many decimals like the data set's. */
	uint64_t x = 88172645463325252ULL;
	int same = 1;
	for (int i = 0; i < 200000 && same; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		char s[64];
		int ip = (int)(x % 100000), fd = (int)((x >> 20) % 13);
		unsigned long long fr = (x >> 24) % 10000000000000ULL;
		snprintf(s, sizeof(s), "%d.%0*llu", ip, fd ? fd : 1, fd ? fr % (unsigned long long)pow(10, fd) : 0);
		same = num(s, &v) == 0 && v == strtod(s, NULL);
		if (!same)
			printf("# mismatch on %s\n", s);
	}
	CHECK("number equals strtod on 200000 decimals", same);
}

static void test_rows(void)
{
	struct ipk_balabit_row r;
	const char *row = "0.231999874115,0.0939999999828,NoButton,Move,1024,410";
	CHECK("row parses", ipk_balabit_parse_row(row, strlen(row), &r) == 0);
	CHECK("row fields", r.record_ts == strtod("0.231999874115", NULL) && r.client_ts == strtod("0.0939999999828", NULL) &&
				    r.button == IPK_BB_NOBUTTON && r.state == IPK_BB_MOVE && r.x == 1024 && r.y == 410);
	CHECK("row has position", ipk_balabit_has_position(&r));
	row = "11.3630001545,11.264,Scroll,Down,0,0";
	CHECK("scroll row", ipk_balabit_parse_row(row, strlen(row), &r) == 0 && r.button == IPK_BB_SCROLL && r.state == IPK_BB_DOWN &&
				    !ipk_balabit_has_position(&r));
	row = "1249.85599995,1249.864,NoButton,Move,65535,65535";
	CHECK("off-screen row has no position", ipk_balabit_parse_row(row, strlen(row), &r) == 0 && !ipk_balabit_has_position(&r));
	row = "1,2,XButton,Pressed,3,4";
	CHECK("other button", ipk_balabit_parse_row(row, strlen(row), &r) == 0 && r.button == IPK_BB_OTHER_BUTTON &&
				      r.state == IPK_BB_PRESSED);
	const char *bad[] = { "", "1,2,NoButton,Move,3", "1,2,NoButton,Move,3,4,5", "1,2,,Move,3,4", "1,2,Left,,3,4",
			      "1,x,Left,Pressed,3,4", "1,2,Left,Pressed,3,", "1,2,Left,Pressed,3,4\r", "record timestamp,client timestamp,button,state,x,y" };
	int rejected = 0;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		rejected += ipk_balabit_parse_row(bad[i], strlen(bad[i]), &r) < 0;
	CHECK("row rejects malformed rows", rejected == (int)(sizeof(bad) / sizeof(bad[0])));
	CHECK("header", ipk_balabit_is_header(IPK_BALABIT_HEADER, strlen(IPK_BALABIT_HEADER)));
	CHECK("header with CR and BOM", ipk_balabit_is_header("\xEF\xBB\xBF" IPK_BALABIT_HEADER "\r", strlen(IPK_BALABIT_HEADER) + 4));
	CHECK("not a header", !ipk_balabit_is_header("record timestamp,client timestamp", 33));
}

static char *write_tmp(const char *content, size_t n)
{
	static char path[64];
	snprintf(path, sizeof(path), "/tmp/test-balabit.XXXXXX");
	int fd = mkstemp(path);
	if (fd < 0 || write(fd, content, n) != (ssize_t)n)
		return NULL;
	close(fd);
	return path;
}

static void test_reader(void)
{
	/* CRLF, a blank line, a repeated row, a non-monotone timestamp, an
	 * unparseable row, an absurd forward jump, then one backward, and a
	 * last line without newline. */
	const char csv[] = IPK_BALABIT_HEADER "\r\n"
			   "0.0,1.0,NoButton,Move,0,0\r\n"  /* line 2: t 1 */
			   "0.0,1.5,NoButton,Move,3,4\r\n"  /* 3: t 1.5 */
			   "0.0,1.5,NoButton,Move,3,4\r\n"  /* 4: repeat, dropped */
			   "\r\n"                            /* 5: blank */
			   "0.0,1.2,Left,Pressed,3,4\r\n"   /* 6: clamped to 1.5 */
			   "bad row\r\n"                     /* 7: unparseable */
			   "0.0,100.0,Left,Released,3,4\r\n" /* 8: jump 98.5 > 10: t 11.5 */
			   "0.0,101.0,Scroll,Up,0,0\r\n"    /* 9: t 12.5 */
			   "0.0,50.0,NoButton,Move,6,8\r\n" /* 10: back 51 s > 10: t 12.5 */
			   "0.0,52.0,NoButton,Move,6,8";    /* 11: t 14.5, no newline */
	char *path = write_tmp(csv, sizeof(csv) - 1);
	struct ipk_err err = { 0 };
	struct ipk_balabit_reader *r = ipk_balabit_open(path, "mem.csv", 10, &err);
	CHECK("reader opens", r != NULL);
	if (!r) {
		printf("# %s\n", err.msg);
		return;
	}
	double want_t[] = { 1, 1.5, 1.5, 11.5, 12.5, 12.5, 14.5 };
	long want_line[] = { 2, 3, 6, 8, 9, 10, 11 };
	struct ipk_balabit_event ev;
	int n = 0, times_ok = 1;
	while (ipk_balabit_next(r, &ev, &err) == 1) {
		if (n < 7 && (ev.t != want_t[n] || ev.lineno != want_line[n])) {
			printf("# event %d: t %g line %ld\n", n, ev.t, ev.lineno);
			times_ok = 0;
		}
		n++;
	}
	CHECK("reader event count", n == 7);
	CHECK("reader repaired times and lines", times_ok);
	const struct ipk_balabit_stats *st = ipk_balabit_stats(r);
	CHECK("reader counts", st->repeated == 1 && st->nonmonotone == 1 && st->jumps == 2 && st->unparseable == 1 &&
				       st->first_bad_line == 7 && st->lines == 11 && st->events == 7);
	CHECK_NEAR("reader removed seconds", st->removed_s, 88.5, 1e-9);
	char buf[256];
	long nd = ipk_balabit_describe(st, buf, sizeof(buf));
	CHECK("describe text", nd == 5 && strcmp(buf, "dropped 1 repeated row, clamped 1 non-monotone timestamp, capped 2 absurd "
						      "jumps, skipped 1 unparseable row (first at line 7)") == 0);
	ipk_balabit_close(r);
	unlink(path);

	struct ipk_balabit_stats clean = { 0 };
	CHECK("describe clean", ipk_balabit_describe(&clean, buf, sizeof(buf)) == 0 && buf[0] == '\0');

	/* Errors at open. */
	r = ipk_balabit_open("/nonexistent/x.csv", NULL, 0, &err);
	CHECK("missing file is NOINPUT", !r && err.code == IPK_EXIT_NOINPUT && strstr(err.msg, "/nonexistent/x.csv"));
	path = write_tmp("", 0);
	r = ipk_balabit_open(path, "empty.csv", 0, &err);
	CHECK("empty file is DATAERR", !r && err.code == IPK_EXIT_DATAERR && strstr(err.msg, "empty.csv") && strstr(err.msg, "empty"));
	unlink(path);
	path = write_tmp("a,b,c\n1,2,3\n", 12);
	r = ipk_balabit_open(path, "bad.csv", 0, &err);
	CHECK("bad header is DATAERR", !r && err.code == IPK_EXIT_DATAERR && strstr(err.msg, "not a Balabit CSV file"));
	unlink(path);

	/* An overlong line is skipped and reading goes on; a pre-read prefix. */
	size_t big = 3u << 20;
	char *s = malloc(big + 200);
	size_t at = (size_t)sprintf(s, "0.0,1.0,NoButton,Move,1,1\n");
	memset(s + at, '9', big);
	at += big;
	at += (size_t)sprintf(s + at, "\n0.0,2.0,NoButton,Move,1,2\n");
	path = write_tmp(s, at);
	free(s);
	int fd = open(path, O_RDONLY);
	const char *pre = IPK_BALABIT_HEADER "\n";
	r = ipk_balabit_from_fd(fd, 1, "big.csv", pre, strlen(pre), 0, &err);
	n = 0;
	while (r && ipk_balabit_next(r, &ev, &err) == 1)
		n++;
	CHECK("overlong line skipped", r && n == 2 && ipk_balabit_stats(r)->unparseable == 1 && ipk_balabit_stats(r)->first_bad_line == 3);
	ipk_balabit_close(r);
	unlink(path);
}

int main(void)
{
	test_numbers();
	test_rows();
	test_reader();
	CHECK_DONE();
}
